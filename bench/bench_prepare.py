"""Benchmark the data path at ML-20M scale: generate the synthetic ML-20M-shaped ratings, write them as an
ML-20M `ratings.csv`, then time `prepare` (read + validate, preprocess, split, save) and a verified load.
Reports wall time per stage and peak RSS; writes bench/results/prepare.json and prepare.md.

    .venv/bin/python bench/bench_prepare.py [--preset ml-20m] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recvae.data import synthetic  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from recvae.data.prepare import prepare  # noqa: E402
from recvae.data.readers import Source  # noqa: E402
from recvae.data.snapshot import Snapshot  # noqa: E402
from recvae.log import setup_logging  # noqa: E402

RESULTS = REPO / "bench" / "results"


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def machine() -> dict:
    return {**machine_info(), "pandas": pd.__version__, "pyarrow": pa.__version__}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="ml-20m", help="synthetic preset (default ml-20m)")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp folder under bench/out)")
    parser.add_argument("--keep", action="store_true", help="keep ratings.csv and the snapshot")
    args = parser.parse_args()
    setup_logging("WARNING")
    os.environ.setdefault("TQDM_DISABLE", "1")

    (REPO / "bench" / "out").mkdir(parents=True, exist_ok=True)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="prepare-", dir=REPO / "bench" / "out"))
    work.mkdir(parents=True, exist_ok=True)
    stages: list[dict] = []

    def record(name: str, seconds: float, note: str = "") -> None:
        stages.append({"stage": name, "seconds": round(seconds, 2), "peak_rss_gib": round(peak_rss_gib(), 2), "note": note})
        print(f"{name:<22} {seconds:8.2f} s   peak RSS {peak_rss_gib():6.2f} GiB  {note}", flush=True)

    t = time.perf_counter()
    df = synthetic.generate(args.preset)
    record("generate", time.perf_counter() - t, f"{len(df):,} ratings")
    n_ratings = len(df)

    csv_path = work / "ratings.csv"
    t = time.perf_counter()
    table = pa.Table.from_pandas(df.rename(columns={"user": "userId", "item": "movieId"}), preserve_index=False)
    del df
    pacsv.write_csv(table, csv_path, write_options=pacsv.WriteOptions(quoting_style="none"))
    del table
    size_mb = csv_path.stat().st_size / 1e6
    record("write ratings.csv", time.perf_counter() - t, f"{size_mb:,.0f} MB (setup, not part of prepare)")

    out = work / "snapshot"
    t = time.perf_counter()
    snap = prepare(Source(format="movielens", path=str(csv_path)), out)
    total = time.perf_counter() - t
    for name, seconds in snap.manifest["timings_s"].items():
        stages.append({"stage": f"prepare: {name}", "seconds": seconds, "peak_rss_gib": None, "note": ""})
        print(f"  prepare: {name:<12} {seconds:8.2f} s", flush=True)
    record("prepare (total)", total, f"snapshot {snap.snapshot_id}")
    summary = snap.summary()
    pre = snap.manifest["preprocess"]
    del snap

    t = time.perf_counter()
    loaded = Snapshot.load(out)
    record("load (verified)", time.perf_counter() - t, "sha256 of every file + snapshot id")
    disk_mb = sum(f.stat().st_size for f in out.iterdir()) / 1e6

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "preset": args.preset,
        "ratings": n_ratings,
        "ratings_csv_mb": round(size_mb, 1),
        "after_preprocess": {k: pre[k] for k in ("after_binarize", "after_count_filter", "users", "items")},
        "snapshot": {"id": loaded.snapshot_id, "users": len(loaded.users), "items": loaded.n_items,
                     "disk_mb": round(disk_mb, 1), "parts": summary},
        "stages": stages,
        "peak_rss_gib": round(peak_rss_gib(), 2),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "prepare.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "prepare.md").write_text(markdown(result))
    print(f"peak RSS {result['peak_rss_gib']} GiB; wrote {RESULTS / 'prepare.json'} and prepare.md")
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"# prepare benchmark: synthetic `{r['preset']}` preset",
        "",
        f"Command: `{r['command']}` ({r['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['ram_gib']} GiB RAM; Python {m['python']}, numpy {m['numpy']}, "
        f"pandas {m['pandas']}, pyarrow {m['pyarrow']}.",
        "",
        f"Input: {r['ratings']:,} ratings written as an ML-20M-style `ratings.csv` ({r['ratings_csv_mb']:,} MB). "
        f"After rating > 3.5 and >= 5 per user: {r['after_preprocess']['after_count_filter']:,} interactions, "
        f"{r['after_preprocess']['users']:,} users, {r['after_preprocess']['items']:,} items.",
        "",
        "| stage | wall time (s) | peak RSS so far (GiB) | note |",
        "|---|---:|---:|---|",
    ]
    for s in r["stages"]:
        rss = "" if s["peak_rss_gib"] is None else f"{s['peak_rss_gib']:.2f}"
        lines.append(f"| {s['stage']} | {s['seconds']:.2f} | {rss} | {s['note']} |")
    snap = r["snapshot"]
    lines += [
        "",
        f"Snapshot `{snap['id']}`: {snap['users']:,} users x {snap['items']:,} items, {snap['disk_mb']:,} MB on disk.",
        "",
        "| part | users | interactions | density |",
        "|---|---:|---:|---:|",
    ]
    for part, c in snap["parts"].items():
        lines.append(f"| {part} | {c['users']:,} | {c['interactions']:,} | {c['density']:.5f} |")
    lines += ["", f"Peak RSS of the whole run: **{r['peak_rss_gib']} GiB**.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

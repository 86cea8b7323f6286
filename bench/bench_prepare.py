"""Benchmark the data path at ML-20M scale: generate the synthetic ML-20M-shaped ratings, write them as an
ML-20M `ratings.csv`, then time `prepare` (read + validate, preprocess, split, save) and a verified load.
Reports wall time per stage and peak RSS; writes bench/results/prepare.json and prepare.md.

    .venv/bin/python bench/bench_prepare.py [--preset ml-20m] [--keep]
    .venv/bin/python bench/bench_prepare.py --smoke          # the 'small' preset, seconds
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import harness
import pyarrow as pa
import pyarrow.csv as pacsv

from recvae.data import synthetic
from recvae.data.prepare import prepare
from recvae.data.readers import Source
from recvae.data.snapshot import Snapshot
from recvae.log import setup_logging

logger = logging.getLogger("bench.prepare")


class Stages:
    """Wall time and peak RSS so far of each stage, as they finish."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, name: str, seconds: float, note: str = "", rss: bool = True) -> None:
        peak = round(harness.peak_rss_gib(), 2) if rss else None
        self.rows.append({"stage": name, "seconds": round(seconds, 2), "peak_rss_gib": peak, "note": note})
        logger.info("%-22s %8.2f s  %s %s", name, seconds, "" if peak is None else f"peak RSS {peak:.2f} GiB", note)


def write_ratings_csv(preset: str, path: Path, stages: Stages) -> int:
    """Generate the preset's ratings and write them as ML-20M's ratings.csv; the number of ratings."""
    with harness.Timer() as t:
        df = synthetic.generate(preset)
    n = len(df)
    stages.add("generate", t.seconds, f"{n:,} ratings")
    with harness.Timer() as t:
        table = pa.Table.from_pandas(df.rename(columns={"user": "userId", "item": "movieId"}), preserve_index=False)
        del df
        pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(quoting_style="none"))
    stages.add("write ratings.csv", t.seconds, f"{path.stat().st_size / 1e6:,.0f} MB (setup, not part of prepare)")
    return n


def run(preset: str, work: Path) -> dict[str, Any]:
    """Every stage on `preset`'s data in `work`; the report's measured part."""
    stages = Stages()
    csv_path = work / "ratings.csv"
    n_ratings = write_ratings_csv(preset, csv_path, stages)
    out = work / "snapshot"
    with harness.Timer() as t:
        snap = prepare(Source(format="movielens", path=str(csv_path)), out)
    for name, seconds in snap.manifest["timings_s"].items():
        stages.add(f"prepare: {name}", seconds, rss=False)
    stages.add("prepare (total)", t.seconds, f"snapshot {snap.snapshot_id}")
    summary, pre = snap.summary(), snap.manifest["preprocess"]
    del snap
    with harness.Timer() as t:
        loaded = Snapshot.load(out)
    stages.add("load (verified)", t.seconds, "sha256 of every file + snapshot id")
    disk_mb = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    return {
        "preset": preset,
        "ratings": n_ratings,
        "ratings_csv_mb": round(csv_path.stat().st_size / 1e6, 1),
        "after_preprocess": {k: pre[k] for k in ("after_binarize", "after_count_filter", "users", "items")},
        "snapshot": {"id": loaded.snapshot_id, "users": len(loaded.users), "items": loaded.n_items,
                     "disk_mb": round(disk_mb, 1), "parts": summary},
        "stages": stages.rows,
        "peak_rss_gib": round(harness.peak_rss_gib(), 2),
    }


def markdown(r: dict[str, Any]) -> str:
    """prepare.md: the stages, then the snapshot's parts."""
    a, snap = r["after_preprocess"], r["snapshot"]
    stages = [[s["stage"], f"{s['seconds']:.2f}", "" if s["peak_rss_gib"] is None else f"{s['peak_rss_gib']:.2f}",
               s["note"]] for s in r["stages"]]
    parts = [[part, f"{c['users']:,}", f"{c['interactions']:,}", f"{c['density']:.5f}"]
             for part, c in snap["parts"].items()]
    lines = [
        *harness.header(f"prepare benchmark: synthetic `{r['preset']}` preset", r),
        f"Input: {r['ratings']:,} ratings written as an ML-20M-style `ratings.csv` ({r['ratings_csv_mb']:,} MB). "
        f"After rating > 3.5 and >= 5 per user: {a['after_count_filter']:,} interactions, "
        f"{a['users']:,} users, {a['items']:,} items.",
        "",
        *harness.markdown_table(["stage", "wall time (s)", "peak RSS so far (GiB)", "note"], stages, "lrrl"),
        "",
        f"Snapshot `{snap['id']}`: {snap['users']:,} users x {snap['items']:,} items, {snap['disk_mb']:,} MB on disk.",
        "",
        *harness.markdown_table(["part", "users", "interactions", "density"], parts, "lrrr"),
        "",
        f"Peak RSS of the whole run: **{r['peak_rss_gib']} GiB**.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Time every stage on the preset's data; write prepare.json and .md."""
    p = harness.parser(__doc__, data_home=False)
    p.add_argument("--preset", default="ml-20m", help="synthetic preset (default ml-20m; --smoke: small)")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temp folder under bench/out)")
    p.add_argument("--keep", action="store_true", help="keep ratings.csv and the snapshot")
    args = harness.parse(p, argv)
    setup_logging("INFO")
    os.environ.setdefault("TQDM_DISABLE", "1")
    harness.SCRATCH.mkdir(parents=True, exist_ok=True)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="prepare-", dir=harness.scratch_dir()))
    work.mkdir(parents=True, exist_ok=True)
    report = {"command": harness.command_line(__file__, argv), "date": harness.now(),
              "machine": harness.machine_info(("numpy", "pandas", "pyarrow"), gpu=False)}
    try:
        report.update(run("small" if args.smoke else args.preset, work))
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    js, md = harness.write_results(args.out, "prepare", report, markdown(report))
    logger.info("peak RSS %s GiB; wrote %s and %s", report["peak_rss_gib"], js, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Memory at scale: synthetic data shaped like ML-20M (its ratings per user, its popularity curve) for 100,000,
300,000 and 1,000,000 users x 50,000 items. At each size, each step runs in its own child process, so each peak
RSS is that step's alone: generate (a partitioned Parquet dataset, one file per 50,000 users), prepare (the
streamed read, preprocessing, split, save), train (the paper's Mult-VAE, 600-200, batch 500, one epoch; bf16
autocast where the CPU has bf16; --max-updates caps it: an epoch over the first users only), score (every user of
the snapshot, top-N, into a SQLite store, published). Writes bench/results/scale.json and scale.md.

    nice .venv/bin/python bench/bench_scale.py                           # 100k, 300k, 1M users
    nice .venv/bin/python bench/bench_scale.py --users 100000 --max-updates 400
    .venv/bin/python bench/bench_scale.py --smoke                        # tiny, seconds
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import harness

logger = logging.getLogger("bench.scale")

SIZES = (100_000, 300_000, 1_000_000)
N_ITEMS = 50_000
CHUNK_USERS = 50_000  # users per generated file: generation memory does not grow with the size
STEPS = ("generate", "prepare", "train", "score")


# ---------------------------------------------------------------------------------------------- child steps


def step_generate(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ratings of cfg["users"] users as Parquet files of CHUNK_USERS users each (part=K/ratings.parquet)."""
    import numpy as np

    from recvae.data import synthetic

    folder, rows, ratings = Path(cfg["folder"]), 0, 0
    chunk = cfg["chunk_users"]
    for k, start in enumerate(range(0, cfg["users"], chunk)):
        n = min(chunk, cfg["users"] - start)
        # one generator per chunk (its own seed): the catalogue's popularity curve is the same, each chunk's
        # ranking of the items differs
        df = synthetic.generate(cfg["preset"], n_users=n, n_items=cfg["items"], seed=k)
        ratings += len(df)
        # the positives only (rating > 3.5, the paper's binarization, done at the source as in an event log of
        # clicks or plays): half the rows, so that the largest size fits this machine
        df = df.loc[df["rating"].to_numpy() > 3.5, ["user", "item"]]
        df["user"] = df["user"].to_numpy(np.int64) + start
        (folder / f"part={k:05d}").mkdir(parents=True)
        df.to_parquet(folder / f"part={k:05d}" / "events.parquet", index=False)
        rows += len(df)
        del df
    disk = sum(f.stat().st_size for f in folder.rglob("*.parquet"))
    return {"ratings": ratings, "events": rows, "disk_mb": round(disk / 1e6, 1)}


def step_prepare(cfg: dict[str, Any]) -> dict[str, Any]:
    """prepare() of the dataset, streamed, into cfg["snapshot"]."""
    from recvae.data.prepare import prepare
    from recvae.data.readers import Source

    src = Source(format="parquet", path=cfg["folder"], rating_col=None, time_col=None, batch_rows=cfg["batch_rows"])
    snap = prepare(src, cfg["snapshot"])
    csr = sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in snap.matrices.values())
    return {"snapshot_id": snap.snapshot_id, "users": len(snap.users), "items": snap.n_items,
            "interactions": int(snap.manifest["interactions"]), "train_users": int(snap.train.shape[0]),
            "density": snap.manifest["density"], "csr_mib": round(csr / 2**20, 1),
            "stages_s": snap.manifest["timings_s"]}


def step_train(cfg: dict[str, Any]) -> dict[str, Any]:
    """One epoch of Mult-VAE over the training users (or the first max_updates x batch of them); saves the model."""
    import torch

    from recvae.config import Config, apply_overrides
    from recvae.data.snapshot import Snapshot
    from recvae.training import fit_model

    snap = Snapshot.load(cfg["snapshot"])
    train = snap.train
    batch = 500
    capped = cfg["max_updates"] is not None and cfg["max_updates"] * batch < train.shape[0]
    if capped:
        train = train[: cfg["max_updates"] * batch]
    config = apply_overrides(Config(), {"train.epochs": 1, "train.device": "cpu", "train.batch_size": batch,
                                        "train.amp": cfg["amp"], "train.num_threads": cfg["threads"]}).validate()
    with harness.Timer() as t:
        result = fit_model(train, None, config, select_on=None)
    result.recommender.items = snap.items
    result.recommender.save(cfg["model"])
    updates = -(-train.shape[0] // batch)
    return {"users_trained": int(train.shape[0]), "updates": updates, "capped": capped, "amp": cfg["amp"],
            "fit_s": round(t.seconds, 1), "users_per_s": round(train.shape[0] / t.seconds, 1),
            "epoch_s": result.history[0].get("epoch_time_s"), "threads": torch.get_num_threads()}


def step_score(cfg: dict[str, Any]) -> dict[str, Any]:
    """Every user of the snapshot scored with the trained model, top-N into a SQLite store, published; with
    cfg["shard_users"], shard 0 of the shards `recvae_score` would map at that users_per_shard (one task's work,
    left in staging: the other shards are other tasks, on other workers)."""
    from recvae.data.snapshot import Snapshot
    from recvae.models.base import load_recommender
    from recvae.pipeline.scoring import plan_shards
    from recvae.serving.recommend import default_chunk_size, recommend_to_store
    from recvae.serving.store import RecommendationStore

    rec = load_recommender(cfg["model"])
    snap = Snapshot.load(cfg["snapshot"])
    chunk = default_chunk_size(rec.n_items)
    per_shard = cfg.get("shard_users")
    n_shards = 1 if per_shard is None else plan_shards(len(snap.users), users_per_shard=per_shard)
    with RecommendationStore(f"sqlite:///{cfg['db']}") as store, harness.Timer() as t:
        summary = recommend_to_store(rec, snap, store, cfg["top_n"], "scale", "bench-multvae", chunk_size=chunk,
                                     shard=0, n_shards=n_shards, publish=n_shards == 1)
    users, rows = int(summary.user_count or 0), int(summary.row_count or 0)
    return {"users_scored": users, "rows": rows, "top_n": cfg["top_n"], "chunk_users": chunk,
            "n_shards": n_shards, "status": summary.status, "score_s": round(t.seconds, 1),
            "users_per_s": round(users / t.seconds, 1), "db_mb": round(Path(cfg["db"]).stat().st_size / 1e6, 1)}


CHILD_STEPS = {"generate": step_generate, "prepare": step_prepare, "train": step_train, "score": step_score}


def child_main(step: str, cfg_json: str) -> int:
    """Run one step here; print its result with this process's time and peak RSS as one JSON line."""
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    cfg = json.loads(cfg_json)
    after_imports = harness.vm_hwm_gib()
    with harness.Timer() as t:
        result = CHILD_STEPS[step](cfg)
    print(json.dumps({"step": step, "wall_s": round(t.seconds, 1), "peak_rss_gib": round(harness.vm_hwm_gib(), 3),
                      "rss_at_start_gib": round(after_imports, 3), **result}))
    return 0


def run_step(step: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One step in a fresh child process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_step", step, json.dumps(cfg)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"step {step} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    logger.info("%s: %.1f s, peak RSS %.2f GiB", step, result["wall_s"], result["peak_rss_gib"])
    return result


# ---------------------------------------------------------------------------------------------- driver


def bf16_cpu() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where autocast pays off."""
    flags = harness.proc_field("/proc/cpuinfo", "flags") or ""
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def run_size(users: int, args: Any, work: Path) -> dict[str, Any]:
    """Every step at one size; the work folder of the size is removed afterwards."""
    d = work / f"users-{users}"
    d.mkdir(parents=True)
    cfg = {"users": users, "items": args.items, "preset": args.preset, "chunk_users": args.chunk_users,
           "folder": str(d / "ratings"), "snapshot": str(d / "snapshot"), "model": str(d / "model"),
           "db": str(d / "recs.db"), "batch_rows": args.batch_rows, "top_n": args.top_n,
           "max_updates": args.max_updates, "amp": "bf16" if bf16_cpu() else "none", "threads": args.threads,
           "shard_users": args.shard_users}
    logger.info("%d users x %d items", users, args.items)
    out: dict[str, Any] = {"users_generated": users, "items": args.items}
    try:
        for step in STEPS:
            out[step] = run_step(step, cfg)
    except RuntimeError as exc:  # a size that fails (e.g. out of memory) is reported, not invented
        out["failed"] = str(exc).splitlines()[0]
        logger.error("%d users: %s", users, exc)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return out


def _bytes_per_interaction(r: dict[str, Any]) -> str:
    """Prepare's peak RSS over the interactions it kept, at the largest size measured."""
    done = [s["prepare"] for s in r["sizes"] if s.get("prepare", {}).get("interactions")]
    if not done:
        return "?"
    big = max(done, key=lambda p: p["interactions"])
    return f"about {big['peak_rss_gib'] * 2**30 / big['interactions']:.0f}"


def _rows_read(gen: dict[str, Any]) -> int:
    """Rows prepare read: the positives written, or (a run before positives-only input) every rating."""
    return int(gen.get("events", gen.get("ratings", 0)))


def _fmt(step: dict[str, Any] | None, key: str = "wall_s", spec: str = ".1f") -> str:
    return "" if not step or step.get(key) is None else format(step[key], spec)


def markdown(r: dict[str, Any]) -> str:
    rows = []
    for s in r["sizes"]:
        p, tr, sc = s.get("prepare") or {}, s.get("train") or {}, s.get("score") or {}
        rows.append([
            f"{s['users_generated']:,}", f"{_rows_read(s.get('generate') or {}):,}",
            f"{p.get('interactions', 0):,}", _fmt(p), _fmt(p, "peak_rss_gib", ".2f"),
            (f"{tr['users_trained']:,} ({tr['updates']:,} updates{', capped' if tr['capped'] else ''})"
             if tr else ""), _fmt(tr), _fmt(tr, "peak_rss_gib", ".2f"), _fmt(tr, "users_per_s", ",.0f"),
            (f"{sc['users_scored']:,}" + (f" (shard 1 of {sc['n_shards']})" if sc.get("n_shards", 1) > 1 else "")
             if sc else ""), _fmt(sc), _fmt(sc, "peak_rss_gib", ".2f"),
            _fmt(sc, "users_per_s", ",.0f"), s.get("failed", ""),
        ])
    lines = [
        *harness.header("Memory at scale: prepare, train and score at 100k-1M users x 50k items", r),
        f"Data: the synthetic `{r['preset']}` preset's generator (ML-20M's ratings per user, about 140 before "
        f"and 70 after rating > 3.5, and its popularity curve) for N users x {r['items']:,} items, written as "
        f"Parquet files of {r['chunk_users']:,} users, positives only (rating > 3.5 applied at the source, "
        "as in a log of clicks or plays; prepare reads them as implicit data and keeps users with >= 5). "
        "This keeps ML-20M's ratings per user, not its matrix "
        "density: at 50,000 items ML-20M's 0.36% density would mean 2.5 times the interactions per user. "
        f"Train: Mult-VAE {r['items']:,}-600-200-600-{r['items']:,}, batch 500, amp {r['amp']}, 2 threads: one "
        "epoch over every training user, or, where the row says 'capped', one epoch over the first users only "
        "(a fixed number of updates, `--max-updates`). Score: top "
        f"{r['top_n']} into SQLite: every user of the snapshot (published), or, where the row says 'shard 1 of "
        "n', the users of one shard as one `recvae_score` task scores them at users_per_shard=50,000 (every n-th "
        "user; the other shards are other tasks, on other workers; left in staging). Each step is a fresh "
        "process: its peak RSS (VmHWM) is its own; times include the step's imports.",
        "",
        *harness.markdown_table(
            ["users", "rows read", "interactions kept", "prepare (s)", "prepare peak (GiB)", "trained on",
             "train (s)", "train peak (GiB)", "train users/s", "scored", "score (s)", "score peak (GiB)",
             "score users/s", "failed"],
            rows, "rrrrrlrrrrrrrl"),
        "",
        "## What grows with the users, and the limits",
        "",
        "- No users x items dense array is made anywhere: the snapshot parts are CSR, training and scoring take "
        "batches of users (500 to train; scoring chunks sized to a fixed budget of items x users scores), and "
        "the store is written chunk by chunk.",
        "- What does grow with the users: prepare holds every interaction (the streamed read's compact arrays "
        "are 24 bytes each; the DataFrame, the duplicate keys and the split's index arrays add the rest: "
        f"{_bytes_per_interaction(r)} bytes per interaction at peak here), so its peak grows with the "
        "interactions; training and scoring load the snapshot, CSR histories of every user (8 bytes per "
        "interaction, twice while scoring: the parts and their stacked history), and the id maps. The rest of "
        "their memory (model, optimizer, one batch of users, one chunk of scores) is flat in users. A scoring "
        "shard loads every user's history though it scores 1/n of them: loading only its rows would make it "
        "flat too (not done).",
        f"- The decoder's items x width weight: {r['items']:,} x 600 floats = "
        f"{r['items'] * 600 * 4 / 2**20:,.0f} MiB, times 4 with Adam's two moments and the gradient; it grows "
        "with the catalogue, not the users. Beyond a few million items, shard the output layer or use a "
        "sampled softmax (not in this package).",
        f"- The softmax over all items per user: a batch of 500 users makes 500 x {r['items']:,} logits "
        f"({500 * r['items'] * 4 / 2**20:,.0f} MiB in float32) several times over in forward and backward: "
        "lower train.batch_size if that is too much, it does not grow with the users.",
        "- The scoring matmul: every user is scored against every item (users x 600 x items per chunk), so "
        "scoring time grows linearly with users x items; memory is one chunk of scores. Beyond one machine, "
        "spread the shards: `recvae_score`'s users_per_shard maps one Airflow task per shard across Celery "
        "workers (docker/README.md), or use a GPU (bench/gpu_check.sh).",
        "- Beyond what prepare holds in RAM (about 200 million interactions on this 23 GiB machine at the rate "
        "above): filter or aggregate in the database first (a SQL source streams the query's result), or "
        "prepare per time window.",
    ]
    if r.get("notes"):
        lines += ["", *r["notes"]]
    return "\n".join(lines) + "\n"


def merge(out: Path, runs: list[Path]) -> int:
    """scale.json and scale.md in `out` from the sizes of several runs (each run's command is kept)."""
    reports = [json.loads(p.read_text()) for p in runs]
    merged = {**reports[0], "command": " ; ".join(r["command"] for r in reports),
              "sizes": sorted((s for r in reports for s in r["sizes"]), key=lambda s: s["users_generated"]),
              "notes": [n for r in reports for n in r.get("notes", [])]}
    harness.write_results(out, "scale", merged, markdown(merged))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "--_step":  # internal: one step in a fresh process
        return child_main(argv[1], argv[2])
    if argv and argv[0] == "--merge":  # --merge OUT RUN.json ...: one page from several runs' sizes
        return merge(Path(argv[1]), [Path(a) for a in argv[2:]])
    p = harness.parser(__doc__, data_home=False)
    p.add_argument("--users", type=int, nargs="+", default=list(SIZES), help="user counts (default 100k 300k 1M)")
    p.add_argument("--items", type=int, default=N_ITEMS)
    p.add_argument("--max-updates", type=int, default=None, help="cap training at this many batches of 500 users")
    p.add_argument("--top-n", type=int, default=20, help="recommendations per user written to the store")
    p.add_argument("--shard-users", type=int, default=None,
                   help="score one shard of this many users (one recvae_score task's work), not every user")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--batch-rows", type=int, default=1_000_000, help="rows per record batch of the streamed read")
    p.add_argument("--note", action="append", default=[], help="a line for the results page (e.g. what was left out)")
    args = harness.parse(p, argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.preset, args.chunk_users = "ml-20m", CHUNK_USERS
    if args.smoke:
        # two sizes: the page compares them
        args.users, args.items, args.preset, args.chunk_users = [300, 600], 500, "small", 500
        args.max_updates, args.batch_rows = args.max_updates or 1, 5_000
    work = Path(tempfile.mkdtemp(prefix="scale-", dir=harness.scratch_dir()))
    report: dict[str, Any] = {
        "command": harness.command_line(__file__, argv), "date": harness.now(),
        "machine": harness.machine_info(("numpy", "pandas", "pyarrow", "torch"), gpu=False),
        "preset": args.preset, "items": args.items, "chunk_users": args.chunk_users, "top_n": args.top_n,
        "max_updates": args.max_updates, "amp": "bf16" if bf16_cpu() else "none", "notes": args.note,
        "shard_users": args.shard_users,
    }
    report["sizes"] = []
    try:
        for u in args.users:  # the page is rewritten after each size: a long run's finished sizes are kept
            report["sizes"].append(run_size(u, args, work))
            js, md = harness.write_results(args.out, "scale", report, markdown(report))
            logger.info("wrote %s and %s", js, md)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not any("failed" in s for s in report["sizes"]) else 1


if __name__ == "__main__":
    sys.exit(main())

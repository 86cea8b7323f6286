"""Benchmark the batch top-N job (recvae.serving.recommend): bounded memory at 1M users x 50k items, and throughput on
ML-20M-shaped data (scoring alone, SQLite, PostgreSQL, and implicit's ALS `recommend` on the same users).
Writes bench/results/recommend.json and recommend.md (a part run again replaces only its own section).

    .venv/bin/python bench/bench_recommend.py                      # default: all three parts (~14 min)
    .venv/bin/python bench/bench_recommend.py --parts memory --mem-score all --mem-users 1000000 \\
        --mem-hidden 64 --mem-latent 32 --mem-top-n 10           # every one of 1M users scored (long)
    .venv/bin/python bench/bench_recommend.py --smoke             # every part on tiny data, SQLite only, seconds

Parts (--parts, comma-separated; one module each under bench/recommend/):
  memory      one fresh process per user count (--mem-users): loads that many users' histories (a CSR built
              without any dense users x items array), runs recommend_to_store into SQLite, and reports peak RSS
              (/proc VmHWM and getrusage ru_maxrss, psutil samples over time) and wall time. --mem-score subset
              (default) scores a fixed number of users spread over all of them (shard 0 of n of the sharded job:
              the whole input is held, only 1/n of it scored); --mem-score all scores and publishes every user.
  throughput  synthetic ML-20M shape (about 136k users x 20k items): iter_topn alone (users/s), the store's write
              + publish of those top-N lists (rows/s) in SQLite and PostgreSQL, recommend_to_store end to end on
              a subset, and implicit ALS `recommend(userids, user_items, N, filter_already_liked_items=True)`.
  breakdown   cost of each step of scoring one chunk (model forward, copies, NaN check, top-k), per user.

Heavy work runs in child processes (this script with --_worker), so each one's peak RSS is its own.
"""

from __future__ import annotations

import os

# Before numpy is imported: implicit wants single-threaded BLAS (it parallelises itself), and child processes
# inherit the setting.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import harness  # noqa: E402
from recommend.breakdown import md_breakdown, part_breakdown, worker_breakdown  # noqa: E402
from recommend.memory import md_memory, part_memory, worker_generate, worker_memory  # noqa: E402
from recommend.throughput import ML20M, md_throughput, part_throughput, worker_throughput  # noqa: E402

logger = logging.getLogger("bench.recommend")

DEFAULT_WORK = harness.SCRATCH / "recommend"
PARTS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "memory": part_memory, "throughput": part_throughput, "breakdown": part_breakdown,
}
WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "generate": worker_generate, "memory": worker_memory, "throughput": worker_throughput,
    "breakdown": worker_breakdown,
}
# --smoke: every part on tiny data (one process each), SQLite only
SMOKE = {"mem_users": "1000", "mem_items": 300, "mem_mean": 25.0, "mem_hidden": 32, "mem_latent": 16,
         "mem_top_n": 10, "mem_chunk_sizes": "250", "mem_subset": 500, "tp_users": 0, "tp_top_n": 10,
         "tp_chunk_size": 250, "tp_e2e_users": 200, "tp_dbs": "sqlite", "tp_hidden": 32, "tp_latent": 16,
         "als_factors": "8", "als_iterations": 1, "als_recalc_users": 100,
         "tp_data": {"preset": "small", "overrides": {"n_users": 1000, "n_items": 300}},
         "bd_config": {"items": [300], "chunk_size": 100, "hidden": 32, "latent": 16, "top_n": 10, "reps": 1}}


def machine() -> dict[str, Any]:
    """The machine and library versions, read from package metadata (the parent process stays small)."""
    return {**harness.machine_info(("torch", "numpy", "scipy", "implicit", "psycopg", "psutil"), gpu=False),
            "sqlite": sqlite3.sqlite_version, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}


def summary(res: dict[str, Any]) -> list[str]:
    """The headline figures of whatever parts are present."""
    out = []
    for key in ("memory_all", "memory_subset"):
        r = res["parts"].get(key)
        if not r:
            continue
        most = max(y["users_held"] for y in r["runs"])
        for x in (x for x in r["runs"] if x["users_held"] == most):  # one line per chunk size tried at the most users
            what = "every user scored" if key == "memory_all" else f"{x['users_scored']:,} of them scored"
            out.append(
                f"- {x['users_held']:,} users x {r['data']['history']['items']:,} items held ({what}), model "
                f"`{x['model']}`, top-{x['top_n']}, chunks of {x['chunk_size']}: peak RSS "
                f"**{x['peak_rss_gib']:.2f} GiB**, {x['users_per_s']:,.0f} users/s into SQLite "
                f"({x['wall_s']:,.0f} s).")
    t = res["parts"].get("throughput")
    if t:
        s = t["scoring_alone"]
        line = f"- ML-20M shape ({s['users']:,} users): Mult-VAE scoring alone **{s['users_per_s']:,.0f} users/s**"
        for name, r in t["stores"].items():
            if "write_publish" in r:
                line += (f"; {name} store alone **{r['write_publish']['rows_per_s']:,} rows/s**, end to end "
                         f"{r['end_to_end']['users_per_s']:,.0f} users/s")
        for a in t["als"]:
            line += f"; implicit ALS {a['factors']} factors `recommend` **{a['users_per_s']:,.0f} users/s**"
        out.append(line + ".")
    return ["## Summary", "", *out, ""] if out else []


def markdown(res: dict[str, Any]) -> str:
    """recommend.md: the machine, the summary, then each part's section."""
    m = res.get("machine", {})
    threads = next((p["model"]["torch_threads"] for p in res["parts"].values() if "model" in p), None)
    threads = threads or next((p["runs"][0]["torch_threads"] for p in res["parts"].values() if "runs" in p), None)
    lines = [
        "# Batch top-N scoring (recommend job): memory and throughput",
        "",
        f"Machine: {harness.describe(m)}; torch {threads} threads, OPENBLAS_NUM_THREADS="
        f"{m.get('OPENBLAS_NUM_THREADS')}. CPU only. The machine was shared with other jobs "
        "while this ran: the load average is given with each part, and timings are lower bounds on what an idle "
        "machine gives.",
        "",
        "Each measurement runs in a fresh child process. Peak RSS is that process's VmHWM (/proc/self/status: the "
        "high-water mark of its own address space); `resource.getrusage(RUSAGE_SELF).ru_maxrss` is shown too, but "
        "on Linux it starts from the spawning parent's peak (the parent here stays small, so the two agree "
        "whenever the child's peak is the larger). psutil samples RSS every 0.2 s in a thread.",
        "",
    ]
    lines += summary(res)
    tp = res["parts"].get("throughput", {}).get("stores", {}).get("sqlite", {})
    sqlite_rate = tp.get("write_publish", {}).get("rows_per_s")
    for key in ("memory_all", "memory_subset"):
        if key in res["parts"]:
            lines += md_memory(key, res["parts"][key], sqlite_rate)
    if "throughput" in res["parts"]:
        lines += md_throughput(res["parts"]["throughput"])
    if "breakdown" in res["parts"]:
        lines += md_breakdown(res["parts"]["breakdown"])
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, with each part's settings (the --smoke ones with --smoke)."""
    p = harness.parser(__doc__, data_home=False)
    p.add_argument("--results-dir", dest="out", type=Path, help="the same as --out (where recommend.json/.md go)")
    p.add_argument("--parts", default="memory,throughput,breakdown", help="memory,throughput,breakdown")
    p.add_argument("--workdir", default=None,
                   help="scratch folder (cached data, DB files; default bench/out/recommend)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mem-users", default="100000,300000,1000000", help="user counts held, one process each")
    p.add_argument("--mem-items", type=int, default=50_000)
    p.add_argument("--mem-mean", type=float, default=35.0, help="mean draws per user (min 20) in the generator")
    p.add_argument("--mem-hidden", type=int, default=600)
    p.add_argument("--mem-latent", type=int, default=200)
    p.add_argument("--mem-top-n", type=int, default=100)
    p.add_argument("--mem-chunk-sizes", default="1000,2000",
                   help="first: for every user count; others: one more run each at the largest user count")
    p.add_argument("--mem-score", choices=("subset", "all"), default="subset")
    p.add_argument("--mem-subset", type=int, default=10_000, help="users scored per run with --mem-score subset")
    p.add_argument("--tp-users", type=int, default=0, help="first N users of the ML-20M shape (0: all)")
    p.add_argument("--tp-top-n", type=int, default=100)
    p.add_argument("--tp-chunk-size", type=int, default=1000)
    p.add_argument("--tp-e2e-users", type=int, default=10_000, help="users for recommend_to_store end to end (0: all)")
    p.add_argument("--tp-dbs", default="sqlite,postgresql")
    p.add_argument("--als-factors", default="200,600")
    p.add_argument("--als-iterations", type=int, default=1)
    p.add_argument("--als-recalc-users", type=int, default=10_000)
    p.add_argument("--render-only", action="store_true", help="rewrite recommend.md from recommend.json; run nothing")
    p.add_argument("--_worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--_config", help=argparse.SUPPRESS)
    p.add_argument("--_out", help=argparse.SUPPRESS)
    args = harness.parse(p, argv)
    args.tp_hidden, args.tp_latent, args.tp_data = 600, 200, ML20M
    args.bd_config = {"items": [20_108, args.mem_items], "chunk_size": 1000, "hidden": 600, "latent": 200,
                      "top_n": 100, "reps": 3}
    if args.smoke:
        vars(args).update(SMOKE)
    return args


def run_parts(args: argparse.Namespace, parts: list[str], work: Path, res: dict[str, Any]) -> None:
    """Run each part, merging it into `res` and rewriting recommend.json/.md after each (a part run again
    replaces only its own section)."""
    command = harness.command_line(__file__, sys.argv[1:])
    res["command"] = command
    for part in parts:
        stamp = {"command": command, "date": harness.now(), "loadavg_start": harness.load_average(),
                 "machine_cpus": res["machine"]["cpus"], "machine_implicit": res["machine"]["implicit"],
                 "top_n": args.tp_top_n}
        with harness.Timer() as t:
            out = PARTS[part](args, work)
        out = {**out, **{k: v for k, v in stamp.items() if k not in out or k == "loadavg_start"},
               "loadavg_start": stamp["loadavg_start"], "part_wall_s": round(t.seconds, 1)}
        res["parts"][f"memory_{args.mem_score}" if part == "memory" else part] = out
        logger.info("%s: %.0f s", part, out["part_wall_s"])
        harness.write_results(args.out, "recommend", res, markdown(res))


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for (or one worker, in a child process), or re-render recommend.md."""
    args = parse_args(argv)
    from recvae.log import setup_logging

    setup_logging("INFO")
    if args._worker:
        result = WORKERS[args._worker](json.loads(args._config))
        Path(args._out).write_text(json.dumps(result))
        return 0
    res_file = args.out / "recommend.json"
    if args.render_only:
        harness.write_text(args.out / "recommend.md", markdown(json.loads(res_file.read_text())))
        return 0
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown part(s) {sorted(unknown)}; parts: {', '.join(PARTS)}")
    res: dict[str, Any] = json.loads(res_file.read_text()) if res_file.exists() else {"parts": {}}
    res["machine"] = machine()
    work = Path(args.workdir) if args.workdir else (
        Path(tempfile.mkdtemp(prefix="recommend-", dir=harness.scratch_dir())) if args.smoke else DEFAULT_WORK)
    work.mkdir(parents=True, exist_ok=True)
    try:
        with harness.Timer() as t:
            run_parts(args, parts, work, res)
    finally:
        for f in work.glob("*.db*"):
            f.unlink()
        if args.smoke and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    logger.info("total %.0f s; wrote %s and recommend.md", t.seconds, res_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())

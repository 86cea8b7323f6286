"""GPU check: training users/s at the ML-20M shape (fp32 and bf16, three batch sizes) and scoring users/s.

Usage: bench/gpu_check.sh [--quick] (runs the CUDA tests first, then this script), or
.venv/bin/python bench/gpu_check.py [--quick] [--tests-xml cuda_tests.xml] [--smoke]
Writes bench/results/gpu.json and gpu.md. Training: the paper's Mult-VAE (I-600-200-600-I) on synthetic data of
ML-20M's shape (recvae.data.synthetic's ml-20m preset, 10,000 validation and 10,000 test users held out), the
whole training matrix on the GPU, each batch gathered there (recvae.models.sparse.SparseRows) and updated by the
library's own step (recvae.training.updates.UpdateStep): a fixed number of updates after a few warm-up ones,
timed between torch.cuda.synchronize calls, capped in seconds so a slow configuration cannot eat the budget.
Scoring: 1M users (the training rows repeated) through recvae.serving.topn.iter_topn, top-100 unseen items, the
batch job's path. Without a CUDA device only --smoke runs: tiny shapes on the CPU, figures that mean nothing.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import harness
import scipy.sparse as sp
import torch

from recvae.config import Config, apply_overrides
from recvae.log import setup_logging
from recvae.models.amp import amp_dtype_for
from recvae.models.neural import MultVAERecommender, build_module
from recvae.models.sparse import SparseRows
from recvae.serving.topn import iter_topn
from recvae.training.updates import UpdateStep

logger = logging.getLogger("bench.gpu_check")

# One H100, a lean plain-PyTorch Mult-VAE loop (../shared/REFERENCE.md): users/s by (batch, precision)
REFERENCE_USERS_S = {(500, "fp32"): 122_000, (500, "bf16"): 97_000, (4096, "fp32"): 261_000,
                     (4096, "bf16"): 523_000, (24576, "fp32"): 299_000, (24576, "bf16"): 716_000}
BATCHES = (500, 4096, 24576)
PRECISIONS = ("fp32", "bf16")
# name -> (warm-up updates, timed updates, seconds cap per configuration, users scored, seconds cap on scoring)
PLANS = {"full": (5, 30, 25.0, 1_000_000, 90.0), "quick": (3, 15, 10.0, 200_000, 30.0),
         "smoke": (1, 3, 10.0, 4_000, 10.0)}
SMOKE_MODEL = {"model.hidden_dims": [32], "model.latent_dim": 16}
TOP_N = 100


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_config(device: torch.device, batch: int, precision: str, smoke: bool) -> Config:
    """The paper's Mult-VAE settings at `batch` and `precision` on `device` (a tiny network with --smoke)."""
    overrides = {"train.device": device.type, "train.batch_size": batch,
                 "train.amp": "none" if precision == "fp32" else precision, "train.eval_batch_size": 10_000}
    return apply_overrides(Config(), {**overrides, **(SMOKE_MODEL if smoke else {})}).validate()


def time_training(train: sp.csr_matrix, device: torch.device, batch: int, precision: str, plan: tuple,
                  smoke: bool) -> dict[str, Any]:
    """Users/s of `plan`'s timed updates (after its warm-up) at `batch` users an update, as recvae trains."""
    warmup, updates, cap = plan[0], plan[1], plan[2]
    config = make_config(device, batch, precision, smoke)
    torch.manual_seed(0)
    module = build_module(train.shape[1], config.model).to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.train.lr, fused=True)
    amp = amp_dtype_for(config.train.amp, device)
    step = UpdateStep.build(module, optimizer, None, device, amp, config.train)
    rows = SparseRows(train, device)
    gen = torch.Generator(device=device).manual_seed(0)
    module.train()
    for _ in range(warmup):
        step(rows.batch(torch.randint(train.shape[0], (batch,), device=device, generator=gen)), 0.2, 1e-3)
    sync(device)
    done, t0 = 0, time.perf_counter()
    loss = torch.zeros((), device=device)
    while done < updates and (done == 0 or time.perf_counter() - t0 < cap):
        loss = step(rows.batch(torch.randint(train.shape[0], (batch,), device=device, generator=gen)), 0.2, 1e-3).loss
        done += 1
    sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / harness.GIB if device.type == "cuda" else None
    del rows, module, optimizer, step
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return {"batch": batch, "precision": precision, "updates": done, "seconds": seconds,
            "users_per_s": done * batch / seconds, "final_loss": float(loss), "peak_gpu_gib": peak,
            "capped": done < updates}


def time_scoring(train: sp.csr_matrix, device: torch.device, n_users: int, cap: float, smoke: bool,
                 precision: str) -> dict[str, Any]:
    """Users/s of top-100 unseen items for `n_users` users (the training rows repeated), chunks of 10,000 users
    scored on `device` by an untrained Mult-VAE (scoring time does not depend on the weights)."""
    config = make_config(device, 500, precision, smoke)
    torch.manual_seed(0)
    rec = MultVAERecommender(train.shape[1], config.model, config.train,
                             build_module(train.shape[1], config.model).to(device))
    history = sp.vstack([train] * math.ceil(n_users / train.shape[0]), format="csr")[:n_users]
    chunk = min(10_000, n_users)
    list(iter_topn(rec, history[:chunk], TOP_N, chunk_size=chunk, device=device))  # warm-up
    sync(device)
    done, t0 = 0, time.perf_counter()
    for part in iter_topn(rec, history, TOP_N, chunk_size=chunk, device=device):
        done += len(part.rows)
        if time.perf_counter() - t0 > cap:
            break
    sync(device)
    seconds = time.perf_counter() - t0
    return {"users": done, "requested_users": n_users, "precision": precision, "chunk_size": chunk, "top_n": TOP_N,
            "seconds": seconds, "users_per_s": done / seconds, "capped": done < n_users}


def read_tests(path: Path | None) -> dict[str, Any] | None:
    """Counts of a pytest --junitxml file (tests, failures, errors, skipped), or None without one."""
    if path is None or not path.exists():
        return None
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return None
    counts: dict[str, Any] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                        if c.find("failure") is not None or c.find("error") is not None]
    return counts


def load_data(smoke: bool) -> tuple[sp.csr_matrix, str]:
    """The ML-20M-shaped training matrix (a tiny synthetic one with --smoke) and a line describing it."""
    if smoke:
        snap = harness.tiny_snapshot()
        return snap.train, "recvae.data.synthetic small preset (600 x 300), tiny shapes for the CPU fallback"
    snap, desc = harness.synthetic_snapshot(98765, 10_000)
    return snap.train, desc


def render(report: dict[str, Any]) -> str:
    """gpu.md: the CUDA tests, the training table beside the reference, the scoring line."""
    lines = [*harness.header("GPU check (Mult-VAE training and scoring on CUDA)", report)]
    if report["device"] != "cuda":
        lines += ["**No CUDA device was found: this is the CPU fallback (tiny shapes); its figures mean nothing.**",
                  ""]
    tests = report.get("cuda_tests")
    if tests is None:
        lines += ["CUDA tests (`pytest -m cuda tests/cuda`): not run.", ""]
    else:
        lines += [f"CUDA tests (`pytest -m cuda tests/cuda`): {tests['passed']} passed, {tests['failures']} failed, "
                  f"{tests['errors']} errors, {tests['skipped']} skipped.", ""]
        lines += [f"- failed: `{name}`" for name in tests["failed"]] + ([""] if tests["failed"] else [])
    t = report["training"]
    lines += [f"Data: {report['data']} ({t['users']:,} users x {t['items']:,} items, {t['nnz']:,} interactions). "
              f"{t['model']}; {t['warmup']} warm-up updates, then {t['updates']} timed ones (at most "
              f"{t['cap_s']:.0f} s each configuration).", ""]
    rows = [[r["batch"], r["precision"], r["updates"], f"{r['seconds']:.2f}", f"{r['users_per_s']:,.0f}",
             f"{REFERENCE_USERS_S[(r['batch'], r['precision'])]:,}",
             f"{r['users_per_s'] / REFERENCE_USERS_S[(r['batch'], r['precision'])]:.2f}",
             "" if r["peak_gpu_gib"] is None else f"{r['peak_gpu_gib']:.1f}"] for r in t["runs"]]
    lines += harness.markdown_table(["batch", "precision", "updates", "seconds", "users/s (ours)",
                                     "users/s (reference, lean loop, one H100)", "ours / reference",
                                     "peak GPU GiB"], rows, "rrrrrrrr")
    s = report["scoring"]
    lines += ["", f"Scoring: {s['users']:,} users (of {s['requested_users']:,}; the training rows repeated), top-"
              f"{s['top_n']} unseen items through recvae.serving.topn.iter_topn, {s['chunk_size']:,} users a chunk, "
              f"{s['precision']}: {s['seconds']:.1f} s, **{s['users_per_s']:,.0f} users/s**"
              + (" (stopped at the time cap)" if s["capped"] else "") + ".", "",
              f"Total {report['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def run(args: Any, device: torch.device) -> dict[str, Any]:
    """Every measurement of the plan; the report."""
    plan = PLANS["smoke" if args.smoke else "quick" if args.quick else "full"]
    with harness.Timer() as t:
        train, desc = load_data(args.smoke)
        logger.info("data: %s, %d x %d, %d interactions", desc, *train.shape, train.nnz)
        runs = []
        for precision in PRECISIONS:
            for batch in BATCHES:
                runs.append(time_training(train, device, batch, precision, plan, args.smoke))
                logger.info("train %s batch %d: %.0f users/s", precision, batch, runs[-1]["users_per_s"])
        scoring = time_scoring(train, device, plan[3], plan[4], args.smoke, "bf16" if device.type == "cuda" else "none")
        logger.info("scoring: %.0f users/s", scoring["users_per_s"])
    script = harness.command_line(__file__, args.argv)
    return {"command": args.command or script, "script_command": script, "date": harness.now(),
            "machine": harness.machine_info(), "device": device.type, "plan": "smoke" if args.smoke else
            "quick" if args.quick else "full", "data": desc, "cuda_tests": read_tests(args.tests_xml),
            "training": {"users": train.shape[0], "items": train.shape[1], "nnz": train.nnz,
                         "model": "Mult-VAE " + ("32-16-32 (smoke)" if args.smoke else "600-200-600") + ", Adam",
                         "warmup": plan[0], "updates": plan[1], "cap_s": plan[2], "runs": runs},
            "scoring": scoring, "reference_users_per_s": {f"{b} {p}": v for (b, p), v in REFERENCE_USERS_S.items()},
            "seconds": t.seconds}


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    p = harness.parser(__doc__, data_home=False, quick="fewer updates and 200,000 scored users (about a third of "
                                                       "the time)")
    p.add_argument("--command", default=None, help="the command to report (gpu_check.sh passes its own)")
    p.add_argument("--tests-xml", type=Path, default=None, help="pytest --junitxml file of the CUDA tests to report")
    args = harness.parse(p, argv)
    args.argv = argv
    if not torch.cuda.is_available() and not args.smoke:
        print("gpu_check: error: no CUDA device found (torch.cuda.is_available() is False); --smoke runs the CPU "
              "fallback", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    report = run(args, device)
    json_path, md_path = harness.write_results(args.out, "gpu", report, render(report))
    print(render(report))
    print(f"wrote {json_path} and {md_path}")
    tests = report["cuda_tests"]
    return 1 if tests and (tests["failures"] or tests["errors"]) else 0


if __name__ == "__main__":
    sys.exit(main())

"""One-command reproduction of the Mult-VAE issue's figures: data, models, baselines, table beside the published ones.

Usage (from the repository root):
  RECVAE_DATA_HOME=../shared/data .venv/bin/python bench/reproduce.py --dataset ml-1m-pro-sg [--reuse]
  RECVAE_DATA_HOME=../shared/data .venv/bin/python bench/reproduce.py --dataset gowalla [--budget-min 15]
  .venv/bin/python bench/reproduce.py --dataset ml-20m          # synthetic ML-20M shape when ML-20M is absent
Common options: --epochs N, --device auto|cpu|cuda, --threads N, --quick (a short run), --smoke (tiny synthetic
data, seconds), --set SECTION.FIELD=VALUE. Writes bench/results/reproduce_<dataset>[_quick].json and .md.

Protocols (one module each under bench/reproduction/):
- ml1m: Liang et al.'s strong generalization on ML-1M pro_sg; Mult-VAE / Mult-DAE with paper settings
  (bench/parity_ml1m.py) and popularity / ALS / EASE (bench/baselines_ml1m.py grids), every choice made on
  validation users only; test NDCG@100, Recall@20, Recall@50 with standard errors beside /work/shared/REFERENCE.md.
- gowalla: LightGCN's split and metrics (Recall@20 over |test|, NDCG@20, full ranking with training items removed,
  epoch chosen on test as LightGCN does); Mult-VAE with the β schedule REFERENCE.md found for sparse data and the
  learning rate cosine-decayed over 50 epochs.
- ml20m: prepare + training + evaluation, each stage in its own process for its time and peak memory; without
  the ML-20M files the same path runs on the generated 'synthetic-ml-20m' data.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

import harness
import torch
from reproduction.gowalla import run_gowalla
from reproduction.ml1m import run_ml1m
from reproduction.ml20m import run_ml20m
from reproduction.report import hardware, to_markdown

from recvae.config import TrainConfig
from recvae.log import setup_logging
from recvae.training import resolve_device

logger = logging.getLogger("bench.reproduce")

PROTOCOLS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "ml-1m-pro-sg": run_ml1m,
    "gowalla": run_gowalla,
    "ml-20m": run_ml20m,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options of every protocol."""
    p = harness.parser(__doc__, quick="a short run: few epochs, small grids, fewer users")
    p.add_argument("--dataset", required=True, choices=list(PROTOCOLS))
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default: 200; 50 on Gowalla; 1 on synthetic ML-20M; --quick: 5 / 1)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--reuse", action="store_true",
                   help="ml-1m-pro-sg: take parity_ml1m.json / baselines_ml1m.json when they are fresh results of "
                        "this code")
    p.add_argument("--models", default="vae_scaled,vae,dae,recvae",
                   help="ml-1m-pro-sg: bench/parity_ml1m.py kinds to train")
    p.add_argument("--budget-min", type=float, default=None,
                   help="gowalla: stop Mult-VAE before an epoch that would end after this many minutes")
    p.add_argument("--eval-from", type=int, default=1,
                   help="gowalla: score the test users after every epoch from this one on (earlier ones are not "
                        "candidates)")
    p.add_argument("--ease-lam", type=float, default=500.0, help="gowalla: EASE λ (when its memory fits)")
    # one intra-op thread: on the shared 2-core machine two threads ran slower
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override")
    return harness.parse(p, argv)


def main(argv: list[str] | None = None) -> int:
    """Run one protocol; write reproduce_<dataset>[_quick].json and .md."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    setup_logging("INFO")
    if args.threads:
        torch.set_num_threads(args.threads)
    started, load_start = harness.now(), harness.load_average()
    with harness.Timer() as t:
        report = PROTOCOLS[args.dataset](args)
    hw = hardware()
    device = resolve_device(TrainConfig(device=args.device))
    report["dataset"] = args.dataset
    report["run"] = {
        "command": harness.command_line(__file__, argv, env=("RECVAE_DATA_HOME",)),
        "date": started[:10],
        "started_at": started,
        "wall_s": t.seconds,
        "device_used": f"{device} ({hw['gpu']})" if device.type == "cuda" else "cpu",
        "torch_threads": args.threads or torch.get_num_threads(),
        "hardware": hw,
        "load_start": load_start,
        "load_end": harness.load_average(),
        "quick": args.quick,
        "smoke": args.smoke,
    }
    report["command"] = report["run"]["command"]
    name = f"reproduce_{args.dataset}" + ("_quick" if args.quick else "")
    js, md = harness.write_results(args.out, name, report, to_markdown(report))
    logger.info("wrote %s and %s", js, md)
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Which training-speed options pay off on this machine: Adam implementation, autocast, threads, eval batch size.

Usage: .venv/bin/python bench/train_speed.py [--epochs 6] [--dataset ml-1m-pro-sg | synthetic-ml20m] [--smoke]
Writes bench/results/train_speed.json and .md. Each variant trains the paper's Mult-VAE (I-600-200-600-I, batch 500)
through recvae.training.loop.fit_model for a few epochs (no validation) and reports the median epoch time; quality after
those epochs (test NDCG@100) shows that a variant changes speed, not results. The Adam variants are made by
wrapping torch.optim.Adam in this script only (the library always uses fused=True).
"""

from __future__ import annotations

import logging
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import harness
import torch

from recvae.config import Config, apply_overrides
from recvae.data.snapshot import Snapshot
from recvae.evaluation.metrics import evaluate
from recvae.log import setup_logging
from recvae.models.sparse import CSRBatch, SparseLinear
from recvae.models.vae import LatentAutoencoder
from recvae.training import fit_model

logger = logging.getLogger("bench.train_speed")

# name -> (Adam implementation, train overrides, sparse first layer's backward: x^T @ grad (library) or embedding_bag's,
#          likelihood: the library's log_softmax, or logsumexp + gather on a float32 copy of the logits
#          (before stop 11))
VARIANTS: dict[str, tuple[str, dict[str, Any], bool, str]] = {
    "fp32, foreach Adam (torch default), embedding_bag backward": ("foreach", {}, False, "log_softmax"),
    "fp32, fused Adam, embedding_bag backward": ("fused", {}, False, "log_softmax"),
    "fp32, fused Adam, logsumexp likelihood": ("fused", {}, True, "logsumexp"),
    "fp32, fused Adam": ("fused", {}, True, "log_softmax"),
    "bf16 autocast, foreach Adam, embedding_bag backward": ("foreach", {"train.amp": "bf16"}, False, "log_softmax"),
    "bf16 autocast, fused Adam, embedding_bag backward": ("fused", {"train.amp": "bf16"}, False, "log_softmax"),
    "bf16 autocast, fused Adam, logsumexp likelihood": ("fused", {"train.amp": "bf16"}, True, "logsumexp"),
    "bf16 autocast, fused Adam": ("fused", {"train.amp": "bf16"}, True, "log_softmax"),
    "bf16 autocast, fused Adam, torch.compile": ("fused", {"train.amp": "bf16", "train.compile": True}, True,
                                                 "log_softmax"),
    "bf16 autocast, fused Adam, 1 thread": ("fused", {"train.amp": "bf16", "train.num_threads": 1}, True,
                                            "log_softmax"),
}
BASELINE = "fp32, foreach Adam (torch default), embedding_bag backward"
EVAL_BATCHES = (500, 2000, 8000)
# --smoke: a small model on one thread (two threads of a busy 2-core machine fight each other)
SMOKE_SETTINGS = {"train.num_threads": 1, "model.hidden_dims": [32], "model.latent_dim": 16}
SMOKE_VARIANTS = (BASELINE, "bf16 autocast, fused Adam, logsumexp likelihood")  # every patch, no compiler: seconds


@contextmanager
def adam_impl(kind: str) -> Iterator[None]:
    """torch.optim.Adam as recvae.training.loop builds it, forced to `kind` ('fused' or 'foreach')."""
    original = torch.optim.Adam

    def make(params: Any, **kw: Any) -> torch.optim.Optimizer:
        kw["fused"], kw["foreach"] = (True, None) if kind == "fused" else (None, True)
        return original(params, **kw)

    torch.optim.Adam = make  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        torch.optim.Adam = original  # type: ignore[misc]


def load(dataset: str, data_home: Path, smoke: bool = False) -> Snapshot:
    """ML-1M pro_sg, or the ML-20M-shaped synthetic set of bench/peers (with --smoke: a tiny synthetic set)."""
    if smoke:
        return harness.tiny_snapshot()
    if dataset == "ml-1m-pro-sg":
        from recvae.data.readers import read_pro_sg

        return read_pro_sg(data_home / "ml-1m" / "pro_sg")
    return harness.synthetic_snapshot(98765, 10_000)[0]


@contextmanager
def sparse_backward(on: bool) -> Iterator[None]:
    """recvae.models.sparse.SparseLinear's training backward: x^T @ grad (the library's) or embedding_bag's own."""
    original = SparseLinear.sparse_backward
    SparseLinear.sparse_backward = on
    try:
        yield
    finally:
        SparseLinear.sparse_backward = original


def nll_logsumexp(logits: torch.Tensor, x: CSRBatch) -> torch.Tensor:
    """The multinomial likelihood as recvae computed it before stop 11: logsumexp and a gather on float32 logits."""
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=1)
    return -torch.sum(x.values * (logits[x.rows, x.indices] - lse[x.rows])) / max(x.n_rows, 1)


@contextmanager
def likelihood(kind: str) -> Iterator[None]:
    """The networks' likelihood: the library's ('log_softmax') or the earlier 'logsumexp' formulation."""
    original = LatentAutoencoder.__dict__["nll"]
    if kind == "logsumexp":
        LatentAutoencoder.nll = staticmethod(nll_logsumexp)
    try:
        yield
    finally:
        LatentAutoencoder.nll = original


def time_variant(snap: Snapshot, adam: str, overrides: dict[str, Any], epochs: int, sparse: bool = True,
                 nll: str = "log_softmax", base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Median / min epoch seconds (first epoch apart) and the test NDCG@100 after `epochs` epochs."""
    config = apply_overrides(Config(), {"train.epochs": epochs, "train.device": "cpu", "train.num_threads": 2,
                                        **(base or {}), **overrides}).validate()
    with adam_impl(adam), sparse_backward(sparse), likelihood(nll):
        result = fit_model(snap.train, None, config, select_on=None)
    times = [h["epoch_time_s"] for h in result.history[1:]]  # the first epoch warms up (and compiles)
    foldin, heldout = snap.heldout("test")
    ndcg = evaluate(result.recommender.scores, foldin, heldout, ("ndcg@100",)).means["ndcg@100"]
    return {"median_s": statistics.median(times), "min_s": min(times),
            "first_epoch_s": result.history[0]["epoch_time_s"], "epochs": epochs, "test_ndcg@100": ndcg}


def time_eval(snap: Snapshot, batch: int, repeat: int = 3, base: dict[str, Any] | None = None) -> float:
    """Seconds to score and rank the validation users (fold-in rows) with eval batches of `batch` users."""
    config = apply_overrides(Config(), {"train.epochs": 1, "train.device": "cpu", "train.num_threads": 2,
                                        **(base or {}), "train.eval_batch_size": batch, "train.amp": "bf16"}).validate()
    rec = fit_model(snap.train, None, config, select_on=None).recommender
    foldin, heldout = snap.heldout("validation")
    metrics = ("ndcg@100", "recall@20", "recall@50")
    return harness.best_of(lambda: evaluate(rec.scores, foldin, heldout, metrics, batch_size=batch), repeat)[0]


def render(report: dict[str, Any]) -> str:
    """train_speed.md: one row per variant, then the evaluation batch sizes."""
    variants = report["variants"]
    base_name = BASELINE if BASELINE in variants else next(iter(variants))
    base = variants[base_name]["median_s"]
    rows = [[name, f"{v['median_s']:.3f}", f"{v['min_s']:.3f}", f"{v['first_epoch_s']:.2f}",
             f"{base / v['median_s']:.2f}x", f"{v['test_ndcg@100']:.4f}"] for name, v in variants.items()]
    against = "torch default" if base_name == BASELINE else "the first row"
    lines = [
        *harness.header("Training speed options (Mult-VAE, CPU)", report),
        f"Data: {report['data']}. Paper architecture, batch 500, 2 torch threads unless stated; median of epochs 2.."
        f"{report['epochs']} (the first warms up).", "",
        *harness.markdown_table(["variant", "s/epoch (median)", "min", "first epoch s", f"speed-up vs {against}",
                                 "test NDCG@100 after these epochs"], rows),
    ]
    if report["eval_batch_s"]:
        lines += ["", "Validation-set evaluation (score, mask fold-in items, rank, NDCG@100 + Recall@20/50; "
                  "bf16 model):", "",
                  *harness.markdown_table(["eval batch (users)", "seconds"],
                                          [[b, f"{s:.3f}"] for b, s in report["eval_batch_s"].items()])]
    lines += ["", "The library keeps what helped: fused Adam always; the sparse first layer's weight gradient as the "
              "sparse product x^T @ grad over the entries that survive dropout; the likelihood as one float32 "
              "log_softmax over the logits; `train.amp=bf16` as the fast path on CPUs with "
              "native bfloat16 (AVX512-BF16 / AMX) and on GPUs. `train.compile=true` (forward pass and likelihood "
              "through torch.compile) is kept as an option, to be measured on each machine: its first epoch pays the "
              "compilation. Both stay off by default: float32 as the paper, and no compiler needed."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Time every variant and the evaluation batch sizes; write train_speed[_<dataset>].json and .md."""
    p = harness.parser(__doc__)
    p.add_argument("--dataset", choices=("ml-1m-pro-sg", "synthetic-ml20m"), default="ml-1m-pro-sg")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--variant", action="append", choices=list(VARIANTS), metavar="NAME",
                   help="time only this variant (repeatable; default: all)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation batch-size timings")
    args = harness.parse(p, argv)
    setup_logging()
    report: dict[str, Any] = {"command": harness.command_line(__file__, argv), "date": harness.now(),
                              "machine": harness.machine_info(), "dataset": args.dataset}
    snap = load(args.dataset, args.data_home, args.smoke)
    epochs = 2 if args.smoke else args.epochs
    chosen = args.variant or (SMOKE_VARIANTS if args.smoke else list(VARIANTS))
    base = SMOKE_SETTINGS if args.smoke else None
    variants = {}
    for name in chosen:
        adam, overrides, sparse, nll = VARIANTS[name]
        variants[name] = time_variant(snap, adam, overrides, epochs, sparse, nll, base)
        logger.info("%s: %s", name, variants[name])
    batches = (50,) if args.smoke else EVAL_BATCHES
    eval_s = {} if args.no_eval else {str(b): time_eval(snap, b, 1 if args.smoke else 3, base) for b in batches}
    data = f"tiny synthetic, {SMOKE_SETTINGS} (--smoke)" if args.smoke else args.dataset
    report.update({
        "epochs": epochs, "variants": variants, "eval_batch_s": eval_s,
        "data": f"{data}: {snap.train.shape[0]:,} train users x {snap.n_items:,} items, "
                f"{snap.train.nnz:,} interactions",
    })
    stem = "train_speed" if args.dataset == "ml-1m-pro-sg" else f"train_speed_{args.dataset}"
    js, md = harness.write_results(args.out, stem, report, render(report))
    logger.info("wrote %s and %s", js, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

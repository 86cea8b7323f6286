"""ML-20M at full scale: prepare + training + evaluation, each stage in its own process for its time and peak
memory; without the ML-20M files the same path runs on the generated 'synthetic-ml-20m' data (with --smoke: the
small synthetic preset)."""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import multiprocessing
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import numpy as np
import torch

from recvae.config import Config, apply_overrides
from recvae.data import datasets
from recvae.data.prepare import prepare
from recvae.data.readers import Source
from recvae.data.snapshot import Snapshot
from recvae.evaluation.metrics import DEFAULT_METRICS, evaluate
from recvae.log import setup_logging
from recvae.training import load_best, resolve_device, train

from .report import num, row, table

logger = logging.getLogger("bench.reproduce")

# Liang et al. 2018, Table 2, ML-20M, Mult-VAE
PUB_ML20M = {"ndcg@100": 0.426, "recall@20": 0.395, "recall@50": 0.537}
SYNTHETIC_NOTE = (
    "The ML-20M files are not on this machine, so the generated data of the same shape ran through the "
    "same code path (recvae.data.prepare → recvae.training.loop → recvae.evaluation.metrics). Its figures say "
    "nothing about ML-20M quality: the published figures beside them are NOT measured here (no ML-20M data).")


def run_ml20m(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare, train and evaluate ML-20M (or its synthetic stand-in), each stage in a fresh process."""
    source, synthetic = ml20m_source(args.quick, args.smoke)
    epochs = args.epochs or (1 if synthetic else 200)
    config = apply_overrides(Config(), [f"train.epochs={epochs}", f"train.device={args.device}",
                                        f"train.num_threads={args.threads or None}", *args.set]).validate()
    with tempfile.TemporaryDirectory(prefix="reproduce-ml20m-") as tmp:
        snap_dir, run_dir = Path(tmp) / "snapshot", Path(tmp) / "run"
        stages = run_stages(args.threads, [
            ("prepare", stage_prepare, (source, snap_dir)),
            ("train", stage_train, (snap_dir, run_dir, config.to_dict())),
            ("evaluate", stage_evaluate, (snap_dir, run_dir)),
        ], fresh=not args.smoke)
    ev, tr, pr = stages["evaluate"], stages["train"], stages["prepare"]
    what = "synthetic-ml-20m" if synthetic else "ML-20M"
    label = f"Mult-VAE, paper settings, {epochs} epoch{'s' * (epochs != 1)} on {what}"
    published_note = ("not measured here (no ML-20M data): paper figures on real ML-20M" if synthetic
                      else "paper, Table 2")
    stage_rows = [[name, f"{s['seconds']:.1f}", f"{s['rss_start_mib']:.0f}", f"{s['peak_rss_mib']:.0f}", s["what"]]
                  for name, s in stages.items()]
    counts = pr["summary"]
    return {
        "title": f"Mult-VAE pipeline at ML-20M scale ({what})",
        "metrics": list(DEFAULT_METRICS),
        "published_label": "Liang et al. 2018, real ML-20M" + (" (NOT measured here)" if synthetic else ""),
        "rows": [row(label, ev["mean"], ev["stderr"], PUB_ML20M, published_note)],
        "tables": [table("Stages (each in a fresh process; peak RSS from resource.getrusage, includes the imports)",
                         ["stage", "seconds", "RSS at start MiB", "peak RSS MiB", "what"], stage_rows)],
        "notes": [
            SYNTHETIC_NOTE if synthetic else "Real ML-20M.",
            f"Data: {counts['train']['users']:,} training users, {counts['validation_tr']['users']:,} validation and "
            f"{counts['test_tr']['users']:,} test users, {pr['n_items']:,} items, {pr['interactions']:,} "
            f"interactions after preprocessing (rating > 3.5, >= 5 per user).",
            f"Training: {tr['epochs_run']} epoch(s), {tr['s_per_epoch']:.1f} s per epoch "
            f"({tr['users_per_s']:,.0f} users/s) on {tr['device']}; validation NDCG@100 at the best epoch "
            f"{num(tr['validation_at_best'].get('ndcg@100'))}.",
        ] + (["--quick: 10 % of the synthetic users."] if args.quick and not args.smoke else [])
          + (["--smoke: the small synthetic preset."] if args.smoke else []),
        "details": {"source": source.describe(), "config": config.to_dict(), "stages": stages},
    }


def ml20m_source(quick: bool, smoke: bool = False) -> tuple[Source, bool]:
    """ML-20M when a data home holds it, else the synthetic data of its shape (and whether it is synthetic);
    `smoke`: the small synthetic preset."""
    if smoke:
        return datasets.resolve("synthetic"), True
    try:
        return datasets.resolve("ml-20m"), False
    except datasets.DatasetNotFoundError as exc:
        logger.info("%s; using synthetic-ml-20m", exc)
    source = datasets.resolve("synthetic-ml-20m")
    if quick:
        source.synthetic["n_users"] = 13_670
    return source, True


def stage_prepare(source: Source, snap_dir: Path) -> dict[str, Any]:
    """Child-process stage: read, preprocess, split and save the snapshot."""
    snap = prepare(source, snap_dir)
    timings = snap.manifest.get("timings_s") or {}
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
    return {"what": f"{'generate' if source.format == 'synthetic' else 'read'}, preprocess, split, save ({steps})",
            "snapshot_id": snap.snapshot_id,
            "summary": snap.summary(), "n_items": snap.n_items,
            "interactions": int(snap.manifest.get("interactions", 0)), "timings_s": snap.manifest.get("timings_s")}


def stage_train(snap_dir: Path, run_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Child-process stage: load the snapshot and train, epoch chosen on validation users."""
    snap = Snapshot.load(snap_dir)
    cfg = Config.from_dict(config)
    result = train(snap, cfg, run_dir, select_on="validation")
    s = float(np.median([h["epoch_time_s"] for h in result.history]))
    return {"what": f"load snapshot, {len(result.history)} epoch(s) + validation", "epochs_run": len(result.history),
            "s_per_epoch": s, "users_per_s": snap.train.shape[0] / s, "validation_at_best": result.best_metrics,
            "history": result.history, "device": str(resolve_device(cfg.train))}


def stage_evaluate(snap_dir: Path, run_dir: Path) -> dict[str, Any]:
    """Child-process stage: load the snapshot and the best checkpoint, score the test users."""
    snap = Snapshot.load(snap_dir)
    res = evaluate(load_best(run_dir).scores, *snap.heldout("test"), DEFAULT_METRICS)
    return {"what": f"load snapshot + best.pt, score {res.n_users:,} test users", "mean": res.means,
            "stderr": res.stderr, "n_users": res.n_users}


Stage = tuple[str, Callable[..., dict[str, Any]], tuple[Any, ...]]


def run_stages(threads: int | None, stages: list[Stage], fresh: bool = True) -> dict[str, dict[str, Any]]:
    """Run each stage `(name, fn, args)` in a fresh spawned process, so that its wall time and peak RSS are its own;
    fresh=False (--smoke) runs them all in one child process, one start-up instead of three."""
    ctx = multiprocessing.get_context("spawn")
    if fresh:
        return {name: in_child(ctx, threads, fn, *a) for name, fn, a in stages}
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return {name: pool.submit(_measured, threads, fn, *a).result() for name, fn, a in stages}


def in_child(ctx: Any, threads: int | None, fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run `fn(*args)` in a fresh process; add its wall time and its peak RSS (getrusage) to the result."""
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_measured, threads, fn, *args).result()


def _measured(threads: int | None, fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """In the child: `fn(*args)` with its wall time, the RSS peak before it and the one after."""
    setup_logging("INFO")
    if threads:
        torch.set_num_threads(threads)
    start_rss = harness.peak_rss_gib() * 1024
    with harness.Timer() as t:
        out = fn(*args)
    out["seconds"] = t.seconds
    out["rss_start_mib"] = start_rss
    out["peak_rss_mib"] = harness.peak_rss_gib() * 1024
    logger.info("%s: %.1f s, peak RSS %.0f MiB", fn.__name__, out["seconds"], out["peak_rss_mib"])
    return out

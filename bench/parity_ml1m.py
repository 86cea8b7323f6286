"""Parity check on ML-1M pro_sg: paper-setting Mult-VAE and Mult-DAE against /work/shared/REFERENCE.md.

Usage: .venv/bin/python bench/parity_ml1m.py [--data-home ../shared/data] [--epochs 200] [--models vae,dae] [--smoke]
Writes bench/results/parity_ml1m.json and .md.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import numpy as np
import torch

from recvae.config import Config, apply_overrides, preset
from recvae.data.readers import read_pro_sg
from recvae.data.snapshot import Snapshot
from recvae.evaluation.metrics import evaluate
from recvae.log import setup_logging
from recvae.training import paper_equivalent_anneal_steps, train

logger = logging.getLogger("bench.parity_ml1m")

METRICS = ("ndcg@100", "recall@20", "recall@50")
# /work/shared/REFERENCE.md, ML-1M pro_sg, test users, epoch chosen on validation users
REFERENCE = {
    "popularity": {"ndcg@100": 0.219},
    "dae": {"ndcg@100": 0.376, "recall@20": 0.299, "recall@50": 0.422},
    "vae": {"ndcg@100": 0.381, "recall@20": 0.309, "recall@50": 0.427},
    "vae_scaled": {"ndcg@100": 0.381, "recall@20": 0.309, "recall@50": 0.427},
    "dae600": {"ndcg@100": 0.376, "recall@20": 0.299, "recall@50": 0.422},
}


def paper_config(kind: str, epochs: int, threads: int | None = None, n_train_users: int = 4034) -> Config:
    """Paper settings. 'vae': total_anneal_steps 200,000 as on ML-20M (beta stays below 0.01 here);
    'vae_scaled': the anneal length scaled so beta reaches the cap at the same epoch as on ML-20M;
    'dae': the reference notebook's DAE (I-200-I, L2 lam = 0.01 / batch size);
    'dae600': the VAE's architecture I-600-200-600-I without the KL term and without L2;
    'recvae': RecVAE's published settings (recvae.config.preset), trained with bf16 autocast."""
    c = preset("recvae") if kind == "recvae" else Config()
    c.train.epochs = epochs
    c.train.device = "cpu"
    c.train.num_threads = threads
    if kind == "recvae":
        c.train.amp = "bf16"  # same figures as fp32 at about half the time on this CPU (bench/results/vae_tuning.md)
    elif kind == "dae":
        c.model.kind = "dae"
        c.model.hidden_dims = ()
        c.model.latent_dim = 200
        c.train.weight_decay = 0.01 / c.train.batch_size
    elif kind == "dae600":
        c.model.kind = "dae"
    elif kind == "vae_scaled":
        c.train.total_anneal_steps = paper_equivalent_anneal_steps(n_train_users, c.train.batch_size)
        c.train.scale_anneal_to_data = False  # the same as the project default (scaling on), spelled out
    elif kind == "vae":
        c.train.scale_anneal_to_data = False  # 200,000 steps taken literally, as on ML-20M
    else:
        raise ValueError(f"unknown model {kind!r}; use vae, vae_scaled, dae, dae600 or recvae")
    return c.validate()


def test_metrics(score_fn: Callable[[Any], Any], snapshot: Snapshot) -> dict[str, Any]:
    """Means and standard errors on the test users."""
    foldin, heldout = snapshot.heldout("test")
    res = evaluate(score_fn, foldin, heldout, METRICS)
    return {"mean": res.means, "stderr": res.stderr, "n_users": res.n_users}


def train_paper_model(snap: Snapshot, kind: str, config: Config) -> dict[str, Any]:
    """Train one model kind on `snap`, epoch chosen on validation users; its settings, curve and test figures."""
    with tempfile.TemporaryDirectory(prefix=f"parity-{kind}-") as tmp, harness.Timer() as t:
        result = train(snap, config, Path(tmp), select_on="validation")
    times = [h["epoch_time_s"] for h in result.history]
    evals = [h.get("eval_time_s", 0.0) for h in result.history]
    test = test_metrics(result.recommender.scores, snap)
    logger.info("%s: best epoch %d, test %s", kind, result.best_epoch, test["mean"])
    return {
        "config": {"model": config.to_dict()["model"], "train": config.to_dict()["train"]},
        "best_epoch": result.best_epoch,
        "best_beta": result.best_beta,
        "validation_at_best": result.best_metrics,
        "test": test,
        "epochs_run": len(result.history),
        "train_s_per_epoch_median": float(np.median(times)),
        "eval_s_per_epoch_median": float(np.median(evals)),
        "wall_s": t.seconds,
        "final_beta": result.history[-1]["beta"],
        "val_ndcg_curve": [round(h["val_ndcg@100"], 5) for h in result.history],
    }


def run(snap: Snapshot, epochs: int, models: list[str], threads: int | None = None,
        overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Popularity and every model kind of `models` on `snap`."""
    logger.info("pro_sg: %s", snap.summary())
    out: dict[str, Any] = {"snapshot_id": snap.snapshot_id, "summary": snap.summary(), "models": {}}
    counts = torch.from_numpy(np.asarray(snap.train.sum(axis=0)).ravel().astype(np.float32))
    out["models"]["popularity"] = {"test": test_metrics(lambda X: counts.expand(X.shape[0], -1).clone(), snap)}
    for kind in models:
        config = apply_overrides(paper_config(kind, epochs, threads, snap.train.shape[0]), list(overrides)).validate()
        out["models"][kind] = train_paper_model(snap, kind, config)
    return out


def machine() -> dict[str, Any]:
    """harness.machine_info() and torch's default thread count."""
    return {**harness.machine_info(), "torch_threads_default": torch.get_num_threads()}


def to_markdown(res: dict[str, Any]) -> str:
    """parity_ml1m.md: a row per model beside REFERENCE.md, then per-model facts."""
    names = {
        "popularity": "Popularity",
        "vae": "Mult-VAE (β cap 0.2, 200,000 anneal steps: β ≤ 0.009)",
        "vae_scaled": "Mult-VAE (β cap 0.2, anneal scaled: reaches 0.2 at epoch ~171)",
        "dae": "Mult-DAE (I-200-I, λ=0.01/500, as the reference notebook)",
        "dae600": "Mult-DAE (I-600-200-600-I, no L2)",
    }
    threads = res["threads"] or res["machine"].get("torch_threads_default")
    lines = [
        "# Parity on ML-1M pro_sg (test users, epoch chosen on validation NDCG@100)",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {harness.describe(res['machine'])} (training threads: {threads}), shared with other jobs "
        f"(load average at the start {res['load_average_start']}). Date: {res['date']}.",
        "",
        "| model | test NDCG@100 | Recall@20 | Recall@50 | reference NDCG@100 / R@20 / R@50 | best epoch "
        "| train s/epoch | eval s/epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, m in res["models"].items():
        t, ref = m["test"], REFERENCE.get(kind, {})
        cells = [f"{t['mean'][k]:.4f} ± {t['stderr'][k]:.4f}" for k in METRICS]
        refs = " / ".join(f"{ref[k]:.3f}" if k in ref else "–" for k in METRICS)
        lines.append(
            f"| {names.get(kind, kind)} | {' | '.join(cells)} | {refs} | {m.get('best_epoch', '–')} | "
            f"{m['train_s_per_epoch_median']:.2f} | {m['eval_s_per_epoch_median']:.3f} |"
            if "best_epoch" in m
            else f"| {names.get(kind, kind)} | {' | '.join(cells)} | {refs} | – | – | – |"
        )
    lines += ["", "± is the standard error over test users (1,000). s/epoch: median over epochs, one training pass / "
              "one validation pass."]
    for kind in ("vae", "vae_scaled", "dae", "dae600"):
        if kind in res["models"]:
            m = res["models"][kind]
            lines.append(
                f"- {kind}: {m['epochs_run']} epochs in {m['wall_s']:.0f} s; validation NDCG@100 at the best epoch "
                f"{m['validation_at_best']['ndcg@100']:.4f}; total_anneal_steps "
                f"{m['config']['train']['total_anneal_steps']}; β at the best epoch {_num(m['best_beta'])}, final β "
                f"{m['final_beta']:.4f}."
            )
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


NOTES = """## Reading the figures

- The paper's `total_anneal_steps` = 200,000 was set for ML-20M (234 updates per epoch: β reaches 0.2 at epoch
  ~171 of 200). ML-1M pro_sg has 9 updates per epoch, so the same constant keeps β below 0.009 for the whole run:
  the model is then practically a noise-injected autoencoder (a diagnostic run with β = 0,
  `--models vae --set train.beta_schedule=constant --set train.beta=0 --epochs 120`, gave test NDCG@100 0.365;
  `--set train.seed=1` for the `vae` row gave 0.364). REFERENCE.md's Mult-VAE rows differ by β cap (0.377-0.381),
  which suggests that β reached the cap; `vae_scaled` (`recvae.training.loop.paper_equivalent_anneal_steps`:
  200,000 × 9 / 234 = 7,692 steps) puts β where the paper's schedule puts it and lands on the reference figures.
- The reference notebook's Mult-DAE is I-200-I with an L2 term λ = 0.01 / batch size; on this small data set
  that regularised, smaller model beats every Mult-VAE row here. REFERENCE.md does not say which DAE it ran.
"""


def main(argv: list[str] | None = None) -> int:
    """Train every model kind on pro_sg; write parity_ml1m.json and .md."""
    p = harness.parser(__doc__)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--models", default="vae,vae_scaled,dae,dae600")
    # one intra-op thread: on a shared, oversubscribed 2-core machine two threads ran slower
    p.add_argument("--threads", type=int, default=1, help="torch threads for training (0: torch's default)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="config override for every model")
    args = harness.parse(p, argv)
    setup_logging("INFO")
    load0 = harness.load_average()
    snap = harness.tiny_snapshot() if args.smoke else read_pro_sg(args.data_home / "ml-1m" / "pro_sg")
    models = ["vae_scaled", "dae"] if args.smoke else [m for m in args.models.split(",") if m]
    with harness.Timer() as t:
        res = run(snap, 2 if args.smoke else args.epochs, models, args.threads or None, args.set)
    res.update({"total_wall_s": t.seconds, "command": harness.command_line(__file__, argv), "machine": machine(),
                "threads": args.threads or None, "load_average_start": load0, "date": harness.now()[:10],
                "reference": REFERENCE})
    md = to_markdown(res)
    harness.write_results(args.out, "parity_ml1m", res, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

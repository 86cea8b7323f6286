"""`recvae tune` against EASE, ALS and the paper's Mult-VAE on public splits, chosen on validation users only.

Usage:
  RECVAE_DATA_HOME=../shared/data .venv/bin/python bench/tune_splits.py --dataset ml-1m-pro-sg --trials 30 \
      [--timeout-min 60] [--model vae] [--space FILE] [--home DIR]
  --home DIR: the run's RECVAE_HOME (default: a new folder under bench/out); an existing one resumes its study.
  --smoke: the synthetic data set, 2 trials of 3 epochs.

Per split, in one fresh RECVAE_HOME: `prepare_step` (the dataset's own protocol; ml-latest-small with the prepare
defaults: rating > 3.5, strong generalization), `tune_step` (the study on validation users; its best retrained and
registered), `baseline_step` for EASE and ALS (their grids tuned on validation users), `train_step` for the paper's
Mult-VAE. Then every model is scored once on the test users, and each one's per-user NDCG@100 is paired with EASE's:
the mean difference and its standard error. Writes bench/results/tune_<dataset>.{json,md}.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np

logger = logging.getLogger("bench.tune_splits")


METRICS = ("ndcg@100", "recall@20", "recall@50")
LIGHTGCN_METRICS = ("recall_all@20", "ndcg@20")  # that protocol's own: Recall@20 over every held-out item
EXTRA_LABELS = {"recall_all@20": "test Recall@20 (hits / all held-out)", "ndcg@20": "test NDCG@20"}


def _metrics(snap: Any) -> tuple[str, ...]:
    return METRICS + (LIGHTGCN_METRICS if snap.manifest.get("protocol") == "lightgcn" else ())


def _per_user(model_uri: str, snap: Any) -> dict[str, np.ndarray]:
    from recvae import tracking
    from recvae.evaluation.metrics import evaluate
    from recvae.pipeline import align_model, aligned_scorer

    rec, _ = tracking.load_recommender_from_uri(model_uri)
    scorer = aligned_scorer(rec, align_model(rec, snap, model_uri))
    return evaluate(scorer, *snap.heldout("test"), _metrics(snap)).per_user


def _paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    d = a - b
    d = d[np.isfinite(d)]
    return {"mean_diff": float(d.mean()), "stderr": float(d.std(ddof=1) / math.sqrt(len(d))), "n_users": int(len(d))}


def _trial_time(study_name: str) -> dict[str, float]:
    """The study's trial time in minutes (summed over trials, whatever run of this bench ran them) and its span."""
    import optuna

    from recvae.tuning import study_ref

    trials = [t for t in optuna.load_study(study_name=study_name, storage=study_ref(study_name).storage).trials
              if t.datetime_start is not None and t.datetime_complete is not None]
    if not trials:
        return {"trial_min": 0.0, "span_min": 0.0}
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return {"trial_min": round(busy / 60, 1), "span_min": round(span / 60, 1)}


def _reproduced_row(path: Path) -> dict[str, Any]:
    """The first (Mult-VAE) row of a bench/reproduce.py result: its test metrics, unpaired."""
    import json

    row = json.loads(path.read_text())["rows"][0]
    return {"label": row["model"], "source": str(path), "note": row.get("note", ""),
            "test": {k: v["mean"] for k, v in row["measured"].items()}}


def run(args: Any) -> dict[str, Any]:
    from recvae import pipeline

    t0 = time.perf_counter()
    snap_res = pipeline.prepare_step(dataset=args.dataset)
    snap = pipeline.load_snapshot(snap_res.snapshot_dir)
    logger.info("%s: %d users x %d items", args.dataset, snap_res.n_users, snap_res.n_items)
    models: dict[str, dict[str, Any]] = {}
    t = time.perf_counter()
    import optuna

    from recvae.pipeline.tuning import default_study_name
    from recvae.tuning import study_ref

    resume = default_study_name(snap_res.snapshot_id, args.model) in optuna.get_all_study_names(
        study_ref("x").storage)
    tuned = pipeline.tune_step(snap_res.snapshot_dir, kind=args.model, trials=args.trials,
                               timeout=args.timeout_min * 60 if args.timeout_min else None,
                               space=args.space, overrides=args.set, model_name="bench",
                               resume=resume)
    assert isinstance(tuned, pipeline.TuneResult)
    models["tuned " + args.model] = {"uri": tuned.challenger["model_uri"], "wall_s": time.perf_counter() - t,
                                     "val_ndcg@100": tuned.best_val_ndcg_at_100}
    study = {k: v for k, v in tuned.to_dict().items() if k != "challenger"} | _trial_time(tuned.study)
    for kind in ("ease", "als"):
        t = time.perf_counter()
        r = pipeline.baseline_step(kind, snap_res.snapshot_dir)
        models[kind] = {"uri": f"runs:/{r.run_id}/model", "wall_s": time.perf_counter() - t,
                        "val_ndcg@100": r.val_ndcg_at_100}
    if args.paper_from is None:
        t = time.perf_counter()
        paper = pipeline.train_step(snap_res.snapshot_dir, kind="vae", overrides=list(args.paper_set),
                                    model_name="bench", run_key="paper-vae")
        models["paper Mult-VAE"] = {"uri": paper.model_uri, "wall_s": time.perf_counter() - t,
                                    "val_ndcg@100": paper.val_ndcg_at_100}
    per_user = {name: _per_user(m["uri"], snap) for name, m in models.items()}
    for name, m in models.items():
        m["test"] = {k: float(np.nanmean(v)) for k, v in per_user[name].items()}
        m["vs_ease_ndcg@100"] = _paired(per_user[name]["ndcg@100"], per_user["ease"]["ndcg@100"])
    return {"dataset": args.dataset, "snapshot": snap_res.to_dict(), "trials": args.trials, "model": args.model,
            "timeout_min": args.timeout_min, "study": study, "models": models,
            "space": None if args.space is None else str(args.space),
            "reproduced": None if args.paper_from is None else _reproduced_row(args.paper_from),
            "wall_s": round(time.perf_counter() - t0, 1)}


def markdown(r: dict[str, Any]) -> str:
    s = r["study"]
    lightgcn = any("recall_all@20" in m["test"] for m in r["models"].values())
    chosen_on = ("validation users carved out of the training users (the LightGCN protocol has none)" if lightgcn
                 else "validation users")
    lines = harness.header(f"`recvae tune` on {r['dataset']}: the best single model against EASE", r)
    lines += [
        "",
        f"Snapshot {r['snapshot']['snapshot_id']}: {r['snapshot']['n_users']:,} users x {r['snapshot']['n_items']:,} "
        f"items. Study: {s['trials']} trials ({s['complete']} complete, {s['pruned']} pruned, {s['failed']} failed) "
        f"of `{r['model']}`"
        + (f" in the space of `{r['space']}`" if r.get("space") else "")
        + (f", {s['trial_min']:.0f} min of trial time" if "trial_min" in s else "")
        + f", chosen on {chosen_on} only; the best (trial {s['best_trial']}, validation "
        f"NDCG@100 {s['best_val_ndcg@100']:.4f}) retrained and scored once on test users. EASE and ALS tuned on the "
        "same validation users (their default grids)"
        + ("" if r.get("reproduced") else "; the paper's Mult-VAE with its settings")
        + f". This run of the bench {r['wall_s'] / 60:.1f} min: the wall column is this run's, so a resumed study's "
        "trials, and a best retrained in an earlier run, are not in it.",
        "",
        "A configuration tuned on this split is a claim about this split only; run `recvae tune` on your own data.",
        "",
    ]
    extra = list(LIGHTGCN_METRICS) if lightgcn else []
    rows = []
    for name, m in r["models"].items():
        p = m["vs_ease_ndcg@100"]
        diff = "0 (reference)" if name == "ease" else f"{p['mean_diff']:+.4f} ± {p['stderr']:.4f}"
        val = m["val_ndcg@100"]
        rows.append([name, "" if val is None else f"{val:.4f}", f"{m['test']['ndcg@100']:.4f}",
                     f"{m['test']['recall@20']:.4f}", f"{m['test']['recall@50']:.4f}",
                     *[f"{m['test'][k]:.4f}" for k in extra], diff, f"{m['wall_s']:.0f}"])
    rep = r.get("reproduced")
    if rep:
        rows.append([f"{rep['label']} (bench/reproduce.py)", "", "", "", "",
                     *[f"{rep['test'][k]:.4f}" if k in rep["test"] else "" for k in extra],
                     "not paired: another run, its epoch chosen on test users", ""])
    lines += harness.markdown_table(
        ["model", "val NDCG@100", "test NDCG@100", "test Recall@20", "test Recall@50",
         *[EXTRA_LABELS[k] for k in extra],
         "paired test NDCG@100 − EASE (± s.e.)", "wall (s), this run"], rows, "lrrrr" + "r" * len(extra) + "rr")
    if rep:
        lines += ["", f"The Mult-VAE row is read from `{rep['source']}` ({rep['note']}); the paper's Mult-VAE was not "
                      "retrained in this run."]
    lines += ["", "Best configuration:", "", "```", *[f"{k} = {v}" for k, v in sorted(s["best_overrides"].items())],
              "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--dataset", default="ml-1m-pro-sg")
    p.add_argument("--model", default="vae", choices=["vae", "dae", "recvae"])
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--timeout-min", type=float, default=None)
    p.add_argument("--space", default=None, help="a space file narrowing the default space")
    p.add_argument("--set", action="append", default=[], help="settings every trial shares")
    p.add_argument("--paper-set", action="append", default=[], help="overrides of the paper's Mult-VAE run")
    p.add_argument("--paper-from", type=Path, default=None,
                   help="a bench/reproduce.py result JSON whose Mult-VAE row stands in for retraining the paper's "
                        "Mult-VAE (unpaired; for a split where that takes hours)")
    p.add_argument("--home", type=Path, default=None, help="RECVAE_HOME of the run; an existing one resumes its study")
    args = harness.parse(p, argv)
    if args.smoke:
        args.dataset, args.trials = "synthetic", 2
        args.space = {"train.epochs": 3, "model.hidden_width": [16], "model.latent_dim": [8],
                      "model.n_pseudo_inputs": [4]}
        args.paper_set = ["train.epochs=3"]
    from recvae.log import setup_logging

    setup_logging(logging.INFO)
    home = args.home or Path(tempfile.mkdtemp(prefix="tune-splits-", dir=harness.scratch_dir()))
    home.mkdir(parents=True, exist_ok=True)
    os.environ["RECVAE_HOME"] = str(home.resolve())
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    report = {"command": harness.command_line(__file__, argv), "date": harness.now(), "machine": harness.machine_info(),
              "home": str(home)}
    report.update(run(args))
    name = f"tune_{report['dataset']}"
    harness.write_results(args.out, name, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`recvae tune`: an Optuna study of the model's settings on a snapshot's validation users; its best retrained."""

from __future__ import annotations

import argparse
from typing import Any

from recvae.cli.models import _registered_name, add_registry_args
from recvae.cli.output import format_table
from recvae.models.kinds import MODEL_KINDS


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def add_tune(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "tune", help="search the model's settings on validation users (Optuna), retrain the best as challenger",
        description="Run an Optuna study (TPE sampler, median pruner on each epoch's validation NDCG@100) over the "
        "model's and training's settings on a snapshot's validation users. Every trial is an MLflow child run of the "
        "study's run; the study is stored in a database (SQLite under the home, or --storage), so --resume continues "
        "a killed tune and other workers can join it (--resume --no-finish). At the end the best configuration is "
        "retrained, scored once on test users, registered and set as 'challenger'.")
    p.add_argument("--snapshot", metavar="DIR", help="snapshot folder (default: the latest built by the pipeline)")
    p.add_argument("--model", choices=MODEL_KINDS, default="vae", help="the model kind to tune (default: vae)")
    p.add_argument("--trials", type=_positive, default=20,
                   help="complete or pruned trials the study should have in all, across workers and resumes "
                   "(default: 20)")
    p.add_argument("--timeout", type=_seconds, metavar="S", help="stop starting trials after S seconds")
    p.add_argument("--space", metavar="FILE", help="YAML or JSON narrowing the default search space: "
                   "KEY: [choices] | {low, high[, log]} | a fixed value | null (drop); see docs/tuning.md")
    p.add_argument("--study", metavar="NAME", help="study name (default: SNAPSHOT_ID-MODEL)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL, e.g. postgresql://user:pw@host/db "
                   "(default: $RECVAE_TUNE_STORAGE, else sqlite under the home)")
    p.add_argument("--resume", action="store_true", help="continue the study (or join it as another worker)")
    p.add_argument("--no-finish", dest="finish", action="store_false",
                   help="run trials only (an extra worker): leave logging the study and retraining its best to the "
                   "worker that runs without it")
    p.add_argument("--worker", type=int, default=0, help="this worker's number: seeds its sampler apart (default 0)")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="a setting every trial shares, e.g. train.device=cuda (repeatable)")
    return add_registry_args(p)


def cmd_tune(args: argparse.Namespace) -> int:
    from recvae import pipeline

    out = pipeline.tune_step(args.snapshot, kind=args.model, trials=args.trials, timeout=args.timeout,
                             study=args.study, storage=args.storage, space=args.space, resume=args.resume,
                             overrides=args.overrides, experiment=args.experiment,
                             model_name=_registered_name(args), worker=args.worker, seed=args.seed,
                             finish=args.finish)
    if not isinstance(out, pipeline.TuneResult):
        print(format_table([out]))
        return 0
    print(format_table([{k: v for k, v in out.to_dict().items() if k not in ("best_overrides", "challenger")}]))
    print()
    print("best configuration (validation users):")
    print(format_table([{"setting": k, "value": f"{v:.4g}" if isinstance(v, float) else v}
                        for k, v in sorted(out.best_overrides.items())]))
    print()
    print("challenger (retrained from it; test users scored once):")
    print(format_table([out.challenger]))
    return 0

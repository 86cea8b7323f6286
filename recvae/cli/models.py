"""`recvae train`, `baseline`, `ensemble`, `evaluate`, `compare` and `promote`: models in MLflow."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from recvae.cli.output import format_table, grid
from recvae.config import ConfigError, split_assignment
from recvae.models.kinds import BASELINE_KINDS, MODEL_KINDS


def add_train(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train Mult-VAE (or Mult-DAE) on a snapshot, logged to MLflow",
                              description="Train on a snapshot's training users, pick the epoch on validation users, "
                              "log params, curves, test metrics and the model to MLflow and register a version "
                              "(alias 'challenger').")
    p.add_argument("--snapshot", metavar="DIR", help="snapshot folder (default: the latest built by the pipeline)")
    p.add_argument("--model", choices=MODEL_KINDS, default="vae",
                   help="Mult-VAE (default), the Mult-DAE ablation, or RecVAE (starts from its published settings)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. train.epochs=50 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the same configuration from its last checkpoint")
    p.epilog = ("--set train.nproc=N trains in N processes on this machine; for several machines start "
                "`torchrun ... -m recvae.cli train` on each (docs/distributed.md)")
    return add_registry_args(p)


def add_registry_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--experiment and --name, for commands that log a model and register it."""
    p.add_argument("--experiment", default="recvae", help="MLflow experiment (default: recvae)")
    p.add_argument("--name", default="recvae", help="registered model name (default: recvae); 'none' to not register")
    return p


def _registered_name(args: argparse.Namespace) -> str | None:
    return None if args.name.lower() == "none" else args.name


def cmd_train(args: argparse.Namespace) -> int:
    from recvae import pipeline
    from recvae.training.distributed import env_rank

    out = pipeline.train_step(args.snapshot, overrides=args.overrides, kind=args.model, experiment=args.experiment,
                              model_name=_registered_name(args), resume=args.resume, reuse_finished=False)
    if env_rank() == 0:  # under torchrun every rank returns rank 0's result: one table
        print(format_table([out]))
    return 0


def add_baseline(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("baseline", help="fit a baseline (popularity, als, ease) on a snapshot, logged to MLflow")
    p.add_argument("kind", choices=BASELINE_KINDS)
    p.add_argument("--snapshot", metavar="DIR", help="snapshot folder (default: the latest built by the pipeline)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="fix a hyperparameter (e.g. lam=500); without any, they are tuned on validation users")
    p.add_argument("--experiment", default="recvae", help="MLflow experiment (default: recvae)")
    return p


def _parse_params(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, value = split_assignment(item)
        try:
            out[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            out[key] = value
    return out


def cmd_baseline(args: argparse.Namespace) -> int:
    from recvae import pipeline

    out = pipeline.baseline_step(args.kind, args.snapshot, params=_parse_params(args.param) or None,
                                 experiment=args.experiment)
    print(format_table([out]))
    return 0


def add_ensemble(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("ensemble",
                              help="combine trained models (e.g. seeds of one config) into one, logged to MLflow",
                              description="Average the members' softmax over the items, evaluate the ensemble on the "
                              "snapshot's validation and test users, log it as its own run and register a version "
                              "(alias 'challenger').")
    p.add_argument("--model", dest="models", action="append", required=True, metavar="URI",
                   help="a member: models:/NAME/VERSION, runs:/RUN_ID/model or a model folder (at least 2)")
    p.add_argument("--snapshot", metavar="DIR", help="snapshot folder (default: the latest built by the pipeline)")
    return add_registry_args(p)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from recvae import pipeline

    out = pipeline.ensemble_step(args.models, args.snapshot, experiment=args.experiment,
                                 model_name=_registered_name(args))
    print(format_table([out]))
    return 0


def add_evaluate(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="evaluate a registered or logged model on a snapshot's held-out users")
    p.add_argument("--model", required=True, metavar="URI",
                   help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model or a model folder")
    p.add_argument("--snapshot", metavar="DIR", help="snapshot folder (default: the latest built by the pipeline)")
    p.add_argument("--split", choices=["test", "validation"], default="test")
    p.add_argument("--allow-other-items", action="store_true",
                   help="evaluate a model trained on other items than the snapshot's (items it does not know score "
                   "-inf); without it such a pair is refused")
    return p


_NOT_METRICS = ("n_users", "n_items", "n_items_known")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from recvae import pipeline
    from recvae.serving.items import ItemMismatchError

    try:
        metrics = pipeline.evaluate_model_uri(args.model, args.snapshot, args.split,
                                              allow_other_items=args.allow_other_items)
    except ItemMismatchError as exc:
        raise ItemMismatchError(f"{exc}; --allow-other-items evaluates it anyway") from exc
    rows = [("metric", "value", "stderr")]
    for k, v in metrics.items():
        if not k.endswith("_stderr") and k not in _NOT_METRICS:
            rows.append((k, f"{v:.4f}", f"{metrics.get(k + '_stderr', float('nan')):.4f}"))
    print(grid(rows))
    known, total = int(metrics["n_items_known"]), int(metrics["n_items"])
    print(f"{args.model} on {metrics['n_users']:,} {args.split} users; it knows {known:,} of the snapshot's "
          f"{total:,} items ({known / max(total, 1):.1%})")
    return 0


def add_compare(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compare", help="a table of MLflow runs and their metrics, best first")
    p.add_argument("--experiment", default="recvae")
    p.add_argument("--metric", default="val_ndcg@100", help="sort key (default: val_ndcg@100)")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--snapshot", metavar="ID", help="only runs trained on this snapshot (the snapshot_id column)")
    return p


def cmd_compare(args: argparse.Namespace) -> int:
    from recvae import tracking

    df = tracking.compare_runs(args.experiment, metric=args.metric, snapshot=args.snapshot)
    # the validation score of the model each run kept (a trained run's best epoch), which ranks the table
    wanted = ["run_id", "run_name", "model_kind", "status", "snapshot_id", f"model_{tracking.metric_key(args.metric)}",
              "test_ndcg_at_100", "test_recall_at_20", "test_recall_at_50", "best_epoch"]
    if args.limit < 1:
        raise ConfigError(f"--limit must be >= 1; got {args.limit}")
    df = df[[c for c in wanted if c in df.columns]].head(args.limit)
    if "run_id" in df:
        df = df.assign(run_id=df["run_id"].str[:8])
    empty = f"no runs on snapshot {args.snapshot}" if args.snapshot else "no runs"
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}") if len(df) else empty)
    return 0


def add_promote(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("promote",
                              help="point an alias (default champion) at a registered version, e.g. a rollback")
    p.add_argument("--name", default="recvae")
    p.add_argument("--version", required=True)
    p.add_argument("--alias", default="champion")
    return p


def cmd_promote(args: argparse.Namespace) -> int:
    from recvae import tracking

    old = tracking.promote(args.name, args.version, args.alias)
    print(f"{args.name}@{args.alias}: {old} -> {args.version}")
    return 0

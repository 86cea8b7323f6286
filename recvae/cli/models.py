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
    p.add_argument("--log", action="store_true",
                   help="keep the results in the model's MLflow run: per-user values (for compare --against), "
                   "segments and beyond-accuracy metrics (the snapshot must be the one it was trained on)")
    p.add_argument("--history-thresholds", metavar="LIGHT_MAX,MEDIUM_MAX",
                   help="with --log: user segments by history length (default: the training users' terciles)")
    return p


def _thresholds(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--history-thresholds must be two numbers LIGHT_MAX,MEDIUM_MAX; got {text!r}") from None
    return low, high


_NOT_METRICS = ("n_users", "n_items", "n_items_known")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from recvae import pipeline
    from recvae.serving.items import ItemMismatchError

    if args.log:
        return _evaluate_and_log(args)
    if args.history_thresholds:
        raise ConfigError("--history-thresholds goes with --log")
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


def _evaluate_and_log(args: argparse.Namespace) -> int:
    from recvae.pipeline.reports import log_model_evaluation

    if args.allow_other_items:
        raise ConfigError("--log keeps results for the model's own snapshot: it does not go with --allow-other-items")
    thresholds = _thresholds(args.history_thresholds)
    report = log_model_evaluation(args.model, args.snapshot, args.split, thresholds=thresholds)
    table = report.table
    rows = [("metric", "segment", "mean", "stderr", "users")]
    for r in table.itertuples(index=False):
        if r.segment == "all" or r.metric == "ndcg@100":
            rows.append((r.metric, r.segment, f"{r.mean:.4f}", f"{r.stderr:.4f}", f"{r.n_users:,}"))
    print(grid(rows))
    print(f"logged to the model's run: per-user results eval/{args.split}_per_user.parquet, "
          f"eval/{args.split}_segments.csv")
    return 0


def add_compare(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compare", help="a table of MLflow runs and their metrics, best first")
    p.add_argument("--experiment", default="recvae")
    p.add_argument("--metric", default="val_ndcg@100", help="sort key (default: val_ndcg@100)")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--snapshot", metavar="ID", help="only runs trained on this snapshot (the snapshot_id column)")
    g = p.add_argument_group("paired comparison (--against)")
    g.add_argument("--against", metavar="RUN_OR_URI",
                   help="compare every other run on this run's snapshot with it, user by user, from their kept "
                   "per-user results: a run id, runs:/ID/model, models:/NAME/VERSION or models:/NAME@ALIAS")
    g.add_argument("--run", dest="runs", action="append", metavar="RUN_OR_URI",
                   help="compare only with this run (repeatable; it must be on the same snapshot)")
    g.add_argument("--metrics", default=None, metavar="M1,M2",
                   help="metrics to compare (default: ndcg@100,recall@20,recall@50; 'all' for every kept one, "
                   "e.g. ndcg@100.items_tail)")
    g.add_argument("--split", choices=["test", "validation"], default="test")
    g.add_argument("--confidence", type=float, default=0.95, help="level of the verdicts (default: 0.95)")
    g.add_argument("--no-log", action="store_true", help="do not log the comparison into the reference run")
    return p


def cmd_compare(args: argparse.Namespace) -> int:
    from recvae import tracking

    if args.against:
        return _compare_against(args)
    if args.runs:
        raise ConfigError("--run needs --against (the reference run)")
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


def _compare_against(args: argparse.Namespace) -> int:
    from recvae import tracking

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    out = tracking.compare_against(args.against, split=args.split, confidence=args.confidence, metrics=metrics,
                                   runs=args.runs, snapshot=args.snapshot, log=not args.no_log)
    ref = out.reference
    level = f"{args.confidence:.0%}" if round(args.confidence * 100, 6).is_integer() else str(args.confidence)
    print(f"reference: {ref['run_name']} {ref['run_id'][:8]} ({ref['model_kind']}) on snapshot {ref['snapshot_id']}, "
          f"{args.split} users; diff = run - reference, {level} t interval")
    rows = [("run", "metric", "run value", "reference", "diff", "stderr", "interval", "p (t)", "p (wilcoxon)",
             "users", "verdict")]
    for r in out.rows:
        rows.append((f"{r['run_name']} {r['run_id'][:8]}", r["metric"], f"{r['candidate']:.4f}",
                     f"{r['reference']:.4f}", f"{r['diff']:+.4f}", f"{r['stderr']:.4f}",
                     f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]", _p(r["t_pvalue"]), _p(r["wilcoxon_pvalue"]),
                     f"{r['n_users']:,}", r["verdict"]))
    print(grid(rows) if out.rows else "no other run on this snapshot has per-user results")
    for r in out.not_comparable:
        print(f"{r['run_name']} {r['run_id'][:8]}: {r['reason']}")
    if out.artifacts:
        print(f"logged {', '.join(out.artifacts)} into run {ref['run_id']}")
    return 0


def _p(value: float) -> str:
    return "nan" if value != value else (f"{value:.2e}" if value < 1e-3 else f"{value:.3f}")


def add_promote(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("promote",
                              help="point an alias (default champion) at a registered version, e.g. a rollback")
    p.add_argument("--name", default="recvae")
    p.add_argument("--version", required=True)
    p.add_argument("--alias", default="champion")
    p.add_argument("--min-confidence", type=float, default=None, metavar="LEVEL",
                   help="move the alias only if the version beats the one it points at now significantly at this "
                   "level (paired one-sided t-test of per-user NDCG@100 on the snapshot's validation users)")
    p.add_argument("--snapshot", metavar="DIR",
                   help="with --min-confidence: the snapshot whose validation users decide (default: the latest)")
    return p


def cmd_promote(args: argparse.Namespace) -> int:
    from recvae import pipeline, tracking

    if args.min_confidence is not None:
        pipeline.check_min_confidence(args.min_confidence)
        current = tracking.get_alias(args.name, tracking.check_alias(args.alias))
        version = tracking.check_version(args.name, args.version)
        if current is not None and current != version:
            test = pipeline.significance_gate(args.name, version, current, args.snapshot, args.min_confidence)
            numbers = (f"diff {test['diff']:+.4f}, stderr {test['stderr']:.4f}, p {test['p_value']:.3g} on "
                       f"{test['n_users']:,} validation users")
            if not test["significant"]:
                print(f"{args.name}@{args.alias}: kept {current}: version {version} is not significantly better at "
                      f"confidence {args.min_confidence} ({numbers})")
                return 1
            print(f"version {version} beats {current} at confidence {args.min_confidence} ({numbers})")
    old = tracking.promote(args.name, args.version, args.alias)
    print(f"{args.name}@{args.alias}: {old} -> {args.version}")
    return 0

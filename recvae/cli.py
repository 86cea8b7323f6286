"""The `recvae` command line: one `_add_<name>(subparsers)` + `cmd_<name>(args)` pair per command in COMMANDS."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from recvae.config import Config, ConfigError, apply_overrides
from recvae.data.snapshot import Snapshot
from recvae.log import mask_secrets, parse_level, setup_logging
from recvae.models.kinds import BASELINE_KINDS, MODEL_KINDS

logger = logging.getLogger(__name__)

EXIT_USAGE = 2  # bad input or arguments: one-line message, no traceback (unless --log-level DEBUG)
EXIT_INTERNAL = 70  # an unexpected internal error (sysexits' EX_SOFTWARE): traceback kept, labelled as a bug


def _reported_errors() -> tuple[type[BaseException], ...]:
    """Errors that end in one `error:` line: the user's, and faults of a service (recvae.errors)."""
    from recvae.errors import fault_errors, user_errors

    return (*user_errors(), *fault_errors())


# --- prepare -------------------------------------------------------------------------------------


def _add_prepare(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prepare",
        help="read, validate, preprocess and split a dataset into a snapshot",
        description="Read a named dataset or an input file, validate, binarize/filter, split, and save a snapshot. "
        "Without --dataset or --input the synthetic 'small' preset is used.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", metavar="NAME", help="a named dataset (ml-100k, ml-1m, ml-1m-pro-sg, ml-20m, gowalla, "
                     "synthetic, ...), looked up in $RECVAE_DATA_HOME then ~/.cache/recvae")
    src.add_argument("--input", metavar="PATH", help="an input file or folder (for --format sql: a SQLAlchemy URL)")
    p.add_argument("--format", choices=["movielens", "csv", "parquet", "pro_sg", "lightgcn", "sql"],
                   help="format of --input (default: guessed from the name)")
    p.add_argument("--user-col", default="user", help="user id column (csv, parquet, sql); default: user")
    p.add_argument("--item-col", default="item", help="item id column; default: item")
    p.add_argument("--rating-col", default="rating", help="rating column, or 'none' for implicit data; default: rating")
    p.add_argument("--time-col", default="timestamp", help="timestamp column, or 'none'; default: timestamp")
    p.add_argument("--sep", default=None, help="csv field separator (default ',' or tab for .tsv); '\\t' for tab")
    p.add_argument("--id-type", choices=["auto", "int", "str"], default="auto",
                   help="id type of csv/parquet/sql ids; auto: integers if every id is one within int64, else text")
    p.add_argument("--encoding", default="utf-8", help="csv text encoding (default utf-8), e.g. latin-1")
    p.add_argument("--implicit", action="store_true", help="every row is a positive: no binarization")
    p.add_argument("--sql-query", metavar="SQL", help="table name or SELECT query for --format sql")
    p.add_argument("--out", required=True, metavar="DIR", help="snapshot folder to write (must not hold another snapshot)")
    p.add_argument("--previous", metavar="SNAPSHOT_DIR", help="earlier snapshot whose user/item indices are kept")
    p.add_argument("--lenient", action="store_true", help="drop and quarantine bad rows instead of failing")
    p.add_argument("--quarantine", metavar="FILE", help="where lenient mode writes bad rows (.csv or .parquet); "
                   "default: <out>.quarantine.csv")
    p.add_argument("--force", action="store_true", help="overwrite an existing --quarantine file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. data.threshold=none or split.n_heldout_users=1000 (repeatable)")
    p.add_argument("--seed", type=int, help="seed of the split (and of the synthetic generator)")
    return p


def _source_from_args(args: argparse.Namespace) -> Any:
    from recvae.data import datasets
    from recvae.data.readers import Source

    if args.dataset:
        return datasets.resolve(args.dataset, seed=args.seed)
    if not args.input:
        if args.format:
            raise ConfigError("--format needs --input")
        params = {"preset": "small", "seed": args.seed if args.seed is not None else 0}
        return Source(format="synthetic", dataset="synthetic", synthetic=params)
    none = lambda v: None if v is None or v.strip().lower() in ("", "none", "null") else v  # noqa: E731
    kwargs: dict[str, Any] = dict(
        user_col=args.user_col,
        item_col=args.item_col,
        rating_col=None if args.implicit else none(args.rating_col),
        time_col=none(args.time_col),
        id_type=args.id_type,
        encoding=args.encoding,
        implicit=args.implicit or none(args.rating_col) is None,
    )
    if args.sep is not None:
        kwargs["sep"] = "\t" if args.sep in ("\\t", "tab", "TAB") else args.sep
    if args.format == "sql" or (args.format is None and "://" in args.input):
        if not args.sql_query:
            raise ConfigError("--format sql needs --sql-query (a table name or a SELECT query)")
        return Source(format="sql", path=args.input, query=args.sql_query, **kwargs)
    if args.format:
        return Source(format=args.format, path=args.input, **kwargs)
    return Source.from_path(args.input, **kwargs)


def cmd_prepare(args: argparse.Namespace) -> int:
    from recvae.data.prepare import prepare

    config = Config()
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"split.seed={args.seed}")
    if args.lenient:
        overrides.append("data.lenient=true")
    config = apply_overrides(config, overrides).validate()
    source = _source_from_args(args)
    snap = prepare(source, args.out, config, previous=args.previous, quarantine=args.quarantine, force=args.force)
    print(format_summary(snap))
    return 0


def format_summary(snap: Snapshot) -> str:
    """A short table: users, interactions and density per part, then the snapshot id and location."""
    rows = [("part", "users", "interactions", "density")]
    for name, s in snap.summary().items():
        rows.append((name, f"{s['users']:,}", f"{s['interactions']:,}", f"{s['density']:.5f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)) for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    report = snap.manifest.get("validation") or {}
    if report.get("rows_dropped"):
        lines.append(f"dropped {report['rows_dropped']:,} bad row(s); quarantine: {report.get('quarantine')}")
    lines.append(
        f"snapshot {snap.snapshot_id}: {len(snap.users):,} users x {snap.n_items:,} items"
        + (f" -> {snap.path}" if snap.path else "")
    )
    return "\n".join(lines)


# --- train / baseline / evaluate / compare / promote -----------------------------------------------


def _add_train(subparsers: Any) -> argparse.ArgumentParser:
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
    return _add_registry_args(p)


def _add_registry_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--experiment and --name, for commands that log a model and register it."""
    p.add_argument("--experiment", default="recvae", help="MLflow experiment (default: recvae)")
    p.add_argument("--name", default="recvae", help="registered model name (default: recvae); 'none' to not register")
    return p


def _registered_name(args: argparse.Namespace) -> str | None:
    return None if args.name.lower() == "none" else args.name


def cmd_train(args: argparse.Namespace) -> int:
    from recvae import pipeline

    out = pipeline.train_step(args.snapshot, overrides=args.overrides, kind=args.model, experiment=args.experiment,
                              model_name=_registered_name(args), resume=args.resume, reuse_finished=False)
    print(format_table([out]))
    return 0


def _add_baseline(subparsers: Any) -> argparse.ArgumentParser:
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
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"expected NAME=VALUE, got {item!r}")
        try:
            out[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            out[key.strip()] = value
    return out


def cmd_baseline(args: argparse.Namespace) -> int:
    from recvae import pipeline

    out = pipeline.baseline_step(args.kind, args.snapshot, params=_parse_params(args.param) or None,
                                 experiment=args.experiment)
    print(format_table([out]))
    return 0


def _add_ensemble(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("ensemble", help="combine trained models (e.g. seeds of one config) into one, logged to MLflow",
                              description="Average the members' softmax over the items, evaluate the ensemble on the "
                              "snapshot's validation and test users, log it as its own run and register a version "
                              "(alias 'challenger').")
    p.add_argument("--model", dest="models", action="append", required=True, metavar="URI",
                   help="a member: models:/NAME/VERSION, runs:/RUN_ID/model or a model folder (at least 2)")
    p.add_argument("--snapshot", metavar="DIR", help="snapshot folder (default: the latest built by the pipeline)")
    return _add_registry_args(p)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from recvae import pipeline

    out = pipeline.ensemble_step(args.models, args.snapshot, experiment=args.experiment,
                                 model_name=_registered_name(args))
    print(format_table([out]))
    return 0


def _add_evaluate(subparsers: Any) -> argparse.ArgumentParser:
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
    print(_grid(rows))
    known, total = int(metrics["n_items_known"]), int(metrics["n_items"])
    print(f"{args.model} on {metrics['n_users']:,} {args.split} users; it knows {known:,} of the snapshot's "
          f"{total:,} items ({known / max(total, 1):.1%})")
    return 0


def _add_compare(subparsers: Any) -> argparse.ArgumentParser:
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
    df = df[[c for c in wanted if c in df.columns]].head(args.limit)
    if "run_id" in df:
        df = df.assign(run_id=df["run_id"].str[:8])
    empty = f"no runs on snapshot {args.snapshot}" if args.snapshot else "no runs"
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}") if len(df) else empty)
    return 0


def _add_promote(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("promote", help="point an alias (default champion) at a registered version, e.g. a rollback")
    p.add_argument("--name", default="recvae")
    p.add_argument("--version", required=True)
    p.add_argument("--alias", default="champion")
    return p


def cmd_promote(args: argparse.Namespace) -> int:
    from recvae import tracking

    old = tracking.promote(args.name, args.version, args.alias)
    print(f"{args.name}@{args.alias}: {old} -> {args.version}")
    return 0


# --- recommend / db ----------------------------------------------------------------------------------


def _add_recommend(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("recommend", help="top-N for every user (or given users) into the recommendation tables",
                              description="Score users in chunks, remove seen items, keep the top N, write them to a "
                              "staging batch and publish it atomically.")
    p.add_argument("--model", default="models:/recvae@champion", metavar="URI")
    p.add_argument("--snapshot", metavar="DIR", help="snapshot whose users are scored (default: the latest)")
    p.add_argument("--users", metavar="FILE", help="CSV of user,item histories to fold in (users not in training); "
                   "the lists go to --out (or stdout), not to the published tables")
    p.add_argument("--user-ids", metavar="ID", nargs="+", help="score only these users of the snapshot (to --out/stdout)")
    p.add_argument("--out", metavar="CSV", help="where --users/--user-ids lists are written (default: stdout)")
    p.add_argument("--top-n", type=int, default=100)
    p.add_argument("--db", metavar="URL", help="SQLAlchemy URL (default: $RECVAE_DB_URL, else SQLite under .recvae)")
    p.add_argument("--batch-key", help="idempotency key: the same key never writes twice (default: a new one)")
    p.add_argument("--chunk-size", type=int, help="users scored at a time (bounds memory; default: about 50M scores "
                   "a chunk, e.g. 1,000 users at 50,000 items)")
    p.add_argument("--keep", type=int, default=5, help="published batches kept")
    return p


def cmd_recommend(args: argparse.Namespace) -> int:
    import uuid

    from recvae import pipeline, tracking
    from recvae.paths import default_db_url
    from recvae.serving.recommend import recommend_to_store
    from recvae.serving.store import RecommendationStore

    if args.top_n < 1:
        raise ConfigError("--top-n must be >= 1")
    if args.keep < 1:
        raise ConfigError(f"--keep must be >= 1 (published batches kept, the current one included); got {args.keep}")
    from recvae.serving.recommend import default_chunk_size

    rec, info = tracking.load_recommender_from_uri(args.model)
    args.chunk_size = args.chunk_size or default_chunk_size(rec.n_items)
    if args.users or args.user_ids:
        # A subset is an ad-hoc answer, never a batch: publishing it would replace everyone's current lists.
        from recvae.serving.recommend import build_input, topn_frame

        source: Any = args.users or pipeline._load_snapshot(args.snapshot)
        if not args.users:
            pipeline.align_model(rec, source, args.model)
        inp = build_input(rec, source, users=args.user_ids)
        frame = topn_frame(rec, inp, top_n=args.top_n, chunk_size=args.chunk_size)
        if args.out:
            frame.to_csv(args.out, index=False)
            print(f"{frame['user'].nunique():,} users, {len(frame):,} rows -> {args.out}")
        else:
            print(frame.to_csv(index=False), end="")
        for note in inp.notes():  # after the lists; on stderr when the lists themselves go to stdout
            print(note, file=sys.stdout if args.out else sys.stderr)
        return 0
    snap = pipeline._load_snapshot(args.snapshot)
    pipeline.align_model(rec, snap, args.model)
    with RecommendationStore(args.db or default_db_url(), keep=args.keep) as store:
        summary = recommend_to_store(
            rec, snap, store, args.top_n, args.batch_key or f"cli-{uuid.uuid4().hex[:12]}",
            info.name or info.kind, model_version=info.version, run_id=info.run_id, snapshot_id=snap.snapshot_id,
            chunk_size=args.chunk_size, keep=args.keep, item_metadata=pipeline.item_metadata(snap),
        )
    print(format_table([summary.to_dict()]))
    return 0


def _add_db(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("db", help="the recommendation tables: init, status, gc, run a query from sql/queries",
                              description="init: create (or migrate) the tables; status: the latest batches; gc: fail "
                              "staging batches abandoned by a crashed writer and delete the rows and titles of failed "
                              "and expired batches; query NAME: run sql/queries/NAME.sql; schema: print the DDL.")
    p.add_argument("action", choices=["init", "status", "gc", "query", "schema"])
    p.add_argument("query", nargs="?", help="query name for 'query' (a file in sql/queries without .sql)")
    p.add_argument("--db", metavar="URL", help="SQLAlchemy URL (default: $RECVAE_DB_URL, else SQLite under .recvae)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="query parameter (repeatable)")
    p.add_argument("--stale-after", type=float, metavar="SECONDS",
                   help="gc: a staging batch with no activity for this long and no shard being written is abandoned "
                   "(default: 6 hours; keep it above the longest wait between a batch's steps)")
    return p


def cmd_db(args: argparse.Namespace) -> int:
    from recvae.paths import default_db_url
    from recvae.serving.store import RecommendationStore, parse_query_params, query_names, schema_sql

    if args.action == "query" and not args.query:
        raise ConfigError(f"db query needs a query name; known: {', '.join(query_names())}")
    if args.stale_after is not None and not args.stale_after >= 0:
        raise ConfigError(f"--stale-after must be >= 0 seconds; got {args.stale_after}")
    with RecommendationStore(args.db or default_db_url()) as store:
        if args.action == "schema":
            print(schema_sql(store.dialect, store.tables))
        elif args.action == "init":
            store.ensure_schema()
            print(f"schema ready in {store.url_masked}")
        elif args.action == "status":
            store.ensure_schema()
            rows = [b.__dict__ for b in store.list_batches()]
            print(format_table(rows) if rows else "no batches")
        elif args.action == "gc":
            print("\n".join(store.gc(stale_after_s=args.stale_after).lines()))
        else:
            params = parse_query_params(args.query, args.param, store.tables)  # checked before connecting
            rows = store.query(args.query, **params)
            print(format_table(rows) if rows else "no rows")
    return 0


def _add_download(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("download", help="download an official dataset archive and check its sha256")
    p.add_argument("name")
    p.add_argument("--dest", metavar="DIR", help="data home to unpack into (default: ~/.cache/recvae)")
    p.add_argument("--force", action="store_true")
    return p


def cmd_download(args: argparse.Namespace) -> int:
    from recvae.data import datasets

    path = datasets.download(args.name, args.dest, force=args.force)
    print(f"{args.name}: {path}")
    return 0


# --- pipeline ------------------------------------------------------------------------------------


def _add_pipeline(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("pipeline", help="the main job: prepare, train + baselines, promote, recommend",
                              description="Build a snapshot, train Mult-VAE and the baselines, promote the "
                              "challenger if it wins on validation, and write top-N for every user to SQL. "
                              "Defaults: synthetic data, SQLite and a local MLflow store under .recvae/.")
    p.add_argument("--dataset", default="synthetic", help="named dataset (default: synthetic)")
    p.add_argument("--input", metavar="PATH", help="an interactions file instead of --dataset")
    p.add_argument("--format", help="format of --input")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--model", choices=MODEL_KINDS, default="vae", help="the challenger (default: Mult-VAE)")
    p.add_argument("--baselines", default=",".join(BASELINE_KINDS), help="comma separated; '' for none")
    p.add_argument("--margin", type=float, default=0.0, help="NDCG@100 margin the challenger must win by")
    p.add_argument("--replace-champion-of-other-items", action="store_true",
                   help="a champion trained on other items (another data set) is replaced by a challenger that beats "
                        "the baselines, instead of an error")
    p.add_argument("--top-n", type=int, default=100)
    p.add_argument("--db", metavar="URL", help="SQLAlchemy URL (default: $RECVAE_DB_URL, else SQLite under .recvae)")
    p.add_argument("--experiment", default="recvae")
    p.add_argument("--name", default="recvae", help="registered model name")
    return p


def cmd_pipeline(args: argparse.Namespace) -> int:
    from recvae import pipeline

    result = pipeline.run_pipeline(
        dataset=args.dataset, input_path=args.input, input_format=args.format, overrides=args.overrides,
        baselines=[b for b in args.baselines.split(",") if b.strip()], margin=args.margin, top_n=args.top_n,
        db_url=args.db, experiment=args.experiment, model_name=args.name, kind=args.model,
        replace_champion_of_other_items=args.replace_champion_of_other_items,
    )
    print(format_table(result["models"]))
    print(result["decision"]["reason"])
    print(format_table([result["batch"]]))
    return 0


def _grid(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(records: list[dict[str, Any]]) -> str:
    """Records (dicts) as an aligned text table; floats with 4 decimals."""
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    return _grid([tuple(keys), *[tuple(fmt(r.get(k)) for k in keys) for r in records]])


# --- registry and entry point --------------------------------------------------------------------

Command = tuple[Callable[[Any], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]
COMMANDS: list[Command] = [
    (_add_prepare, cmd_prepare),
    (_add_train, cmd_train),
    (_add_baseline, cmd_baseline),
    (_add_ensemble, cmd_ensemble),
    (_add_evaluate, cmd_evaluate),
    (_add_compare, cmd_compare),
    (_add_promote, cmd_promote),
    (_add_recommend, cmd_recommend),
    (_add_db, cmd_db),
    (_add_download, cmd_download),
    (_add_pipeline, cmd_pipeline),
]


def _level(text: str) -> int:
    try:
        return parse_level(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


class _Subparsers:
    """Adds the global options to every command, so `--log-level` works before or after the command name."""

    def __init__(self, actions: Any, common: argparse.ArgumentParser) -> None:
        self._actions = actions
        self._common = common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("parents", [])
        kwargs["parents"] = [*kwargs["parents"], self._common]
        return self._actions.add_parser(name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered command."""
    parser = argparse.ArgumentParser(prog="recvae", description="Mult-VAE recommender pipeline")
    parser.add_argument("--log-level", type=_level, default=os.environ.get("RECVAE_LOG_LEVEL", "INFO"),
                        help="DEBUG, INFO (default), WARNING or ERROR; DEBUG also shows tracebacks")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", type=_level, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    subparsers = _Subparsers(parser.add_subparsers(dest="command", metavar="COMMAND"), common)
    for add, run in COMMANDS:
        add(subparsers).set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, with a one-line message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = args.log_level if isinstance(args.log_level, int) else _level(args.log_level)
    setup_logging(level)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except _reported_errors() as exc:
        if level <= logging.DEBUG:
            raise
        message = mask_secrets(" ".join(str(exc).split())) or type(exc).__name__
        print(f"recvae {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("recvae: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug, not bad input: keep the traceback for the report, and say so
        logger.exception("unexpected internal error")
        print(f"recvae {args.command}: internal error (a bug in recvae, not in your input): the traceback above "
              "belongs in a bug report", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())

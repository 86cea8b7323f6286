"""`recvae prepare` and `recvae download`: data in, snapshots out."""

from __future__ import annotations

import argparse
from typing import Any

from recvae.config import Config, ConfigError, apply_overrides
from recvae.data.snapshot import Snapshot


def add_prepare(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prepare",
        help="read, validate, preprocess and split a dataset into a snapshot",
        description="Read a named dataset or an input file, validate, binarize/filter, split, and save a snapshot. "
        "Without --dataset or --input the synthetic 'small' preset is used.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", metavar="NAME",
                     help="a named dataset (ml-100k, ml-1m, ml-1m-pro-sg, ml-20m, gowalla, "
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
    p.add_argument("--out", required=True, metavar="DIR",
                   help="snapshot folder to write (must not hold another snapshot)")
    p.add_argument("--previous", metavar="SNAPSHOT_DIR", help="earlier snapshot whose user/item indices are kept")
    p.add_argument("--lenient", action="store_true", help="drop and quarantine bad rows instead of failing")
    p.add_argument("--quarantine", metavar="FILE", help="where lenient mode writes bad rows (.csv or .parquet); "
                   "default: <out>.quarantine.csv")
    p.add_argument("--force", action="store_true", help="overwrite an existing --quarantine file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. data.threshold=none or split.n_heldout_users=1000 (repeatable)")
    p.add_argument("--seed", type=int, help="seed of the split (and of the synthetic generator)")
    return p


def _column(option: str | None) -> str | None:
    """A column option; None for '', 'none' or 'null' (the data has no such column)."""
    return None if option is None or option.strip().lower() in ("", "none", "null") else option


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
    kwargs: dict[str, Any] = dict(
        user_col=args.user_col,
        item_col=args.item_col,
        rating_col=None if args.implicit else _column(args.rating_col),
        time_col=_column(args.time_col),
        id_type=args.id_type,
        encoding=args.encoding,
        implicit=args.implicit or _column(args.rating_col) is None,
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


def add_download(subparsers: Any) -> argparse.ArgumentParser:
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

"""`recvae recommend` and `recvae db`: lists into the recommendation tables, and the tables themselves."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from recvae.cli.args import add_batch_key_option, add_db_option, batch_key, db_url
from recvae.cli.output import format_table
from recvae.config import ConfigError


def add_recommend(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("recommend", help="top-N for every user (or given users) into the recommendation tables",
                              description="Score users in chunks, remove seen items, keep the top N, write them to a "
                              "staging batch and publish it atomically.")
    p.add_argument("--model", default="models:/recvae@champion", metavar="URI")
    p.add_argument("--snapshot", metavar="DIR", help="snapshot whose users are scored (default: the latest)")
    p.add_argument("--users", metavar="FILE", help="CSV of user,item histories to fold in (users not in training); "
                   "the lists go to --out (or stdout), not to the published tables")
    p.add_argument("--user-ids", metavar="ID", nargs="+",
                   help="score only these users of the snapshot (to --out/stdout)")
    p.add_argument("--out", metavar="CSV", help="where --users/--user-ids lists are written (default: stdout)")
    p.add_argument("--top-n", type=int, default=100)
    add_db_option(p)
    add_batch_key_option(p)
    p.add_argument("--chunk-size", type=int, help="users scored at a time (bounds memory; default: about 50M scores "
                   "a chunk, e.g. 1,000 users at 50,000 items)")
    p.add_argument("--keep", type=int, default=5, help="published batches kept")
    add_filter_args(p)
    return p


def add_filter_args(p: argparse.ArgumentParser) -> None:
    """--allow/--deny FILE and --allow-sql/--deny-sql QUERY: business filters applied before the top-N is cut."""
    g = p.add_argument_group("business filters (applied before the top-N is cut, so a user still gets N items)")
    g.add_argument("--allow", metavar="FILE", help="only recommend the item ids in FILE (one per line)")
    g.add_argument("--deny", metavar="FILE", help="never recommend the item ids in FILE (one per line)")
    g.add_argument("--allow-sql", metavar="QUERY", help="only recommend the items a SQL table or read-only query on "
                   "--db returns (its item_id column, else its first)")
    g.add_argument("--deny-sql", metavar="QUERY", help="never recommend the items a SQL table or query on --db returns")


def filter_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The item filter of the parsed filter options (see `pipeline.resolve_item_filter`)."""
    return {"allow_file": args.allow, "deny_file": args.deny, "allow_sql": args.allow_sql, "deny_sql": args.deny_sql}


def cmd_recommend(args: argparse.Namespace) -> int:
    from recvae import pipeline, tracking

    if args.top_n < 1:
        raise ConfigError("--top-n must be >= 1")
    if args.keep < 1:
        raise ConfigError(f"--keep must be >= 1 (published batches kept, the current one included); got {args.keep}")
    if args.chunk_size is not None and args.chunk_size < 1:
        raise ConfigError(f"--chunk-size must be >= 1 (users scored at a time); got {args.chunk_size}")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise ConfigError(f"--out {args.out}: folder {Path(args.out).resolve().parent} does not exist")
    if args.out and Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out}: is a folder; give a CSV file name")
    if not (args.users or args.user_ids):  # every user: a batch in the tables, by the pipeline's scoring steps
        summary = pipeline.score_step(
            model_uri=args.model, snapshot_dir=args.snapshot, top_n=args.top_n, db_url=db_url(args),
            batch_key=batch_key(args), retention=args.keep,
            chunk_size=args.chunk_size, item_filter=filter_spec(args),
        )
        print(format_table([summary]))
        return 0
    # A subset is an ad-hoc answer, never a batch: publishing it would replace everyone's current lists.
    from recvae.serving.recommend import build_input, default_chunk_size, topn_frame

    rec, _ = tracking.load_recommender_from_uri(args.model)
    item_filter = pipeline.resolve_item_filter(filter_spec(args), db_url(args))
    chunk_size = args.chunk_size or default_chunk_size(rec.n_items)
    source: Any = args.users or pipeline.load_snapshot(args.snapshot)
    if not args.users:
        pipeline.align_model(rec, source, args.model)
    inp = build_input(rec, source, users=args.user_ids)
    frame = topn_frame(rec, inp, top_n=args.top_n, chunk_size=chunk_size, item_filter=item_filter)
    if args.out:
        frame.to_csv(args.out, index=False)
        print(f"{frame['user'].nunique():,} users, {len(frame):,} rows -> {args.out}")
    else:
        print(frame.to_csv(index=False), end="")
    for note in inp.notes():  # after the lists; on stderr when the lists themselves go to stdout
        print(note, file=sys.stdout if args.out else sys.stderr)
    return 0


def add_db(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("db", help="the recommendation tables: init, status, gc, run a query from sql/queries",
                              description="init: create (or migrate) the tables; status: the latest batches; gc: fail "
                              "staging batches abandoned by a crashed writer and delete the rows and titles of failed "
                              "and expired batches; query NAME: run sql/queries/NAME.sql; schema: print the DDL.")
    p.add_argument("action", choices=["init", "status", "gc", "query", "schema"])
    p.add_argument("query", nargs="?", help="query name for 'query' (a file in sql/queries without .sql)")
    add_db_option(p)
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="query parameter (repeatable)")
    p.add_argument("--stale-after", type=float, metavar="SECONDS",
                   help="gc: a staging batch with no activity for this long and no shard being written is abandoned "
                   "(default: 6 hours; keep it above the longest wait between a batch's steps)")
    return p


def cmd_db(args: argparse.Namespace) -> int:
    from recvae.serving.store import OutputStore, RecommendationStore, parse_query_params, query_names, schema_sql
    from recvae.serving.store.outputs import OUTPUT_QUERIES
    from recvae.serving.store.sqlfiles import outputs_sql

    if args.action == "query" and not args.query:
        raise ConfigError(f"db query needs a query name; known: {', '.join(query_names())}")
    if args.stale_after is not None and not 0 <= args.stale_after < float("inf"):
        raise ConfigError(f"--stale-after must be a finite number of seconds >= 0; got {args.stale_after}")
    url = db_url(args)
    with RecommendationStore(url) as store:
        if args.action == "schema":
            print(schema_sql(store.dialect, store.tables))
            print(outputs_sql(store.dialect, store.tables))
        elif args.action == "init":
            store.ensure_schema()
            with OutputStore(url) as outputs:
                outputs.ensure_schema()
            print(f"schema ready in {store.url_masked}")
        elif args.action == "status":
            store.ensure_schema()
            rows = [b.__dict__ for b in store.list_batches()]
            print(format_table(rows) if rows else "no batches")
        elif args.action == "gc":
            print("\n".join(store.gc(stale_after_s=args.stale_after).lines()))
        else:
            params = parse_query_params(args.query, args.param, store.tables)  # checked before connecting
            if args.query in OUTPUT_QUERIES:  # anomalies, similar items: the output tables
                with OutputStore(url) as outputs:
                    rows = outputs.query(args.query, **params)
            else:
                rows = store.query(args.query, **params)
            print(format_table(rows) if rows else "no rows")
    return 0

"""Recommendation tables in SQLite or PostgreSQL: staging batches (rows and item titles), atomic publish, retention,
and clean-up of batches abandoned by a crashed writer.

`RecommendationStore` is the entry point; the modules hold its parts: `database` (URL, engine, transactions),
`schema` (DDL and migration), `batches` (begin, fail, publish), `retention` (expiry, abandoned batches, clean-up),
`writers` (shard rows: SQLite executemany, PostgreSQL COPY; item titles), `reader` (batches, named queries),
`sqlfiles` (the packaged SQL files), `names` (validated table names) and `records` (the dataclasses)."""

from recvae.data.item_metadata import read_item_metadata  # where it lived before; the store loads titles with it
from recvae.serving.store.errors import StoreError
from recvae.serving.store.names import IDENTIFIER_RE, IdentifierError, TableNames, validate_identifier
from recvae.serving.store.outputs import OutputStore, OutputSummary
from recvae.serving.store.recommendation_store import RecommendationStore
from recvae.serving.store.records import DONE_STATUSES, STATUSES, Batch, BatchSummary, GcReport, RecChunk
from recvae.serving.store.sqlfiles import (
    DIALECTS,
    INTEGER_PARAMS,
    SQL_DIR_ENV,
    check_query_params,
    load_query,
    parse_query_params,
    query_names,
    query_params,
    render_sql,
    schema_sql,
    split_statements,
    sql_dir,
    strip_comments,
)

__all__ = [
    "DIALECTS", "DONE_STATUSES", "IDENTIFIER_RE", "INTEGER_PARAMS", "SQL_DIR_ENV", "STATUSES", "Batch", "BatchSummary",
    "GcReport", "IdentifierError", "OutputStore", "OutputSummary", "RecChunk", "RecommendationStore", "StoreError",
    "TableNames", "check_query_params",
    "load_query", "parse_query_params", "query_names", "query_params", "read_item_metadata", "render_sql",
    "schema_sql", "split_statements", "sql_dir", "strip_comments", "validate_identifier",
]

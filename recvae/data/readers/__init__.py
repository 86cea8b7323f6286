"""One reader per source format -> interactions DataFrame (user, item, rating[, timestamp]) or, for
already-split formats (pro_sg, LightGCN), a Snapshot.

Every interactions frame has int64 or str raw ids, float64 ratings (1.0 for implicit data), int64
timestamps in seconds when the source has them, and an index holding each row's position in the
source: the 1-based line number of a text file (a header is line 1) or the 1-based row number of a
Parquet file, SQL result or generated frame. Bad input raises DataValidationError naming file,
line/row and column, unless the Validator is lenient (bad rows are then dropped and recorded).
Ids beyond int64 are never wrapped: they are read as text (id_type "auto" or "str") or refused ("int").

Modules: source (Source, format guessing), text (delimited text parsing), movielens, tabular (CSV,
Parquet), sql, pro_sg, lightgcn, fingerprint (input files and their hash), dispatch (`read`).
"""

from recvae.data.readers.common import DEFAULT_TIME_COL
from recvae.data.readers.dispatch import read
from recvae.data.readers.fingerprint import fingerprint, source_files
from recvae.data.readers.lightgcn import read_lightgcn
from recvae.data.readers.movielens import read_movielens, resolve_movielens_file
from recvae.data.readers.pro_sg import PRO_SG_PARTS, read_pro_sg
from recvae.data.readers.source import FORMATS, ID_TYPES, SNAPSHOT_FORMATS, Source, guess_format
from recvae.data.readers.sql import read_sql, table_query
from recvae.data.readers.tabular import read_csv, read_parquet
from recvae.data.snapshot import interactions_matrix
from recvae.data.validate import DataValidationError  # re-exported for callers that only need the error type
from recvae.urls import mask_url  # the one URL masker (tests check readers use it)

__all__ = [
    "DEFAULT_TIME_COL",
    "DataValidationError",
    "FORMATS",
    "ID_TYPES",
    "PRO_SG_PARTS",
    "SNAPSHOT_FORMATS",
    "Source",
    "fingerprint",
    "guess_format",
    "interactions_matrix",
    "mask_url",
    "read",
    "read_csv",
    "read_lightgcn",
    "read_movielens",
    "read_parquet",
    "read_pro_sg",
    "read_sql",
    "resolve_movielens_file",
    "source_files",
    "table_query",
]

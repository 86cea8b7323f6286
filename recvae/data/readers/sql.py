"""SQL tables and queries through a SQLAlchemy URL (its password never reaches a message)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa

from recvae.data.readers.batches import DEFAULT_BATCH_ROWS, read_batches, sql_batches, sql_keys
from recvae.data.readers.common import check_columns, finish_read, own_validator, wanted_columns
from recvae.data.validate import DataValidationError, Validator
from recvae.urls import mask_url


def read_sql(
    url: str,
    query: str,
    *,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str | None = "rating",
    time_col: str | None = "timestamp",
    id_type: str = "auto",
    validator: Validator | None = None,
    batch_rows: int | None = None,
) -> pd.DataFrame:
    """A SQL table (a bare name) or query through a SQLAlchemy URL; row numbers are 1-based result rows.

    The result is fetched `batch_rows` rows at a time through a server-side cursor into compact arrays
    (`recvae.data.readers.batches`): a result larger than memory is never held whole."""
    import sqlalchemy as sa  # only SQL sources need it

    label = f"{mask_url(url)} [{query.strip()[:80]}]"
    own, validator = own_validator(validator, label, "row")
    validator.start_file(label)
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise DataValidationError(f"bad SQLAlchemy URL ({exc})", source=mask_url(url)) from exc
    sql = table_query(query)
    try:
        keys = sql_keys(engine.connect, sql)
        wanted = wanted_columns(user_col, item_col, rating_col, time_col, keys)
        check_columns(label, keys, wanted.values(), unit="row")
        batches = sql_batches(engine.connect, sql, wanted, batch_rows or DEFAULT_BATCH_ROWS, _arrow_column)
        df = read_batches(batches, validator, id_type=id_type, names=wanted)
    except sa.exc.SQLAlchemyError as exc:
        raise DataValidationError(f"query failed: {str(exc).splitlines()[0]}", source=label) from exc
    finally:
        engine.dispose()
    return finish_read(own, validator, df, label)


def table_query(query: str) -> str:
    """`query` itself, or `SELECT * FROM name` when it is a bare (optionally schema-qualified) table name."""
    q = query.strip().rstrip(";")
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", q):
        return "SELECT * FROM " + ".".join(f'"{part}"' for part in q.split("."))
    return q


def _arrow_column(s: pd.Series) -> pa.ChunkedArray:
    """An arrow column from a SQL result column; mixed-type object columns become strings."""
    if s.dtype == object:
        values = [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in s.tolist()]
        try:
            return pa.chunked_array([pa.array(values)])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # mixed types; integers beyond int64
            return pa.chunked_array([pa.array([None if v is None else str(v) for v in values], type=pa.string())])
    return pa.chunked_array([pa.Array.from_pandas(s)])

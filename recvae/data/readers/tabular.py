"""Tables with named columns: delimited text with a header (CSV, TSV) and Parquet files or folders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recvae.data.readers.batches import DEFAULT_BATCH_ROWS, parquet_batches, parquet_dataset, read_batches
from recvae.data.readers.common import check_columns, finish_read, own_validator, require_file, wanted_columns
from recvae.data.readers.text import header_names, read_text_table
from recvae.data.validate import DataValidationError, Positions, Validator, build_interactions, integer_text_only

logger = logging.getLogger(__name__)


def read_csv(
    path: str | Path,
    *,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str | None = "rating",
    time_col: str | None = "timestamp",
    sep: str = ",",
    id_type: str = "auto",
    encoding: str = "utf-8",
    validator: Validator | None = None,
) -> pd.DataFrame:
    """A delimited text file with a header line, columns named by the arguments (rating/time optional)."""
    path = Path(path)
    own, validator = own_validator(validator, path, "line")
    validator.start_file(path)
    require_file(path)
    if len(sep) != 1:
        raise DataValidationError(f"the separator must be one character; got {sep!r}", source=path)
    if path.stat().st_size == 0:
        raise DataValidationError("empty file", source=path)
    header = header_names(path, sep, encoding)
    wanted = wanted_columns(user_col, item_col, rating_col, time_col, header)
    check_columns(path, header, wanted.values())
    types: dict[str, pa.DataType] = {}
    if rating_col:
        types[rating_col] = pa.float64()
    if id_type in ("int", "str"):
        id_arrow_type = pa.int64() if id_type == "int" else pa.string()
        types.update({user_col: id_arrow_type, item_col: id_arrow_type})

    def read(v: Validator, column_types: dict[str, pa.DataType]) -> tuple[pa.Table, Positions]:
        return read_text_table(
            path, delimiter=sep, column_names=None, include=list(dict.fromkeys(wanted.values())),
            types=column_types, quoting=True, validator=v, encoding=encoding,
        )

    table, pos = read(validator, types)
    inexact = [c for c in (user_col, item_col) if id_type == "auto" and _float_ids_inexact(table[c])]
    if inexact:
        # pyarrow reads integers beyond int64 as floats, which cannot tell ids above 2**53 apart: read those
        # columns again as text (bad lines were flagged by the first read; the second read's flags are dropped)
        text, _ = read(Validator(path, lenient=True, unit="line"), {**types, **{c: pa.string() for c in inexact}})
        for c in inexact:  # the same rows: only the types differ
            if integer_text_only(text[c]):  # else a float column (1.5, nan, 1e300): checked as floats
                logger.debug("%s: column %r re-read as text (integers beyond a float's precision)", path, c)
                table = table.set_column(table.schema.get_field_index(c), c, text[c])
    cols = {k: table[v] for k, v in wanted.items()}
    df = build_interactions(cols, validator, pos, id_type=id_type, names=wanted)
    return finish_read(own, validator, df, path)


def _float_ids_inexact(col: pa.ChunkedArray) -> bool:
    """Whether a column pyarrow read as floats holds a value beyond 2**53, above which floats skip integers."""
    if not pa.types.is_floating(col.type) or len(col) == 0:
        return False
    values = np.abs(np.asarray(pc.fill_null(col, 0.0).to_numpy(zero_copy_only=False), np.float64))
    return bool((values[np.isfinite(values)] >= 2.0**53).any())  # NaN and inf are flagged as they are


def read_parquet(
    path: str | Path,
    *,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str | None = "rating",
    time_col: str | None = "timestamp",
    id_type: str = "auto",
    validator: Validator | None = None,
    batch_rows: int | None = None,
) -> pd.DataFrame:
    """A Parquet file, or a folder of them (a partitioned dataset: hive folders such as day=2024-01-01 become
    columns; files in path order), with the named columns; row numbers are 1-based over the whole dataset.

    Read in record batches of `batch_rows` rows into compact arrays (`recvae.data.readers.batches`), so the
    source's size, its other columns and the width of its ids do not bound the read by memory."""
    path = Path(path)
    own, validator = own_validator(validator, path, "row")
    validator.start_file(path)
    if not path.exists():
        raise DataValidationError("file not found", source=path)
    dataset = parquet_dataset(path)
    names = list(dataset.schema.names)
    wanted = wanted_columns(user_col, item_col, rating_col, time_col, names)
    check_columns(path, names, wanted.values(), unit="row")
    batches = parquet_batches(dataset, wanted, batch_rows or DEFAULT_BATCH_ROWS, path)
    df = read_batches(batches, validator, id_type=id_type, names=wanted)
    return finish_read(own, validator, df, path)

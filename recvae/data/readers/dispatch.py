"""Reading any Source with the reader of its format."""

from __future__ import annotations

import pandas as pd

from recvae.data import synthetic
from recvae.data.readers.lightgcn import read_lightgcn
from recvae.data.readers.movielens import read_movielens
from recvae.data.readers.pro_sg import read_pro_sg
from recvae.data.readers.source import Source
from recvae.data.readers.sql import read_sql
from recvae.data.readers.tabular import read_csv, read_parquet
from recvae.data.snapshot import Snapshot
from recvae.data.validate import DataValidationError, Validator


def read(source: Source, validator: Validator | None = None) -> pd.DataFrame | Snapshot:
    """Read any Source: an interactions DataFrame, or a Snapshot for pro_sg / LightGCN folders."""
    fmt = source.format
    if fmt is None:
        raise ValueError("unresolved Source (no format): pass it through recvae.data.prepare.as_source first")
    if fmt == "synthetic":
        return _generate(source)
    if source.path is None:
        raise DataValidationError(f"a {fmt} source needs a path" + (" (the SQLAlchemy URL)" if fmt == "sql" else ""))
    if fmt == "movielens":
        return read_movielens(source.path, validator)
    if fmt == "csv":
        return read_csv(source.path, user_col=source.user_col, item_col=source.item_col, rating_col=source.rating_col,
                        time_col=source.time_col, sep=source.sep, id_type=source.id_type, encoding=source.encoding,
                        validator=validator)
    if fmt == "parquet":
        return read_parquet(source.path, user_col=source.user_col, item_col=source.item_col,
                            rating_col=source.rating_col, time_col=source.time_col, id_type=source.id_type,
                            validator=validator, batch_rows=source.batch_rows)
    if fmt == "sql":
        if not source.query:
            raise DataValidationError("a sql source needs a table name or query (--sql-query)",
                                      source=source.shown_path)
        return read_sql(source.path, source.query, user_col=source.user_col, item_col=source.item_col,
                        rating_col=source.rating_col, time_col=source.time_col, id_type=source.id_type,
                        validator=validator, batch_rows=source.batch_rows)
    if fmt == "pro_sg":
        return read_pro_sg(source.path, validator)
    if fmt == "lightgcn":
        return read_lightgcn(source.path, validator)
    raise ValueError(f"unknown source format {fmt!r}")  # pragma: no cover - Source checks the format


def _generate(source: Source) -> pd.DataFrame:
    """The generated frame of a synthetic source, its index 1-based row numbers."""
    spec = dict(source.synthetic)
    df = synthetic.generate(spec.pop("preset", "small"), **spec)
    df.index = pd.RangeIndex(1, len(df) + 1, name="row")
    return df

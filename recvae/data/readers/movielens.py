"""MovieLens ratings files: ML-100K `u.data`, ML-1M/10M `ratings.dat`, and `ratings.csv` (ML-20M and later)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recvae.data.readers.common import check_columns, finish_read, own_validator, require_file
from recvae.data.readers.text import first_line, header_names, read_text_table
from recvae.data.validate import DataValidationError, Positions, Validator, build_interactions

RATINGS_FILES = ("ratings.csv", "ratings.dat", "u.data")  # a MovieLens folder's ratings file, by release

# (arrow table, file positions, contract column -> table column, contract column -> name for messages)
_Layout = tuple[pa.Table, Positions, dict[str, str], dict[str, str]]


def ratings_file_in(folder: Path) -> Path | None:
    """The MovieLens ratings file of `folder`, or None when it has none."""
    for name in RATINGS_FILES:
        if (folder / name).exists():
            return folder / name
    return None


def resolve_movielens_file(path: Path) -> Path:
    """The ratings file of a MovieLens folder (ratings.csv, ratings.dat or u.data), or `path` itself."""
    if path.is_dir():
        found = ratings_file_in(path)
        if found is None:
            raise DataValidationError(
                "no MovieLens ratings file (ratings.csv, ratings.dat, u.data) in this folder", source=path
            )
        return found
    return path


def read_movielens(path: str | Path, validator: Validator | None = None) -> pd.DataFrame:
    """MovieLens ratings: ML-100K `u.data` (tab), ML-1M/10M `ratings.dat` (`::`), or `ratings.csv` with header
    userId,movieId,rating,timestamp (ML-20M, ML-25M, latest); the layout is detected from the first line."""
    path = resolve_movielens_file(Path(path))
    own, validator = own_validator(validator, path, "line")
    validator.start_file(path)
    require_file(path)
    if path.stat().st_size == 0:
        raise DataValidationError("empty file", source=path)
    first = first_line(path)
    if "::" in first:
        table, pos, fields, labels = _read_dat(path, validator)
    elif first.replace('"', "").replace(" ", "").lower().startswith("userid,movieid"):
        table, pos, fields, labels = _read_ratings_csv(path, validator)
    else:
        table, pos, fields, labels = _read_u_data(path, first, validator)
    cols = {k: table[v] for k, v in fields.items()}
    df = build_interactions(cols, validator, pos, id_type="int", names=labels)
    return finish_read(own, validator, df, path)


def _read_dat(path: Path, validator: Validator) -> _Layout:
    """`user::item::rating::timestamp` lines (ML-1M, ML-10M)."""
    # `::` is split on ':' so pyarrow's C parser can read it; fields 2, 4, 6 must then be empty.
    names = [f"f{i}" for i in range(7)]
    fields = {"user": "f0", "item": "f2", "rating": "f4", "timestamp": "f6"}
    seps = ["f1", "f3", "f5"]
    table, pos = read_text_table(
        path,
        delimiter=":",
        column_names=names,
        include=[*fields.values(), *seps],
        types={**_types(fields), **{s: pa.string() for s in seps}},
        quoting=False,
        validator=validator,
    )
    nonempty = np.zeros(table.num_rows, dtype=bool)
    for s in seps:
        col = table[s]
        nonempty |= np.asarray(pc.fill_null(pc.not_equal(col, ""), False).to_numpy(zero_copy_only=False), bool)
    if nonempty.any():
        expected = ["expected user::item::rating::timestamp"] * int(nonempty.sum())
        validator.flag(pos.of(nonempty), "wrong number of fields", values=expected)
        keep = ~nonempty
        table = table.filter(pa.array(keep))
        pos = Positions(explicit=pos.of(keep))
    labels = {"user": "UserID", "item": "MovieID", "rating": "Rating", "timestamp": "Timestamp"}
    return table, pos, fields, labels


def _read_ratings_csv(path: Path, validator: Validator) -> _Layout:
    """`ratings.csv` with the header userId,movieId,rating,timestamp (ML-20M and later)."""
    fields = {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}
    check_columns(path, header_names(path, ","), fields.values())
    table, pos = read_text_table(
        path, delimiter=",", column_names=None, include=list(fields.values()), types=_types(fields),
        quoting=True, validator=validator,
    )
    return table, pos, fields, fields


def _read_u_data(path: Path, first: str, validator: Validator) -> _Layout:
    """Headerless `user item rating timestamp` lines, tab-separated (ML-100K `u.data`) or comma-separated."""
    names = [f"f{i}" for i in range(4)]
    fields = {"user": "f0", "item": "f1", "rating": "f2", "timestamp": "f3"}
    delimiter = "\t" if "\t" in first else ("," if "," in first else "\t")
    table, pos = read_text_table(
        path, delimiter=delimiter, column_names=names, include=list(fields.values()), types=_types(fields),
        quoting=False, validator=validator,
    )
    labels = {"user": "user id", "item": "item id", "rating": "rating", "timestamp": "timestamp"}
    return table, pos, fields, labels


def _types(fields: dict[str, str]) -> dict[str, pa.DataType]:
    """The arrow types MovieLens columns are parsed as."""
    return {fields["user"]: pa.int64(), fields["item"]: pa.int64(), fields["rating"]: pa.float64(),
            fields["timestamp"]: pa.int64()}

"""One reader per source format -> interactions DataFrame (user, item, rating[, timestamp]) or, for
already-split formats (pro_sg, LightGCN), a Snapshot.

Every interactions frame has int64 or str raw ids, float64 ratings (1.0 for implicit data), int64
timestamps in seconds when the source has them, and an index holding each row's position in the
source: the 1-based line number of a text file (a header is line 1) or the 1-based row number of a
Parquet file, SQL result or generated frame. Bad input raises DataValidationError naming file,
line/row and column, unless the Validator is lenient (bad rows are then dropped and recorded).
Ids beyond int64 are never wrapped: they are read as text (id_type "auto" or "str") or refused ("int").
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import scipy.sparse as sp

from recvae.data.idmap import IdMap
from recvae.data.snapshot import Snapshot
from recvae.data.validate import DataValidationError, Positions, Validator, build_interactions, integer_text_only
from recvae.digest import sha256_file
from recvae.urls import mask_url

logger = logging.getLogger(__name__)

FORMATS = ("movielens", "csv", "parquet", "pro_sg", "lightgcn", "sql", "synthetic")
SNAPSHOT_FORMATS = ("pro_sg", "lightgcn")  # already split: they become a Snapshot directly
ID_TYPES = ("auto", "int", "str")
PRO_SG_PARTS = ("train", "validation_tr", "validation_te", "test_tr", "test_te")
_BLOCK_SIZE = 1 << 24
_INT64_MAX = 2**63 - 1
DEFAULT_TIME_COL = "timestamp"  # optional when left at this default: csv/parquet/sql without it have no timestamps


@dataclass
class Source:
    """Where interactions come from and how to read them (a CLI `--input`/`--dataset`, or code)."""

    format: str | None = None  # None: resolved from `dataset` or guessed from `path` (recvae.data.prepare.as_source)
    path: str | None = None  # file or folder; for `sql` the SQLAlchemy URL
    user_col: str = "user"
    item_col: str = "item"
    rating_col: str | None = "rating"  # None: implicit data (every row is a positive, rating 1.0)
    time_col: str | None = "timestamp"  # None: no timestamps; the default "timestamp" is used only if present
    sep: str = ","
    query: str | None = None  # sql: a table name or a SELECT query
    id_type: str = "auto"  # csv/parquet/sql ids: "int", "str", or "auto" (int when every value is an integer in int64)
    encoding: str = "utf-8"  # csv text encoding (e.g. "latin-1")
    implicit: bool = False  # every row is a positive: binarization is skipped
    dataset: str | None = None  # dataset name (recvae.data.datasets) this source was resolved from, or is to be
    synthetic: dict[str, Any] = field(default_factory=dict)  # synthetic: preset, seed and generator overrides

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"unknown source format {self.format!r}; formats: {', '.join(FORMATS)}")
        if self.id_type not in ID_TYPES:
            raise ValueError(f"id_type must be one of {', '.join(ID_TYPES)}; got {self.id_type!r}")
        if self.path is not None and self.format != "sql":
            self.path = str(self.path)

    @property
    def is_implicit(self) -> bool:
        """Every row is a positive: flagged so, or a csv/parquet/sql source read without a rating column."""
        return self.implicit or (self.format in ("csv", "parquet", "sql") and not self.rating_col)

    @property
    def gives_snapshot(self) -> bool:
        return self.format in SNAPSHOT_FORMATS

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the snapshot manifest (a SQL URL's password is masked)."""
        d = {k: v for k, v in asdict(self).items() if v not in (None, {}, "")}
        if self.format == "sql" and self.path:
            d["path"] = mask_url(self.path)
        if self.format in ("movielens", "pro_sg", "lightgcn", "synthetic"):
            for k in ("user_col", "item_col", "rating_col", "time_col", "sep", "id_type"):
                d.pop(k, None)
        if self.format != "csv":
            d.pop("sep", None)
            d.pop("encoding", None)
        if self.format in ("csv", "parquet", "sql"):
            d["rating_col"] = self.rating_col  # None (implicit) is worth recording
        return d

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: Any) -> Source:
        """Guess the format from a file or folder: pro_sg and LightGCN folders, MovieLens files, CSV, Parquet."""
        p = Path(path)
        fmt = kwargs.pop("format", None)
        if fmt is None:
            fmt = guess_format(p)
        if fmt == "csv" and "sep" not in kwargs and p.suffix.lower() in (".tsv", ".tab"):
            kwargs["sep"] = "\t"
        return cls(format=fmt, path=str(p), **kwargs)


def guess_format(path: Path) -> str:
    """The source format of a file or folder, from its name and (for CSV) its header."""
    if path.is_dir():
        if (path / "unique_sid.txt").exists() and (path / "train.csv").exists():
            return "pro_sg"
        if (path / "train.txt").exists() and (path / "test.txt").exists():
            return "lightgcn"
        for name in ("ratings.csv", "ratings.dat", "u.data"):
            if (path / name).exists():
                return "movielens"
        raise DataValidationError("cannot tell the format of this folder (no pro_sg, LightGCN or MovieLens files)", source=path)
    name = path.name.lower()
    for ext in (".gz", ".bz2", ".zst"):
        name = name.removesuffix(ext)
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name == "u.data" or name.endswith(".dat"):
        return "movielens"
    if name.endswith(".csv") and path.exists() and _first_line(path).replace('"', "").lower().startswith("userid,movieid"):
        return "movielens"
    return "csv"


def resolve_movielens_file(path: Path) -> Path:
    """The ratings file of a MovieLens folder (ratings.csv, ratings.dat or u.data), or `path` itself."""
    if path.is_dir():
        for name in ("ratings.csv", "ratings.dat", "u.data"):
            if (path / name).exists():
                return path / name
        raise DataValidationError("no MovieLens ratings file (ratings.csv, ratings.dat, u.data) in this folder", source=path)
    return path


# --- delimited text ------------------------------------------------------------------------------


def _first_line(path: Path, encoding: str = "utf-8") -> str:
    with pa.input_stream(str(path), compression="detect") as f:
        head = f.read(1 << 16)
    text = head.decode("utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding, errors="replace")
    return text.splitlines()[0] if text else ""


def _header_names(path: Path, sep: str, encoding: str = "utf-8") -> list[str]:
    line = _first_line(path, encoding)
    if not line.strip():
        raise DataValidationError("empty file or empty header line", source=path, position=1)
    return [c.strip() for c in next(csv.reader([line], delimiter=sep))]


def _read_text_table(
    path: Path,
    *,
    delimiter: str,
    column_names: list[str] | None,
    include: list[str],
    types: dict[str, pa.DataType],
    quoting: bool,
    validator: Validator,
    encoding: str = "utf-8",
) -> tuple[pa.Table, Positions]:
    """Fast typed read; on a parse error, re-read as strings and flag each unparsable line."""
    if path.stat().st_size == 0:
        raise DataValidationError("empty file", source=path)
    first = 1 if column_names is not None else 2  # line number of the first data row
    read_opts = dict(column_names=column_names, block_size=_BLOCK_SIZE, encoding=encoding)
    parse_opts = dict(delimiter=delimiter, ignore_empty_lines=False, newlines_in_values=False)
    if not quoting:
        parse_opts["quote_char"] = False
    convert = dict(include_columns=include, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False)
    try:
        table = pacsv.read_csv(
            str(path),
            read_options=pacsv.ReadOptions(**read_opts),
            parse_options=pacsv.ParseOptions(**parse_opts),
            convert_options=pacsv.ConvertOptions(column_types=types, **convert),
        )
        return _drop_blank_lines(table, Positions(offset=first))
    except pa.ArrowInvalid as exc:
        logger.debug("%s: fast read failed (%s); re-reading line by line", path, exc)
    bad: list[tuple[int | None, str, int, int]] = []

    def on_invalid(row: Any) -> str:
        bad.append((row.number, row.text, row.expected_columns, row.actual_columns))
        return "skip"

    try:
        table = pacsv.read_csv(
            str(path),
            read_options=pacsv.ReadOptions(use_threads=False, **read_opts),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, **parse_opts),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in include}, **convert),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError, LookupError) as exc:
        hint = " (is the encoding right?)" if "UTF8" in str(exc) or isinstance(exc, (UnicodeDecodeError, LookupError)) else ""
        raise DataValidationError(f"cannot parse the file: {str(exc).splitlines()[0]}{hint}", source=path) from exc
    if any(b[0] is None for b in bad):  # pragma: no cover - pyarrow computes numbers when single-threaded
        raise DataValidationError(f"{len(bad)} unparsable line(s)", source=path)
    numbers = np.asarray([b[0] for b in bad], dtype=np.int64)
    for number, text, expected, actual in bad:
        validator.flag([number], "wrong number of fields", values=[f"expected {expected}, got {actual}: {text}"])
    total = table.num_rows + len(bad)
    all_lines = np.arange(first, first + total, dtype=np.int64)
    lines = np.setdiff1d(all_lines, numbers, assume_unique=True) if len(bad) else all_lines
    return _drop_blank_lines(table, Positions(explicit=lines))


def _drop_blank_lines(table: pa.Table, pos: Positions) -> tuple[pa.Table, Positions]:
    """Drop rows of blank lines (every column null), which text files may have, e.g. at the end."""
    if table.num_rows == 0 or table.column(0).null_count == 0:
        return table, pos
    blank = np.ones(table.num_rows, dtype=bool)
    for col in table.columns:
        blank &= np.asarray(pc.is_null(col).to_numpy(zero_copy_only=False), bool)
    if not blank.any():
        return table, pos
    logger.debug("skipping %d blank line(s)", int(blank.sum()))
    return table.filter(pa.array(~blank)), Positions(explicit=pos.of(~blank))


def read_movielens(path: str | Path, validator: Validator | None = None) -> pd.DataFrame:
    """MovieLens ratings: ML-100K `u.data` (tab), ML-1M/10M `ratings.dat` (`::`), or `ratings.csv` with header
    userId,movieId,rating,timestamp (ML-20M, ML-25M, latest); the layout is detected from the first line."""
    path = resolve_movielens_file(Path(path))
    own, validator = _own(validator, path, "line")
    validator.start_file(path)
    _require_file(path)
    if path.stat().st_size == 0:
        raise DataValidationError("empty file", source=path)
    first = _first_line(path)
    if "::" in first:
        # `::` is split on ':' so pyarrow's C parser can read it; fields 2, 4, 6 must then be empty.
        names = [f"f{i}" for i in range(7)]
        fields = {"user": "f0", "item": "f2", "rating": "f4", "timestamp": "f6"}
        seps = ["f1", "f3", "f5"]
        table, pos = _read_text_table(
            path,
            delimiter=":",
            column_names=names,
            include=[*fields.values(), *seps],
            types={**_ml_types(fields), **{s: pa.string() for s in seps}},
            quoting=False,
            validator=validator,
        )
        nonempty = np.zeros(table.num_rows, dtype=bool)
        for s in seps:
            col = table[s]
            nonempty |= np.asarray(pc.fill_null(pc.not_equal(col, ""), False).to_numpy(zero_copy_only=False), bool)
        if nonempty.any():
            validator.flag(pos.of(nonempty), "wrong number of fields", values=["expected user::item::rating::timestamp"] * int(nonempty.sum()))
            keep = ~nonempty
            table = table.filter(pa.array(keep))
            pos = Positions(explicit=pos.of(keep))
        labels = {"user": "UserID", "item": "MovieID", "rating": "Rating", "timestamp": "Timestamp"}
    elif first.replace('"', "").replace(" ", "").lower().startswith("userid,movieid"):
        header = _header_names(path, ",")
        wanted = {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}
        _check_columns(path, header, wanted.values())
        fields = wanted
        table, pos = _read_text_table(
            path, delimiter=",", column_names=None, include=list(fields.values()), types=_ml_types(fields),
            quoting=True, validator=validator,
        )
        labels = wanted
    else:
        names = [f"f{i}" for i in range(4)]
        fields = {"user": "f0", "item": "f1", "rating": "f2", "timestamp": "f3"}
        delimiter = "\t" if "\t" in first else ("," if "," in first else "\t")
        table, pos = _read_text_table(
            path, delimiter=delimiter, column_names=names, include=list(fields.values()), types=_ml_types(fields),
            quoting=False, validator=validator,
        )
        labels = {"user": "user id", "item": "item id", "rating": "rating", "timestamp": "timestamp"}
    cols = {k: table[v] for k, v in fields.items()}
    df = build_interactions(cols, validator, pos, id_type="int", names=labels)
    return _finish(own, validator, df, path)


def _ml_types(fields: dict[str, str]) -> dict[str, pa.DataType]:
    return {fields["user"]: pa.int64(), fields["item"]: pa.int64(), fields["rating"]: pa.float64(), fields["timestamp"]: pa.int64()}


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
    own, validator = _own(validator, path, "line")
    validator.start_file(path)
    _require_file(path)
    if len(sep) != 1:
        raise DataValidationError(f"the separator must be one character; got {sep!r}", source=path)
    if path.stat().st_size == 0:
        raise DataValidationError("empty file", source=path)
    header = _header_names(path, sep, encoding)
    wanted = _wanted(user_col, item_col, rating_col, time_col, header)
    _check_columns(path, header, wanted.values())
    types: dict[str, pa.DataType] = {}
    if rating_col:
        types[rating_col] = pa.float64()
    if id_type == "int":
        types.update({user_col: pa.int64(), item_col: pa.int64()})
    elif id_type == "str":
        types.update({user_col: pa.string(), item_col: pa.string()})
    read = lambda v: _read_text_table(  # noqa: E731
        path, delimiter=sep, column_names=None, include=list(dict.fromkeys(wanted.values())), types=types,
        quoting=True, validator=v, encoding=encoding,
    )
    table, pos = read(validator)
    inexact = [c for c in (user_col, item_col) if id_type == "auto" and _float_ids_inexact(table[c])]
    if inexact:
        # pyarrow reads integers beyond int64 as floats, which cannot tell ids above 2**53 apart: read those
        # columns again as text (bad lines were flagged by the first read; the second read's flags are dropped)
        types.update({c: pa.string() for c in inexact})
        text, _ = read(Validator(path, lenient=True, unit="line"))  # the same rows: only the types differ
        for c in inexact:
            if integer_text_only(text[c]):  # else a float column (1.5, nan, 1e300): checked as floats
                logger.debug("%s: column %r re-read as text (integers beyond a float's precision)", path, c)
                table = table.set_column(table.schema.get_field_index(c), c, text[c])
    cols = {k: table[v] for k, v in wanted.items()}
    df = build_interactions(cols, validator, pos, id_type=id_type, names=wanted)
    return _finish(own, validator, df, path)


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
) -> pd.DataFrame:
    """A Parquet file (or folder of Parquet files) with the named columns; row numbers are 1-based."""
    path = Path(path)
    own, validator = _own(validator, path, "row")
    validator.start_file(path)
    if not path.exists():
        raise DataValidationError("file not found", source=path)
    try:
        schema = pq.read_schema(path) if path.is_file() else pq.ParquetDataset(path).schema
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(f"not a readable Parquet file ({exc})", source=path) from exc
    wanted = _wanted(user_col, item_col, rating_col, time_col, list(schema.names))
    _check_columns(path, list(schema.names), wanted.values(), unit="row")
    table = pq.read_table(path, columns=list(dict.fromkeys(wanted.values())))
    cols = {k: table[v] for k, v in wanted.items()}
    df = build_interactions(cols, validator, Positions(offset=1), id_type=id_type, names=wanted)
    return _finish(own, validator, df, path)


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
) -> pd.DataFrame:
    """A SQL table (a bare name) or query through a SQLAlchemy URL; row numbers are 1-based result rows."""
    import sqlalchemy as sa

    label = f"{mask_url(url)} [{query.strip()[:80]}]"
    own, validator = _own(validator, label, "row")
    validator.start_file(label)
    sql = table_query(query)
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise DataValidationError(f"bad SQLAlchemy URL ({exc})", source=mask_url(url)) from exc
    try:
        with engine.connect() as conn:
            frame = pd.read_sql_query(sa.text(sql), conn)
    except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
        cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) and exc.__cause__ else exc
        raise DataValidationError(f"query failed: {str(cause).splitlines()[0]}", source=label) from exc
    finally:
        engine.dispose()
    wanted = _wanted(user_col, item_col, rating_col, time_col, list(frame.columns))
    _check_columns(label, list(frame.columns), wanted.values(), unit="row")
    cols = {k: _arrow_column(frame[v]) for k, v in wanted.items()}
    df = build_interactions(cols, validator, Positions(offset=1), id_type=id_type, names=wanted)
    return _finish(own, validator, df, label)


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


# --- already-split formats -----------------------------------------------------------------------


def read_pro_sg(folder: str | Path, validator: Validator | None = None) -> Snapshot:
    """The folder Liang et al.'s notebook writes (train/validation_tr/validation_te/test_tr/test_te.csv with
    header uid,sid; unique_sid.txt and unique_uid.txt give the original item and user id of each index) as a
    Snapshot: items are the original item ids in sid order, users the original user ids in uid order, and the
    rows of each part are its uids in increasing order (the notebook's `uid - start_idx`)."""
    folder = Path(folder)
    own, validator = _own(validator, folder, "line")
    missing = [f for f in [*(f"{p}.csv" for p in PRO_SG_PARTS), "unique_sid.txt"] if not (folder / f).exists()]
    if missing:
        raise DataValidationError(f"not a pro_sg folder: missing {', '.join(missing)}", source=folder)
    items = IdMap(_read_id_list(folder / "unique_sid.txt"))
    parts = {p: read_csv(folder / f"{p}.csv", user_col="uid", item_col="sid", rating_col=None, time_col=None,
                         id_type="int", validator=validator) for p in PRO_SG_PARTS}
    if (folder / "unique_uid.txt").exists():
        users = IdMap(_read_id_list(folder / "unique_uid.txt"))
    else:
        n = 1 + max(int(df["user"].max()) for df in parts.values() if len(df))
        users = IdMap(np.arange(n, dtype=np.int64))
    for p, df in parts.items():
        validator.start_file(folder / f"{p}.csv")
        bad_u = df["user"].to_numpy() >= len(users)
        bad_i = df["item"].to_numpy() >= len(items)
        validator.flag(df.index[bad_u], f"uid out of range (unique_uid.txt has {len(users)} ids)", column="uid",
                       values=df["user"].to_numpy()[bad_u])
        validator.flag(df.index[bad_i], f"sid out of range (unique_sid.txt has {len(items)} ids)", column="sid",
                       values=df["item"].to_numpy()[bad_i])
        parts[p] = df[~(bad_u | bad_i)]
    n_rows = sum(len(df) for df in parts.values())
    report = validator.finish(n_rows) if own else None
    matrices, rows = {}, {}
    for part in ("train", "validation", "test"):
        names = ["train"] if part == "train" else [f"{part}_tr", f"{part}_te"]
        uids = np.unique(np.concatenate([parts[n]["user"].to_numpy() for n in names]))
        for n in names:
            df = parts[n]
            r = np.searchsorted(uids, df["user"].to_numpy())
            matrices[n] = interactions_matrix(r, df["item"].to_numpy(), len(uids), len(items))
            rows[n] = uids.astype(np.int64)
    manifest = {"protocol": "strong", "source_format": "pro_sg"}
    if report is not None:
        manifest["validation"] = report.to_dict()
    return Snapshot(matrices=matrices, rows=rows, users=users, items=items, manifest=manifest)


def read_lightgcn(folder: str | Path, validator: Validator | None = None) -> Snapshot:
    """The NGCF/LightGCN split (train.txt, test.txt; each line `user item item ...`) as a Snapshot.

    Parts: `train` = every user's train items (all users, rows in user-id order); `test_tr` = the train items
    of the users that have test items (fold-in) and `test_te` = their test items. There is no validation part:
    LightGCN picks the epoch on the test set (manifest protocol "lightgcn"). Users and items keep the files'
    0-based ids (user_list.txt / item_list.txt map them to the original ids); the item columns are
    0..max item id over both files, so test items never seen in training keep their column as in LightGCN.
    """
    folder = Path(folder)
    own, validator = _own(validator, folder, "line")
    missing = [f for f in ("train.txt", "test.txt") if not (folder / f).exists()]
    if missing:
        raise DataValidationError(f"not a LightGCN folder: missing {', '.join(missing)}", source=folder)
    tr_u, tr_i, tr_users = _read_adjacency(folder / "train.txt", validator)
    te_u, te_i, te_users = _read_adjacency(folder / "test.txt", validator)
    report = validator.finish(len(tr_u) + len(te_u)) if own else None
    all_users = np.concatenate([tr_users, te_users])
    if len(all_users) == 0:
        raise DataValidationError("no users in train.txt or test.txt", source=folder)
    n_users = int(all_users.max()) + 1
    n_items = int(max(tr_i.max(initial=-1), te_i.max(initial=-1))) + 1
    users, items = IdMap(np.arange(n_users, dtype=np.int64)), IdMap(np.arange(n_items, dtype=np.int64))
    train = interactions_matrix(tr_u, tr_i, n_users, n_items)
    test_users = np.unique(te_u)
    te_rows = np.searchsorted(test_users, te_u)
    matrices = {
        "train": train,
        "test_tr": train[test_users],
        "test_te": interactions_matrix(te_rows, te_i, len(test_users), n_items),
    }
    rows = {"train": np.arange(n_users, dtype=np.int64), "test_tr": test_users, "test_te": test_users}
    manifest: dict[str, Any] = {"protocol": "lightgcn", "source_format": "lightgcn"}
    if report is not None:
        manifest["validation"] = report.to_dict()
    return Snapshot(matrices=matrices, rows=rows, users=users, items=items, manifest=manifest)


def _read_adjacency(path: Path, validator: Validator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user per pair, item per pair, every user with a line) from a `user item item ...` file."""
    validator.start_file(path)
    users: list[int] = []
    pair_users: list[np.ndarray] = []
    pair_items: list[np.ndarray] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                ids = np.array([int(t) for t in tokens], dtype=np.int64)
            except (ValueError, OverflowError):
                ids = _checked_tokens(tokens, lineno, validator)
                if ids is None:
                    continue
            if ids[0] < 0:
                validator.flag([lineno], "negative id", column="field 1 (user)", values=[ids[0]])
                continue
            neg = ids[1:] < 0
            if neg.any():
                for k in np.flatnonzero(neg):
                    validator.flag([lineno], "negative id", column=f"field {k + 2} (item)", values=[ids[k + 1]])
                ids = np.concatenate([ids[:1], ids[1:][~neg]])
            users.append(int(ids[0]))
            pair_users.append(np.full(len(ids) - 1, ids[0], dtype=np.int64))
            pair_items.append(ids[1:])
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)  # noqa: E731
    return cat(pair_users), cat(pair_items), np.asarray(users, dtype=np.int64)


def _checked_tokens(tokens: list[str], lineno: int, validator: Validator) -> np.ndarray | None:
    """Integer tokens of a line with some bad ones: bad items are flagged and dropped; a bad user drops the line."""
    out = []
    for k, t in enumerate(tokens):
        try:
            value = int(t)
        except ValueError:
            value, reason = None, "non-numeric id"
        else:
            reason = "id beyond the int64 range" if abs(value) > _INT64_MAX else None  # negatives: the caller
        if reason is None:
            out.append(value)
            continue
        validator.flag([lineno], reason, column="field 1 (user)" if k == 0 else f"field {k + 1} (item)", values=[t])
        if k == 0:
            return None
    return np.asarray(out, dtype=np.int64)


def _read_id_list(path: Path) -> np.ndarray:
    """One raw id per line (unique_sid.txt / unique_uid.txt); integers when every line is an integer."""
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for n, ln in enumerate(lines, 1):
        if not ln:
            raise DataValidationError("empty id", source=path, position=n)
    try:
        ids: np.ndarray = np.asarray([int(x) for x in lines], dtype=np.int64)
    except (ValueError, OverflowError):  # not all integers, or some beyond int64: the ids are text
        ids = np.asarray(lines, dtype=object)
    seen: dict[Any, int] = {}
    for n, x in enumerate(ids.tolist(), 1):
        if x in seen:
            raise DataValidationError(f"duplicate id {x!r} (first at line {seen[x]})", source=path, position=n)
        seen[x] = n
    return ids


def interactions_matrix(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> sp.csr_matrix:
    """CSR (n_rows x n_cols) of float32 ones at (rows, cols); repeated pairs count once."""
    m = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
        shape=(n_rows, n_cols),
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    m.sort_indices()
    return m


# --- dispatch and fingerprint --------------------------------------------------------------------


def read(source: Source, validator: Validator | None = None) -> pd.DataFrame | Snapshot:
    """Read any Source: an interactions DataFrame, or a Snapshot for pro_sg / LightGCN folders."""
    fmt = source.format
    if fmt is None:
        raise ValueError("unresolved Source (no format): pass it through recvae.data.prepare.as_source first")
    if fmt == "synthetic":
        from recvae.data import synthetic

        spec = dict(source.synthetic)
        df = synthetic.generate(spec.pop("preset", "small"), **spec)
        df.index = pd.RangeIndex(1, len(df) + 1, name="row")
        return df
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
                            validator=validator)
    if fmt == "sql":
        if not source.query:
            raise DataValidationError("a sql source needs a table name or query (--sql-query)", source=mask_url(source.path))
        return read_sql(source.path, source.query, user_col=source.user_col, item_col=source.item_col,
                        rating_col=source.rating_col, time_col=source.time_col, id_type=source.id_type,
                        validator=validator)
    if fmt == "pro_sg":
        return read_pro_sg(source.path, validator)
    if fmt == "lightgcn":
        return read_lightgcn(source.path, validator)
    raise ValueError(f"unknown source format {fmt!r}")  # pragma: no cover - Source checks the format


def source_files(source: Source) -> list[Path]:
    """The input files a file-based source reads (empty for sql and synthetic)."""
    if source.format in ("sql", "synthetic") or source.path is None:
        return []
    p = Path(source.path)
    if source.format == "movielens":
        return [resolve_movielens_file(p)]
    if source.format == "pro_sg":
        names = [*(f"{n}.csv" for n in PRO_SG_PARTS), "unique_sid.txt", "unique_uid.txt"]
        return [p / n for n in names if (p / n).exists()]
    if source.format == "lightgcn":
        return [p / n for n in ("train.txt", "test.txt") if (p / n).exists()]
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file())
    return [p]


def fingerprint(source: Source, n_rows: int | None = None) -> dict[str, Any]:
    """sha256 of the input file(s); of the SQL query text plus row count; or of the generator parameters."""
    h = hashlib.sha256()
    if source.format == "sql":
        text = table_query(source.query or "")
        h.update(text.encode())
        h.update(f"\x1f{n_rows}".encode())
        return {"kind": "sql", "query": text, "rows": n_rows, "sha256": h.hexdigest()}
    if source.format == "synthetic":
        h.update(json.dumps(source.synthetic, sort_keys=True, default=str).encode())
        return {"kind": "synthetic", "params": source.synthetic, "sha256": h.hexdigest()}
    files = {}
    for f in source_files(source):
        digest = sha256_file(f)
        files[f.name if len(source_files(source)) == 1 else str(f.relative_to(Path(source.path)))] = digest
        h.update(f.name.encode() + b"\x1f" + digest.encode())
    return {"kind": "files", "files": files, "sha256": h.hexdigest()}


def _own(validator: Validator | None, source: str | Path, unit: str) -> tuple[bool, Validator]:
    """A strict Validator owned by the reader when the caller passes none."""
    if validator is None:
        return True, Validator(source, unit=unit)
    return False, validator


def _finish(own: bool, validator: Validator, df: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    if own:
        validator.finish(len(df))
        logger.info("%s: read %d interactions", source, len(df))
    else:
        logger.debug("%s: parsed %d rows", source, len(df))
    return df


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise DataValidationError("file not found", source=path)


def _wanted(user_col: str, item_col: str, rating_col: str | None, time_col: str | None, found: list[str]) -> dict[str, str]:
    """Contract column -> source column; the default time column 'timestamp' is optional (used when present)."""
    wanted = {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": time_col}
    if time_col == DEFAULT_TIME_COL and time_col not in found:
        wanted["timestamp"] = None
    return {k: v for k, v in wanted.items() if v}


def _check_columns(source: str | Path, found: list[str], wanted: Any, unit: str = "line") -> None:
    absent = [c for c in wanted if c not in found]
    if absent:
        raise DataValidationError(
            f"missing column(s) {', '.join(repr(c) for c in absent)} (found: {', '.join(found) or 'none'})",
            source=source,
            position=1 if unit == "line" else None,
            unit=unit,
            column=absent[0],
        )


# Re-exported for callers that only need the error type.
__all__ = [
    "DataValidationError",
    "FORMATS",
    "Source",
    "fingerprint",
    "guess_format",
    "interactions_matrix",
    "read",
    "read_csv",
    "read_lightgcn",
    "read_movielens",
    "read_parquet",
    "read_pro_sg",
    "read_sql",
    "source_files",
    "table_query",
]

"""Reading Parquet datasets and SQL results in record batches, into compact arrays, in bounded memory.

Each batch is checked by the same `build_interactions` as a whole-table read (row numbers continue across batches,
so messages name the global row), then its raw user and item ids are dictionary-encoded: each distinct id is held
once, each interaction as an int32 code per id, its float64 rating, its int64 row number and, if any, its int64
timestamp (about 24-32 bytes a row, whatever the width of the ids or of the source's other columns). Only one batch
of the source is in memory at a time.

Duplicates, thresholds, minimum counts and the split need every interaction at once (a repeated (user, item) pair
may sit in two batches, the "first" rule needs file order, counts are global), so they run afterwards, unchanged, on
`InteractionsBuilder.frame()`: the same frame a whole-table read gives (text ids become pandas' string column).

With id_type "auto" a text id column is read as integers while every value seen is an integer literal; when a
later batch holds other text, the read starts again with that column as text (one more pass over the source), so
the ids are exactly those of a whole-table read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recvae.data.validate import DataValidationError, Positions, Validator, build_interactions

logger = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 1_000_000  # rows per record batch: about 30-60 MB of arrow columns for an interactions table

# One batch of the source: the wanted arrow columns (contract name -> column) of `n` rows.
Batch = dict[str, pa.ChunkedArray]
BatchSource = Callable[[], Iterator[Batch]]


class _Dictionary:
    """Raw ids in order of first appearance, and codes for them (int32: one per interaction).

    The ids are kept in segments (a hashed pd.Index each, with the code of its first id): a batch's new ids
    become a new segment, and the last two merge while the older is not more than twice the newer, so there are
    O(log n) segments and each id is hashed again O(log n) times, not once per batch."""

    def __init__(self) -> None:
        self._segments: list[tuple[int, pd.Index]] = []
        self._n = 0
        self.kind: str | None = None  # "int" or "str": the id type the batches gave

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Codes of `values`, appending the ids not seen yet."""
        batch_codes, uniq = pd.factorize(values)  # the batch's distinct ids, in order of first appearance
        uniq = np.asarray(uniq, dtype=values.dtype)
        codes = np.full(len(uniq), -1, np.int64)
        for start, segment in self._segments:
            todo = np.flatnonzero(codes < 0)
            if len(todo) == 0:
                break
            found = segment.get_indexer(uniq[todo])
            codes[todo[found >= 0]] = start + found[found >= 0]
        new = codes < 0
        if new.any():
            codes[new] = self._n + np.arange(int(new.sum()))
            self._append(uniq[new])
        return codes[batch_codes].astype(np.int32)

    def _append(self, fresh: np.ndarray) -> None:
        """A segment of new ids; merge the last segments while they are of similar size."""
        if self._n + len(fresh) >= 2**31:
            raise DataValidationError(f"more than {2**31 - 1:,} distinct ids: beyond what int32 codes hold")
        self._segments.append((self._n, pd.Index(fresh, dtype=fresh.dtype)))
        self._n += len(fresh)
        while len(self._segments) >= 2 and len(self._segments[-2][1]) <= 2 * len(self._segments[-1][1]):
            (start, older), (_, newer) = self._segments[-2:]
            merged = np.concatenate([older.to_numpy(dtype=fresh.dtype), newer.to_numpy(dtype=fresh.dtype)])
            self._segments[-2:] = [(start, pd.Index(merged, dtype=fresh.dtype))]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Raw ids of `codes`."""
        dtype = np.int64 if self.kind == "int" else object
        return np.concatenate([segment.to_numpy(dtype=dtype) for _, segment in self._segments])[codes]

    def __len__(self) -> int:
        return self._n


class IdTypeChanged(Exception):  # noqa: N818 - a signal to read again, not an error a user sees
    """A text id column read as integers so far holds other text in a later batch."""

    def __init__(self, column: str) -> None:
        super().__init__(column)
        self.column = column


class InteractionsBuilder:
    """Checked batches -> compact arrays -> the interactions frame (see the module docstring)."""

    def __init__(self) -> None:
        self.ids = {"user": _Dictionary(), "item": _Dictionary()}
        self._parts: dict[str, list[np.ndarray]] = {"user": [], "item": [], "rating": [], "timestamp": [], "pos": []}
        self.n_rows = 0
        self._unit = "row"

    def add(self, df: pd.DataFrame) -> None:
        """Append one checked batch (build_interactions' frame); IdTypeChanged if an id column turned text."""
        for col, ids in self.ids.items():
            kind = "int" if df[col].dtype.kind in "iu" else "str"
            if len(df) and ids.kind is not None and ids.kind != kind:
                raise IdTypeChanged(col)
            if len(df):
                ids.kind = ids.kind or kind
            self._parts[col].append(ids.encode(df[col].to_numpy()))
        self._parts["rating"].append(df["rating"].to_numpy(np.float64))
        if "timestamp" in df.columns:
            self._parts["timestamp"].append(df["timestamp"].to_numpy(np.int64))
        self._parts["pos"].append(df.index.to_numpy(np.int64))
        self._unit = df.index.name or self._unit
        self.n_rows += len(df)

    def frame(self) -> pd.DataFrame:
        """The interactions (user, item, rating[, timestamp]) indexed by row number, as a whole-table read."""
        data: dict[str, np.ndarray] = {}
        for col, ids in self.ids.items():
            codes = self._take(col, np.int32)
            data[col] = ids.decode(codes) if len(ids) else np.zeros(0, np.int64)
            del codes  # one column's codes at a time: the peak is the frame plus one column
        data["rating"] = self._take("rating", np.float64)
        if self._parts["timestamp"]:
            data["timestamp"] = self._take("timestamp", np.int64)
        pos = self._take("pos", np.int64)
        return pd.DataFrame(data, index=pd.Index(pos, name=self._unit), copy=False)

    def _take(self, key: str, dtype: type) -> np.ndarray:
        """The batches' arrays of `key` as one array; the builder lets go of them."""
        parts, self._parts[key] = self._parts[key], []
        out = np.concatenate(parts) if parts else np.zeros(0, dtype)
        parts.clear()
        return out


def read_batches(
    batches: BatchSource,
    validator: Validator,
    *,
    id_type: str,
    names: dict[str, str],
) -> pd.DataFrame:
    """Check and collect every batch of `batches` (a callable that starts the read) into one frame; reads again
    with a column as text when id_type "auto" finds text in a column that looked like integers."""
    id_types = {"user": id_type, "item": id_type}
    while True:
        mark = validator.mark()
        try:
            return _collect(batches(), validator, id_types, names)
        except IdTypeChanged as changed:
            logger.info("%s: column %r holds text ids after integer ones; reading it again as text",
                        validator.file, names.get(changed.column, changed.column))
            validator.rewind(mark)
            id_types[changed.column] = "str"


def _collect(batches: Iterator[Batch], validator: Validator, id_types: dict[str, str], names: dict[str, str]
             ) -> pd.DataFrame:
    builder = InteractionsBuilder()
    seen = 0
    for cols in batches:
        n = len(cols["user"])
        df = build_interactions(cols, validator, Positions(offset=seen + 1), id_type=id_types, names=names)
        builder.add(df)
        seen += n
        logger.debug("%s: %d rows read, %d distinct users, %d distinct items", validator.file, seen,
                     len(builder.ids["user"]), len(builder.ids["item"]))
    return builder.frame()


# ---------------------------------------------------------------------------------------------------------------
# sources of batches


def parquet_dataset(path: str | Path) -> Any:
    """The pyarrow dataset of a Parquet file or folder (hive partitions such as day=2024-01-01 become columns)."""
    import pyarrow.dataset as ds

    try:
        return ds.dataset(str(path), format="parquet", partitioning="hive")
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(f"not a readable Parquet file or dataset ({exc})", source=path) from exc


def parquet_batches(dataset: Any, wanted: dict[str, str], batch_rows: int, source: str | Path) -> BatchSource:
    """Batches of the wanted columns, file by file in path order (the order of a whole-dataset read)."""
    import pyarrow.dataset as ds

    columns = list(dict.fromkeys(wanted.values()))

    def start() -> Iterator[Batch]:
        fragments = sorted(dataset.get_fragments(), key=lambda f: f.path)
        for fragment in fragments:
            scanner = ds.Scanner.from_fragment(fragment, schema=dataset.schema, columns=columns,
                                               batch_size=batch_rows)
            try:
                for batch in scanner.to_batches():
                    if batch.num_rows:
                        yield {k: pa.chunked_array([batch.column(v)]) for k, v in wanted.items()}
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataValidationError(f"not a readable Parquet file ({exc})", source=fragment.path) from exc

    return start


def sql_keys(connect: Callable[[], Any], sql: str) -> list[str]:
    """The result columns of `sql` (the query is started through a server-side cursor and closed unread)."""
    import sqlalchemy as sa

    with connect() as conn:
        result = conn.execution_options(stream_results=True).execute(sa.text(sql))
        try:
            return list(result.keys())
        finally:
            result.close()


def sql_batches(connect: Callable[[], Any], sql: str, wanted: dict[str, str], batch_rows: int,
                to_arrow: Callable[[pd.Series], pa.ChunkedArray]) -> BatchSource:
    """Batches of a query's wanted columns through a server-side cursor (`stream_results`, `yield_per`): the
    database sends `batch_rows` rows at a time instead of the whole result."""
    import sqlalchemy as sa

    def start() -> Iterator[Batch]:
        with connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(sa.text(sql))
            keys = list(result.keys())
            for rows in result.partitions(batch_rows):
                frame = pd.DataFrame.from_records(rows, columns=keys, coerce_float=True)
                yield {k: to_arrow(frame[v]) for k, v in wanted.items()}

    return start

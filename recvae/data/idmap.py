"""Stable maps from raw user/item ids to contiguous indices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


class IdMap:
    """Raw id <-> contiguous index; `extend` keeps existing indices and appends new ids."""

    def __init__(self, raw_ids: np.ndarray | pd.Index | list) -> None:
        index = pd.Index(np.asarray(raw_ids))
        if index.has_duplicates:
            dup = index[index.duplicated()][0]
            dup = dup.item() if isinstance(dup, np.generic) else dup  # 2, not np.int64(2), in the message
            raise ValueError(f"id map has duplicate raw id {dup!r}")
        self._index = index

    @classmethod
    def from_values(cls, values: np.ndarray | pd.Series) -> IdMap:
        """Map for the distinct values, in order of first appearance."""
        return cls(pd.unique(np.asarray(values)))

    def __len__(self) -> int:
        return len(self._index)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._index.equals(other._index)

    def __repr__(self) -> str:
        return f"IdMap({len(self)} ids)"

    @property
    def raw_ids(self) -> np.ndarray:
        return self._index.to_numpy()

    def extend(self, values: np.ndarray | pd.Series) -> IdMap:
        """A new map with the ids of `values` not yet mapped appended in order of first appearance."""
        new = pd.unique(np.asarray(values))
        missing = new[~pd.Index(new).isin(self._index)] if len(new) else new
        if len(missing) == 0:
            return self
        return IdMap(np.concatenate([self._index.to_numpy(dtype=object), np.asarray(missing, dtype=object)]).astype(
            _common_dtype(self._index.to_numpy(), missing)
        ))

    def to_index(self, values: np.ndarray | pd.Series | list, *, strict: bool = True) -> np.ndarray:
        """Indices of raw `values`; unknown ids raise KeyError when strict, else map to -1."""
        idx = self._index.get_indexer(np.asarray(values))
        if strict and (idx < 0).any():
            unknown = np.asarray(values)[idx < 0]
            raise KeyError(f"{int((idx < 0).sum())} unknown id(s), e.g. {unknown[:5].tolist()}")
        return idx.astype(np.int64)

    def to_raw(self, indices: np.ndarray) -> np.ndarray:
        """Raw ids of `indices`."""
        return self._index.to_numpy()[np.asarray(indices, dtype=np.int64)]

    def save(self, path: str | Path) -> None:
        """Write `index, raw_id` as Parquet."""
        pd.DataFrame({"index": np.arange(len(self), dtype=np.int64), "raw_id": self._index.to_numpy()}).to_parquet(
            path, index=False
        )

    @classmethod
    def load(cls, path: str | Path) -> IdMap:
        """Read a map written by `save`, checking the indices are 0..n-1 in order."""
        df = pd.read_parquet(path)
        if list(df.columns) != ["index", "raw_id"]:
            raise ValueError(f"{path}: expected columns index, raw_id; got {list(df.columns)}")
        if not np.array_equal(df["index"].to_numpy(), np.arange(len(df))):
            raise ValueError(f"{path}: indices are not contiguous 0..{len(df) - 1}")
        return cls(df["raw_id"].to_numpy())


def _common_dtype(a: np.ndarray, b: np.ndarray) -> np.dtype:
    b_kind = np.asarray(b).dtype.kind
    # an empty map (float64 by numpy's default) takes the dtype of the ids appended to it
    if (a.dtype.kind in "iu" or len(a) == 0) and b_kind in "iu":
        return np.dtype(np.int64)
    return np.dtype(object)

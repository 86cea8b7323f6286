"""Repeated (user, item) pairs: one key per pair, and the rules that resolve repeats (DataConfig.duplicates)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recvae.data.validate.validator import DataValidationError

logger = logging.getLogger(__name__)

DUPLICATE_RULES = ("max", "first", "error")


def resolve_duplicates(
    df: pd.DataFrame, rule: str = "max", *, source: str | Path | None = None
) -> tuple[pd.DataFrame, int]:
    """Resolve repeated (user, item) pairs; returns the frame and the number of rows removed.

    Rules (DataConfig.duplicates):
    - "max": one row per pair whose rating is the highest rating given to the pair and whose timestamp is
      the latest one; the row keeps the position (index) and place of the pair's first occurrence.
    - "first": the first occurrence in file order is kept as it is; later ones are dropped.
    - "error": raise DataValidationError naming the lines (rows) of the first repeated pair.
    """
    if rule not in DUPLICATE_RULES:
        raise ValueError(f"duplicates rule must be one of {', '.join(DUPLICATE_RULES)}; got {rule!r}")
    if len(df) == 0:
        return df, 0
    key = pair_keys(df["user"].to_numpy(), df["item"].to_numpy())
    if not has_repeats(key):
        return df, 0
    later = pd.Series(key).duplicated(keep="first").to_numpy()
    n_dup = int(later.sum())
    if rule == "error":
        raise _duplicate_error(df, key, later, source)
    out = df[~later]
    if rule == "max":
        out = _keep_max(df, key, later, out)
    logger.info("%s: resolved %d duplicate (user, item) row(s) with rule %r", source or "data", n_dup, rule)
    return out, n_dup


def _duplicate_error(df: pd.DataFrame, key: np.ndarray, later: np.ndarray, source: str | Path | None
                     ) -> DataValidationError:
    """The error naming the first repeated row and where its pair first occurred."""
    unit = df.index.name or "row"
    j = int(np.flatnonzero(later)[0])
    i = int(np.flatnonzero(key == key[j])[0])
    return DataValidationError(
        f"duplicate (user, item) pair ({df['user'].iat[j]!r}, {df['item'].iat[j]!r}), first at {unit} "
        f"{df.index[i]} ({int(later.sum())} repeated row(s) in all; set data.duplicates to 'max' or 'first')",
        source=source,
        position=int(df.index[j]),
        unit=unit,
    )


def _keep_max(df: pd.DataFrame, key: np.ndarray, later: np.ndarray, out: pd.DataFrame) -> pd.DataFrame:
    """`out` (the first row of each pair) with each repeated pair's highest rating and latest timestamp."""
    involved = pd.Series(key).duplicated(keep=False).to_numpy()
    agg_cols = [c for c in ("rating", "timestamp") if c in df.columns]
    agg = df.loc[involved, agg_cols].groupby(key[involved]).max()
    out = out.copy()
    kept_involved = involved[~later]
    kept_keys = key[~later][kept_involved]
    for c in agg_cols:
        values = out[c].to_numpy().copy()
        values[kept_involved] = agg[c].reindex(kept_keys).to_numpy()
        out[c] = values
    return out


def has_repeats(key: np.ndarray) -> bool:
    """Whether any value occurs twice; O(n) when already sorted (MovieLens files are), else one sort."""
    if len(key) < 2:
        return False
    if (key[1:] > key[:-1]).all():
        return False
    s = np.sort(key)
    return bool((s[1:] == s[:-1]).any())


def pair_keys(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """One int64 key per (user, item) pair; equal pairs get equal keys."""
    if users.dtype.kind in "iu" and items.dtype.kind in "iu" and len(users):
        umin, umax, imax, imin = users.min(), users.max(), items.max(), items.min()
        if umin >= 0 and imin >= 0 and (int(umax) + 1) * (int(imax) + 1) < 2**62:
            return users.astype(np.int64) * (int(imax) + 1) + items.astype(np.int64)
    u = pd.factorize(users)[0].astype(np.int64)
    i, uniq = pd.factorize(items)
    return u * max(1, len(uniq)) + i.astype(np.int64)

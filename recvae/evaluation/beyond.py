"""Beyond-accuracy metrics over a whole set of top-k recommendation lists: catalogue coverage, the Gini index of
item exposure, novelty as the mean popularity percentile, and intra-list diversity from item feature vectors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import scipy.sparse as sp

PAD = -1  # marks the unused tail of a list shorter than k in a padded (users, k) array

Lists: TypeAlias = np.ndarray | Sequence[Sequence[int]]
Features: TypeAlias = np.ndarray | sp.spmatrix | sp.sparray


def padded_lists(recs: Lists, k: int, n_items: int) -> np.ndarray:
    """(users, k) int64 array of each list's first k item indices in rank order, PAD after a short list's end."""
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    if isinstance(recs, np.ndarray):
        if recs.ndim != 2:
            raise ValueError(f"recommendation lists must be a (users, k) array; got shape {recs.shape}")
        arr = recs.astype(np.int64, copy=False)[:, :k]
        out = np.full((arr.shape[0], k), PAD, dtype=np.int64)
        out[:, : arr.shape[1]] = arr
    else:
        out = np.full((len(recs), k), PAD, dtype=np.int64)
        for u, items in enumerate(recs):
            row = np.asarray(items, dtype=np.int64)[:k]
            out[u, : len(row)] = row
    bad = (out != PAD) & ((out < 0) | (out >= n_items))
    if bad.any():
        u, r = np.argwhere(bad)[0]
        raise ValueError(f"list {u}, rank {r + 1}: item {out[u, r]} is outside the catalogue of {n_items} items")
    return out


def exposure(recs: Lists, n_items: int, k: int) -> np.ndarray:
    """How many of the lists recommend each item in their top k (length n_items)."""
    lists = padded_lists(recs, k, n_items)
    return np.bincount(lists[lists != PAD], minlength=n_items)


def catalogue_coverage(recs: Lists, n_items: int, k: int) -> float:
    """Share of the catalogue's n_items that appear in at least one top-k list (0 when there are no lists)."""
    return float((exposure(recs, n_items, k) > 0).sum() / n_items)


def gini_index(recs: Lists, n_items: int, k: int) -> float:
    """Gini index of how often each catalogue item is recommended in the top k: 0 = every item equally often,
    (n_items - 1) / n_items = one item takes every slot; NaN when nothing is recommended."""
    counts = np.sort(exposure(recs, n_items, k)).astype(np.float64)
    total = counts.sum()
    if total == 0:
        return math.nan
    i = np.arange(1, n_items + 1, dtype=np.float64)
    return float(((2 * i - n_items - 1) * counts).sum() / (n_items * total))


def popularity_percentiles(item_counts: np.ndarray) -> np.ndarray:
    """Each item's popularity percentile in [0, 100]: % of items less popular plus half the % equally popular
    (itself included), so ties share one value and the catalogue's mean is 50."""
    counts = np.asarray(item_counts)
    s = np.sort(counts)
    below = np.searchsorted(s, counts, side="left")
    equal = np.searchsorted(s, counts, side="right") - below
    return 100.0 * (below + 0.5 * equal) / len(counts)


def mean_popularity_percentile(recs: Lists, item_counts: np.ndarray, k: int) -> np.ndarray:
    """Per list, the mean popularity percentile of its top-k items (lower = more novel); NaN for an empty list.
    item_counts: each item's number of training interactions."""
    pct = popularity_percentiles(item_counts)
    lists = padded_lists(recs, k, len(pct))
    valid = lists != PAD
    total = np.where(valid, pct[np.where(valid, lists, 0)], 0.0).sum(axis=1)
    n = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, math.nan)


def _unit_rows(features: Features) -> np.ndarray:
    """Rows scaled to length 1; all-zero rows (items without features) stay zero, i.e. similar to nothing."""
    dense = features.toarray() if isinstance(features, (sp.spmatrix, sp.sparray)) else features
    f = np.asarray(dense, dtype=np.float64)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    return np.divide(f, norms, out=np.zeros_like(f), where=norms > 0)


def intra_list_diversity(
    recs: Lists, features: Features, k: int, chunk: int = 1024
) -> np.ndarray:
    """Per list, the mean cosine distance 1 - cos(f_i, f_j) over the pairs of its top-k items (features: one row
    per item, e.g. 0/1 genres or the model's item vectors); NaN for lists of fewer than two items."""
    unit = _unit_rows(features)
    lists = padded_lists(recs, k, unit.shape[0])
    out = np.full(len(lists), math.nan)
    # chunks of users bound the (users, k, dims) gather
    for start in range(0, len(lists), chunk):
        block = lists[start : start + chunk]
        valid = block != PAD
        f = unit[np.where(valid, block, 0)] * valid[..., None]
        # the sum of cos over ordered pairs i != j is |sum_i f_i|^2 - sum_i |f_i|^2: no (k, k) matrix per list
        pair_sims = np.square(f.sum(axis=1)).sum(axis=1) - np.square(f).sum(axis=(1, 2))
        m = valid.sum(axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + chunk] = np.where(m > 1, 1.0 - pair_sims / (m * (m - 1)), math.nan)
    return out


def beyond_accuracy(
    recs: Lists,
    item_counts: np.ndarray,
    k: int,
    features: Features | None = None,
) -> dict[str, float]:
    """coverage@k, gini@k, novelty@k (mean over lists of mean popularity percentile) and, given item features,
    ild@k (mean over lists of intra-list diversity) of a set of lists; list means skip empty (or one-item) lists."""
    n_items = len(item_counts)
    out = {
        f"coverage@{k}": catalogue_coverage(recs, n_items, k),
        f"gini@{k}": gini_index(recs, n_items, k),
        f"novelty@{k}": _nanmean(mean_popularity_percentile(recs, item_counts, k)),
    }
    if features is not None:
        out[f"ild@{k}"] = _nanmean(intra_list_diversity(recs, features, k))
    return out


def _nanmean(v: np.ndarray) -> float:
    return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan

"""Top-N unseen items per user, one chunk of users at a time: scores, seen items set to -inf, top-k.

The one top-N of the batch job and the ad-hoc lists (`recvae.serving.recommend`) and of the served model
(`recvae.serving.pyfunc`). The pyfunc loads this module, so it imports only numpy, scipy, torch and the metrics'
`mask_seen`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from recvae.evaluation.metrics import mask_seen

if TYPE_CHECKING:
    from recvae.models.base import Recommender

class TopN(NamedTuple):
    """Top-N of one chunk of users; entries at or beyond counts[i] are padding (item -1, score -inf)."""

    rows: np.ndarray  # (c,) int64 row indices into the history matrix
    items: np.ndarray  # (c, k) int64 item (column) indices, best first
    scores: np.ndarray  # (c, k) float32
    counts: np.ndarray  # (c,) int64 real entries per row: min(N, unseen candidates)

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The real entries, user by user, best first: (history row, rank from 1, item column, score)."""
        r, c = np.nonzero(self.items >= 0)
        return self.rows[r], c + 1, self.items[r, c], self.scores[r, c]


def top_unseen(scores: torch.Tensor, seen: sp.csr_matrix, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scores, item columns, real entries per row) of the `k` best unseen items of each row, best first.

    `scores` (rows x items) is overwritten: seen items (stored entries of `seen`, same rows) become -inf and are never
    returned; where fewer than `k` items are unseen, the rest of the row is padding (item -1, score -inf)."""
    mask_seen(scores, seen)
    vals, items = torch.topk(scores, k, dim=1, largest=True, sorted=True)
    valid = vals > float("-inf")
    return vals, torch.where(valid, items, torch.full_like(items, -1)), valid.sum(dim=1)


def iter_topn(
    recommender: Recommender,
    history: sp.spmatrix,
    top_n: int,
    chunk_size: int = 1000,
    device: str | torch.device | None = None,
    rows: np.ndarray | None = None,
    *,
    dtype: torch.dtype | None = None,
    exclude: np.ndarray | None = None,
) -> Iterator[TopN]:
    """Top-`top_n` unseen items per user, one chunk of `chunk_size` users at a time (`rows`: a subset of rows).
    Seen items (stored entries of `history`) and the columns where `exclude` (a boolean mask over the items: a
    business filter, `recvae.serving.filters`) is True are never emitted; they are removed before the cut, so a
    user still gets `top_n` items when that many are eligible. Users are ranked by the model's `ranking_scores`
    (in the precision it computed them in, unless `dtype` is given), on `device` if given; NaN scores raise
    ValueError."""
    if top_n < 1 or chunk_size < 1:
        raise ValueError(f"top_n and chunk_size must be >= 1; got {top_n}, {chunk_size}")
    history = sp.csr_matrix(history)
    n_items = history.shape[1]
    if getattr(recommender, "n_items", n_items) != n_items:
        raise ValueError(f"history has {n_items} item columns but the recommender scores {recommender.n_items} items")
    rows = np.arange(history.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    k = min(int(top_n), n_items)
    dev = torch.device(device) if device is not None else None
    banned = _banned_columns(exclude, n_items)
    for start in range(0, len(rows), chunk_size):
        idx = rows[start : start + chunk_size]
        X = history[idx]
        with torch.no_grad():
            s = recommender.ranking_scores(X)  # ours to overwrite: top_unseen masks in place
        _check_shape(recommender, s, (len(idx), n_items))
        s = s.to(device=dev, dtype=dtype)
        if banned is not None:
            s[:, banned.to(s.device)] = float("-inf")  # as a seen item: never returned, not counted
        vals, items, counts = top_unseen(s, X, k)
        # topk ranks NaN first, so checking the top-k finds any NaN row without another pass over all scores
        if torch.isnan(vals).any():
            bad = int(torch.isnan(vals).any(dim=1).sum())
            raise ValueError(
                f"{type(recommender).__name__}.scores returned NaN for {bad} user(s) in rows {idx[0]}..{idx[-1]}"
            )
        yield TopN(
            rows=idx,
            items=items.cpu().numpy().astype(np.int64, copy=False),
            scores=vals.float().cpu().numpy(),
            counts=counts.cpu().numpy().astype(np.int64),
        )


def _banned_columns(exclude: np.ndarray | None, n_items: int) -> torch.Tensor | None:
    """Indices of the excluded columns, or None when nothing is excluded."""
    if exclude is None:
        return None
    exclude = np.asarray(exclude, dtype=bool)
    if exclude.shape != (n_items,):
        raise ValueError(f"exclude mask has shape {exclude.shape}; expected ({n_items},)")
    return torch.from_numpy(np.flatnonzero(exclude)) if exclude.any() else None


def eligible_counts(history: sp.csr_matrix, top_n: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Entries each user's list holds: min(top_n, items neither seen nor excluded); `history` must be canonical
    (no duplicates, no stored zeros)."""
    n_items = history.shape[1]
    seen = np.diff(history.indptr)
    if exclude is not None and np.any(exclude):
        allowed = (~np.asarray(exclude, dtype=bool)).astype(np.float32)
        seen = np.asarray(history.astype(bool).astype(np.float32) @ allowed).ravel().astype(np.int64)
        n_items = int(allowed.sum())
    return np.minimum(int(top_n), n_items - seen).astype(np.int64)


def _check_shape(recommender: Recommender, s: object, expected: tuple[int, int]) -> None:
    if not isinstance(s, torch.Tensor) or tuple(s.shape) != expected:
        shape = tuple(getattr(s, "shape", ())) or type(s).__name__
        raise ValueError(f"{type(recommender).__name__}.scores returned {shape}; expected {expected}")

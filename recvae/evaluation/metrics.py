"""Ranking metrics of Liang et al. 2018 (NDCG@k, Recall@k), LightGCN's Recall@k, and Precision@k, MRR@k, HitRate@k,
MAP@k, vectorized in torch over one sorted top-K per batch."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

DEFAULT_METRICS = ("ndcg@100", "recall@20", "recall@50")


def csr_to_dense(m: sp.csr_matrix, device: torch.device | str = "cpu") -> torch.Tensor:
    """Dense float32 tensor of a (small, batch-sized) CSR block."""
    m = m.tocsr()
    if device == "cpu" or (isinstance(device, torch.device) and device.type == "cpu"):
        return torch.from_numpy(m.toarray().astype(np.float32, copy=False))
    t = torch.sparse_csr_tensor(
        torch.from_numpy(m.indptr.astype(np.int64)),
        torch.from_numpy(m.indices.astype(np.int64)),
        torch.from_numpy(m.data.astype(np.float32)),
        size=m.shape,
    )
    return t.to(device).to_dense()


def mask_seen(scores: torch.Tensor, seen: sp.csr_matrix) -> torch.Tensor:
    """Set scores of already-seen items to -inf, in place; `seen` has the same rows as `scores`."""
    seen = seen.tocsr()
    rows = torch.from_numpy(np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))).to(scores.device)
    cols = torch.from_numpy(seen.indices.astype(np.int64)).to(scores.device)
    scores[rows, cols] = -torch.inf
    return scores


def _discounts(k: int, device: torch.device) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=torch.float64))


def _ndcg_from_hits(hits: torch.Tensor, n_pos: torch.Tensor, k: int) -> torch.Tensor:
    """NDCG@k from the hit flags of each user's top-k in rank order, and their numbers of held-out items."""
    disc = _discounts(k, hits.device)
    dcg = (hits[:, :k].to(torch.float64) * disc).sum(dim=1)
    idcg = torch.cumsum(disc, 0)[(n_pos.clamp(max=k) - 1).clamp(min=0)]
    return torch.where(n_pos > 0, dcg / idcg, torch.full_like(dcg, math.nan))


def _recall_from_hits(hits: torch.Tensor, n_pos: torch.Tensor, k: int, denominator: str) -> torch.Tensor:
    """Recall@k from the same hit flags: / min(k, n) (paper) or / n (LightGCN)."""
    if denominator not in ("min", "all"):
        raise ValueError(f"denominator must be 'min' or 'all'; got {denominator!r}")
    found = hits[:, :k].sum(dim=1).to(torch.float64)
    n = n_pos.to(torch.float64)
    denom = torch.clamp(n, max=k) if denominator == "min" else n
    return torch.where(n > 0, found / denom.clamp(min=1), torch.full_like(found, math.nan))


def _precision_from_hits(hits: torch.Tensor, n_pos: torch.Tensor, k: int) -> torch.Tensor:
    """Precision@k: hits among the top k / k, whatever the number of held-out items; NaN if none."""
    found = hits[:, :k].sum(dim=1).to(torch.float64)
    return torch.where(n_pos > 0, found / k, torch.full_like(found, math.nan))


def _mrr_from_hits(hits: torch.Tensor, n_pos: torch.Tensor, k: int) -> torch.Tensor:
    """MRR@k: 1 / rank of the first hit in the top k, 0 without one; NaN if no held-out items."""
    inv_rank = 1.0 / torch.arange(1, k + 1, device=hits.device, dtype=torch.float64)
    # 1/rank falls with rank, so the largest over the hits is the first hit's
    rr = (hits[:, :k].to(torch.float64) * inv_rank).amax(dim=1)
    return torch.where(n_pos > 0, rr, torch.full_like(rr, math.nan))


def _hitrate_from_hits(hits: torch.Tensor, n_pos: torch.Tensor, k: int) -> torch.Tensor:
    """HitRate@k: 1 if any held-out item is in the top k, else 0; NaN if no held-out items."""
    hit = hits[:, :k].any(dim=1).to(torch.float64)
    return torch.where(n_pos > 0, hit, torch.full_like(hit, math.nan))


def _map_from_hits(hits: torch.Tensor, n_pos: torch.Tensor, k: int) -> torch.Tensor:
    """MAP@k (per user AP@k): sum of Precision@i at each hit rank i <= k, / min(k, |held-out|); NaN if none."""
    h = hits[:, :k].to(torch.float64)
    prec_at_i = torch.cumsum(h, dim=1) / torch.arange(1, k + 1, device=h.device, dtype=torch.float64)
    denom = n_pos.clamp(max=k, min=1).to(torch.float64)
    ap = (prec_at_i * h).sum(dim=1) / denom
    return torch.where(n_pos > 0, ap, torch.full_like(ap, math.nan))


_FROM_HITS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "ndcg": _ndcg_from_hits,
    "recall": lambda hits, n_pos, k: _recall_from_hits(hits, n_pos, k, "min"),
    "recall_all": lambda hits, n_pos, k: _recall_from_hits(hits, n_pos, k, "all"),
    "precision": _precision_from_hits,
    "mrr": _mrr_from_hits,
    "hitrate": _hitrate_from_hits,
    "map": _map_from_hits,
}
METRIC_NAMES = tuple(_FROM_HITS)


def _ranked_hits(scores: torch.Tensor, heldout: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hit flags of each user's top-k items in rank order, number of held-out items per user)."""
    top = torch.topk(scores, k, dim=1, sorted=True).indices
    return torch.gather(heldout, 1, top) > 0, (heldout > 0).sum(dim=1)


def _at_k(metric: str, scores: torch.Tensor, heldout: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user values of one metric at k (k capped at the number of items)."""
    k = min(k, scores.shape[1])
    return _FROM_HITS[metric](*_ranked_hits(scores, heldout, k), k)


def ndcg_at_k(scores: torch.Tensor, heldout: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user NDCG@k with binary relevance; NaN for users with no held-out items."""
    return _at_k("ndcg", scores, heldout, k)


def recall_at_k(scores: torch.Tensor, heldout: torch.Tensor, k: int, denominator: str = "min") -> torch.Tensor:
    """Per-user Recall@k: hits / min(k, |held-out|) (paper) or hits / |held-out| (LightGCN); NaN if none."""
    k = min(k, scores.shape[1])
    hits, n_pos = _ranked_hits(scores, heldout, k)
    return _recall_from_hits(hits, n_pos, k, denominator)


def precision_at_k(scores: torch.Tensor, heldout: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user Precision@k (hits / k); NaN for users with no held-out items."""
    return _at_k("precision", scores, heldout, k)


def mrr_at_k(scores: torch.Tensor, heldout: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user reciprocal rank of the first held-out item in the top k (0 if none there); NaN if no held-out."""
    return _at_k("mrr", scores, heldout, k)


def hitrate_at_k(scores: torch.Tensor, heldout: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user 1/0: is any held-out item in the top k; NaN for users with no held-out items."""
    return _at_k("hitrate", scores, heldout, k)


def map_at_k(scores: torch.Tensor, heldout: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user AP@k (mean over users is MAP@k), normalised by min(k, |held-out|); NaN if no held-out."""
    return _at_k("map", scores, heldout, k)


def _parse(name: str) -> tuple[str, int]:
    metric, _, k = name.partition("@")
    if metric not in _FROM_HITS or not k.isdigit() or int(k) < 1:
        raise ValueError(f"unknown metric {name!r}; use NAME@K with K >= 1 and NAME one of {', '.join(METRIC_NAMES)}")
    return metric, int(k)


def per_user_metrics(scores: torch.Tensor, heldout: torch.Tensor, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Per-user values of each metric name (e.g. 'ndcg@100', 'recall@20', 'recall_all@20', 'precision@10', 'map@10')."""
    parsed = {name: _parse(name) for name in names}
    if not parsed:
        return {}
    # one sorted top-K for the largest K: every smaller k's top-k is its prefix
    k_max = min(max(k for _, k in parsed.values()), scores.shape[1])
    hits, n_pos = _ranked_hits(scores, heldout, k_max)
    return {name: _FROM_HITS[metric](hits, n_pos, min(k, k_max)) for name, (metric, k) in parsed.items()}


@dataclass
class EvalResult:
    """Mean, standard error and per-user values of each metric over users with held-out items; with item segments,
    `by_items[segment][metric]` are the per-user values on the held-out items of that segment only, and with
    `keep_top` the (users, k) top-k item indices each user was recommended."""

    per_user: dict[str, np.ndarray]
    by_items: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    top: np.ndarray | None = None

    @property
    def means(self) -> dict[str, float]:
        return {k: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for k, v in self.per_user.items()}

    @property
    def stderr(self) -> dict[str, float]:
        out = {}
        for k, v in self.per_user.items():
            v = v[np.isfinite(v)]
            out[k] = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
        return out

    @property
    def n_users(self) -> int:
        first = next(iter(self.per_user.values()), np.zeros(0))
        return int(np.isfinite(first).sum())


def evaluate(
    score_fn: Callable[[sp.csr_matrix], torch.Tensor],
    foldin: sp.csr_matrix,
    heldout: sp.csr_matrix,
    metrics: Iterable[str] = DEFAULT_METRICS,
    batch_size: int = 2_000,
    device: torch.device | str = "cpu",
    *,
    item_segments: Mapping[str, np.ndarray] | None = None,
    keep_top: int = 0,
) -> EvalResult:
    """Score users batch by batch from their fold-in rows, exclude fold-in items, and compute metrics; also per item
    segment (name -> boolean mask over items: the metrics on those held-out items only, the ranking unchanged) and,
    with `keep_top` > 0, each user's top `keep_top` items."""
    names = list(metrics)
    if foldin.shape != heldout.shape:
        raise ValueError(f"fold-in {foldin.shape} and held-out {heldout.shape} shapes differ")
    segments = dict(item_segments or {})
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    seg_parts: dict[str, dict[str, list[np.ndarray]]] = {s: {n: [] for n in names} for s in segments}
    tops: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, foldin.shape[0], batch_size):
            x = foldin[start : start + batch_size]
            scores = score_fn(x).float()
            mask_seen(scores, x)
            y = csr_to_dense(heldout[start : start + batch_size], scores.device)
            for name, v in per_user_metrics(scores, y, names).items():
                parts[name].append(v.cpu().numpy())
            for seg, mask in segments.items():
                y_seg = y * torch.as_tensor(np.asarray(mask, dtype=np.float32), device=y.device)
                for name, v in per_user_metrics(scores, y_seg, names).items():
                    seg_parts[seg][name].append(v.cpu().numpy())
            if keep_top > 0:
                tops.append(_top_items(scores, keep_top))
    return EvalResult(_joined(parts), {s: _joined(p) for s, p in seg_parts.items()},
                      np.concatenate(tops) if tops else None)


def _top_items(scores: torch.Tensor, k: int) -> np.ndarray:
    """(users, k) top-k item indices in rank order; seen items (-inf) and slots past the catalogue are -1."""
    k_eff = min(k, scores.shape[1])
    top = torch.topk(scores, k_eff, dim=1, sorted=True)
    items = torch.where(torch.isfinite(top.values), top.indices, torch.full_like(top.indices, -1)).cpu().numpy()
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    out[:, :k_eff] = items
    return out


def _joined(parts: Mapping[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {n: np.concatenate(v) if v else np.zeros(0) for n, v in parts.items()}

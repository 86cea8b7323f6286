"""Similar items from the model's item representations (`recvae.models.latent.item_vectors`: the decoder's last
weight rows), by cosine: an exact chunked matrix product for small catalogues, faiss (inner product on unit
vectors: IndexFlatIP, or IVF for very large ones) above a size threshold.

Light imports: the pyfunc uses `similar_columns`; faiss is imported only when it is used."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from recvae.models.latent import item_vectors

logger = logging.getLogger(__name__)

EXACT_MAX_ITEMS = 50_000  # above: faiss (an exact pass is n^2 x width flops: 2.5e9 x width at 50k items)
IVF_MIN_ITEMS = 500_000  # above: an IVF index (approximate) rather than a flat one
METHODS = ("auto", "exact", "flat", "ivf")
_CHUNK = 1024


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), float32 and C-contiguous (what faiss needs)."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.where(norms > 0, norms, 1.0))


def choose_method(n_items: int, method: str = "auto") -> str:
    """'exact' up to EXACT_MAX_ITEMS items, 'flat' (faiss IndexFlatIP) up to IVF_MIN_ITEMS, 'ivf' beyond."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if method != "auto":
        return method
    return "exact" if n_items <= EXACT_MAX_ITEMS else "flat" if n_items < IVF_MIN_ITEMS else "ivf"


def similar_columns(vectors: np.ndarray, k: int, queries: np.ndarray | None = None, *,
                    method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(columns, cosines), each (queries, k'), k' = min(k, n_items - 1): the most similar other items of each query
    column (all columns by default), best first."""
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    v = unit_rows(vectors)
    n = len(v)
    queries = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64)
    k = min(int(k), n - 1)
    if k < 1 or len(queries) == 0:
        return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
    how = choose_method(n, method)
    logger.info("similar items: top %d of %d items for %d queries (%s)", k, n, len(queries), how)
    if how == "exact":
        return _exact(v, queries, k)
    return _faiss(v, queries, k, ivf=how == "ivf")


def _exact(v: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of a chunk of queries against every item at a time, the query itself excluded."""
    vt = torch.from_numpy(v)
    cols, sims = [], []
    for start in range(0, len(queries), _CHUNK):
        q = torch.from_numpy(queries[start : start + _CHUNK])
        s = vt[q] @ vt.T
        s[torch.arange(len(q)), q] = float("-inf")
        vals, idx = torch.topk(s, k, dim=1)
        cols.append(idx.numpy())
        sims.append(vals.numpy())
    return np.concatenate(cols).astype(np.int64), np.concatenate(sims).astype(np.float32)


def _faiss(v: np.ndarray, queries: np.ndarray, k: int, *, ivf: bool) -> tuple[np.ndarray, np.ndarray]:
    """faiss inner product on unit vectors (= cosine); one extra neighbour is asked for and the query dropped."""
    import faiss

    d = v.shape[1]
    index: Any
    if ivf:
        nlist = max(1, int(4 * math.sqrt(len(v))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(v)
        index.nprobe = min(nlist, 32)
    else:
        index = faiss.IndexFlatIP(d)
    index.add(v)
    sims, cols = index.search(np.ascontiguousarray(v[queries]), k + 1)
    keep = cols != queries[:, None]
    out_c = np.full((len(queries), k), -1, np.int64)
    out_s = np.full((len(queries), k), -np.inf, np.float32)
    for r in range(len(queries)):  # drop the query itself (or the last one when it was not returned)
        c, s = cols[r][keep[r] & (cols[r] >= 0)][:k], sims[r][keep[r] & (cols[r] >= 0)][:k]
        out_c[r, : len(c)], out_s[r, : len(s)] = c, s
    return out_c, out_s


def similar_items_frame(rec: Any, top_n: int, *, queries: np.ndarray | None = None,
                        method: str = "auto") -> pd.DataFrame:
    """Columns item_id, rank (from 1), similar_item_id, score (cosine) for the query columns (all by default)."""
    vectors = item_vectors(rec)
    ids = np.asarray([str(v) for v in (rec.items.raw_ids if rec.items is not None else range(len(vectors)))],
                     dtype=object)
    queries = np.arange(len(vectors)) if queries is None else np.asarray(queries, dtype=np.int64)
    cols, sims = similar_columns(vectors, top_n, queries, method=method)
    r, c = np.nonzero(cols >= 0)
    return pd.DataFrame({"item_id": ids[queries[r]], "rank": (c + 1).astype(np.int64), "similar_item_id":
                         ids[cols[r, c]], "score": sims[r, c].astype(np.float64)})

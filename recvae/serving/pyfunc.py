"""A saved recommender as an MLflow pyfunc ("models from code"): raw-id histories in, top-N raw ids out.

MLflow copies this file into the logged model and executes it on load (no unpickling); the learned state
is the saved recommender directory logged as the artifact named `recommender`, and the recvae package itself is
logged with the model (`code/`), so loading needs only the model's requirements. Keep this module's imports (and
those of `recvae.models.base` and the model kinds' modules) light: they are what serving loads.
"""

from __future__ import annotations

import logging
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from mlflow.pyfunc import PythonModel

from recvae.models.base import Recommender, load_recommender
from recvae.models.latent import user_elbo, user_embeddings
from recvae.serving.filters import ItemFilter
from recvae.serving.items import item_positions
from recvae.serving.similar_items import similar_items_frame
from recvae.serving.topn import iter_topn

logger = logging.getLogger(__name__)

ARTIFACT_KEY = "recommender"
DEFAULT_TOP_N = 100
INPUT_COLUMNS = ("user", "item")
OUTPUT_COLUMNS = ("user", "rank", "item", "score")
OUTPUTS = ("topn", "anomaly", "embedding", "similar_items")  # params.output: what predict returns
_CHUNK_USERS = 1_000


def item_indices(rec: Recommender, items: pd.Series | np.ndarray) -> np.ndarray:
    """Column index of each raw item id, -1 where the model does not know the item."""
    return item_positions(rec.items, rec.n_items, items)


def item_raw_ids(rec: Recommender, indices: np.ndarray) -> np.ndarray:
    """Raw item ids of column `indices`."""
    return rec.items.to_raw(indices) if rec.items is not None else np.asarray(indices, dtype=np.int64)


def recommend_frame(rec: Recommender, history: pd.DataFrame, top_n: int = DEFAULT_TOP_N,
                    item_filter: ItemFilter | None = None) -> pd.DataFrame:
    """Top-`top_n` unseen items for each user of `history` (columns user, item), folded in without retraining.

    Unknown item ids are ignored; a user with no known item still gets recommendations from an empty history.
    `item_filter` (allow/deny lists) removes items before the cut, so a user still gets `top_n` eligible items.
    Returns columns user, rank (1-based), item, score, users in order of first appearance.
    """
    missing = [c for c in INPUT_COLUMNS if c not in history.columns]
    if missing:
        raise ValueError(f"input is missing column(s) {missing}; expected columns {list(INPUT_COLUMNS)}")
    if int(top_n) < 1:
        raise ValueError(f"top_n must be >= 1; got {top_n}")
    users, X = _history_matrix(rec, history[history["user"].notna()])
    exclude = item_filter.excluded(item_raw_ids(rec, np.arange(rec.n_items))) if item_filter is not None else None
    # served scores are float32 (what `scores` returns), whatever precision the model ranks in
    topn = iter_topn(rec, X, int(top_n), chunk_size=_CHUNK_USERS, dtype=torch.float32, exclude=exclude)
    chunks = [top.entries() for top in topn]
    if not chunks:  # no users in the input
        return pd.DataFrame({"user": [], "rank": np.zeros(0, np.int64), "item": [], "score": np.zeros(0)})
    row, rank, col, score = (np.concatenate(parts) for parts in zip(*chunks, strict=True))
    return pd.DataFrame(
        {
            "user": np.asarray(users)[row],
            "rank": rank.astype(np.int64),
            "item": item_raw_ids(rec, col),
            "score": score.astype(np.float64),
        }
    )


def _history_matrix(rec: Recommender, history: pd.DataFrame) -> tuple[pd.Index, sp.csr_matrix]:
    """(users in order of first appearance, users x model items 0/1 matrix of their known items)."""
    user_codes, users = pd.factorize(history["user"], sort=False)
    item_values = history["item"].to_numpy()
    idx = np.full(len(history), -1, dtype=np.int64)
    present = pd.notna(item_values)
    if present.any():
        idx[present] = item_indices(rec, item_values[present])
    known = idx >= 0
    n_unknown = int((~known & present).sum())
    if n_unknown:
        logger.info("ignoring %d interaction(s) with item ids the model does not know", n_unknown)
    X = sp.csr_matrix(
        (np.ones(int(known.sum()), dtype=np.float32), (user_codes[known], idx[known])),
        shape=(len(users), rec.n_items),
    )
    X.sum_duplicates()
    X.data[:] = 1.0
    return users, X


def _check_columns(history: pd.DataFrame) -> None:
    missing = [c for c in INPUT_COLUMNS if c not in history.columns]
    if missing:
        raise ValueError(f"input is missing column(s) {missing}; expected columns {list(INPUT_COLUMNS)}")


def anomaly_scores_frame(rec: Recommender, history: pd.DataFrame) -> pd.DataFrame:
    """Per user of `history` (folded in): user, n_items (known to the model), nll_per_item, kl, neg_elbo (higher:
    more anomalous; `recvae.serving.anomalies`). Percentiles need the training users: `recvae anomalies` has them."""
    _check_columns(history)
    users, X = _history_matrix(rec, history[history["user"].notna()])
    return pd.DataFrame({"user": np.asarray(users), **user_elbo(rec, X)})


def embedding_frame(rec: Recommender, history: pd.DataFrame) -> pd.DataFrame:
    """Per user of `history` (folded in): user, embedding (the posterior mean of q(z|x), a list of floats)."""
    _check_columns(history)
    users, X = _history_matrix(rec, history[history["user"].notna()])
    z = user_embeddings(rec, X)
    return pd.DataFrame({"user": np.asarray(users), "embedding": [row.tolist() for row in z]})


def similar_to_frame(rec: Recommender, history: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """The `top_n` items most similar to each distinct known item of the `item` column (users are ignored):
    item, rank, similar_item, score (cosine of the decoder's item vectors)."""
    _check_columns(history)
    raw = pd.unique(history["item"].dropna())
    cols = item_indices(rec, raw) if len(raw) else np.zeros(0, np.int64)
    known = cols[cols >= 0]
    frame = similar_items_frame(rec, int(top_n), queries=known)
    ids = item_raw_ids(rec, np.arange(rec.n_items))
    as_raw = dict(zip(np.asarray([str(v) for v in ids], dtype=object), ids, strict=True))
    return pd.DataFrame({"item": [as_raw[v] for v in frame["item_id"]], "rank": frame["rank"].to_numpy(),
                         "similar_item": [as_raw[v] for v in frame["similar_item_id"]],
                         "score": frame["score"].to_numpy()})


def params_filter(params: dict[str, Any]) -> ItemFilter | None:
    """The item filter of the pyfunc's params `allow_items` and `deny_items` (lists of raw item ids; an empty or
    missing allow list means every item)."""
    allow, deny = params.get("allow_items"), params.get("deny_items")
    allow = None if allow is None or len(allow) == 0 else list(allow)
    filt = ItemFilter.of(allow, list(deny) if deny is not None else None)
    return filt if filt.active else None


class RecommenderModel(PythonModel):
    """Pyfunc over a saved recommender directory: history rows (user, item) in, rows (user, rank, item, score) out;
    params `top_n` (default 100), `allow_items` and `deny_items` (business filters, applied before the cut), and
    `output`: 'topn' (the lists), 'anomaly' (each user's ELBO terms), 'embedding' (each user's posterior mean) or
    'similar_items' (the items most similar to those of the `item` column).
    Column types come from the logged signature (`tracking.model_signature`)."""

    rec: Recommender

    def load_context(self, context: Any) -> None:
        self.rec = load_recommender(context.artifacts[ARTIFACT_KEY])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        p = params or {}
        top_n = int(p.get("top_n", DEFAULT_TOP_N))
        output = str(p.get("output") or "topn")
        frame = pd.DataFrame(model_input)
        if output == "topn":
            return recommend_frame(self.rec, frame, top_n, item_filter=params_filter(p))
        if output == "anomaly":
            return anomaly_scores_frame(self.rec, frame)
        if output == "embedding":
            return embedding_frame(self.rec, frame)
        if output == "similar_items":
            return similar_to_frame(self.rec, frame, top_n)
        raise ValueError(f"params.output must be one of {', '.join(OUTPUTS)}; got {output!r}")


mlflow.models.set_model(RecommenderModel())

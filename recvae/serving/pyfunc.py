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

from recvae.evaluation.metrics import mask_seen
from recvae.models.base import Recommender, load_recommender
from recvae.serving.items import item_positions

logger = logging.getLogger(__name__)

ARTIFACT_KEY = "recommender"
DEFAULT_TOP_N = 100
INPUT_COLUMNS = ("user", "item")
OUTPUT_COLUMNS = ("user", "rank", "item", "score")
_CHUNK_USERS = 1_000


def item_indices(rec: Recommender, items: pd.Series | np.ndarray) -> np.ndarray:
    """Column index of each raw item id, -1 where the model does not know the item."""
    return item_positions(rec.items, rec.n_items, items)


def item_raw_ids(rec: Recommender, indices: np.ndarray) -> np.ndarray:
    """Raw item ids of column `indices`."""
    return rec.items.to_raw(indices) if rec.items is not None else np.asarray(indices, dtype=np.int64)


def recommend_frame(rec: Recommender, history: pd.DataFrame, top_n: int = DEFAULT_TOP_N) -> pd.DataFrame:
    """Top-`top_n` unseen items for each user of `history` (columns user, item), folded in without retraining.

    Unknown item ids are ignored; a user with no known item still gets recommendations from an empty history.
    Returns columns user, rank (1-based), item, score, users in order of first appearance.
    """
    missing = [c for c in INPUT_COLUMNS if c not in history.columns]
    if missing:
        raise ValueError(f"input is missing column(s) {missing}; expected columns {list(INPUT_COLUMNS)}")
    if int(top_n) < 1:
        raise ValueError(f"top_n must be >= 1; got {top_n}")
    top_n = int(top_n)
    history = history[history["user"].notna()]
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

    k = min(top_n, rec.n_items)
    out_users, out_items, out_scores, out_ranks = [], [], [], []
    with torch.no_grad():
        for start in range(0, X.shape[0], _CHUNK_USERS):
            x = X[start : start + _CHUNK_USERS]
            scores = rec.scores(x).float()
            mask_seen(scores, x)
            top = torch.topk(scores, k, dim=1)
            vals, cols = top.values.cpu().numpy(), top.indices.cpu().numpy()
            keep = np.isfinite(vals)  # drops seen items when fewer than k are unseen
            rows = np.broadcast_to(np.arange(start, start + x.shape[0])[:, None], vals.shape)
            out_users.append(rows[keep])
            out_items.append(cols[keep])
            out_scores.append(vals[keep].astype(np.float64))
            out_ranks.append(np.broadcast_to(np.arange(1, k + 1), vals.shape)[keep])
    if not out_users:  # no users in the input
        return pd.DataFrame({"user": [], "rank": np.zeros(0, np.int64), "item": [], "score": np.zeros(0)})
    row = np.concatenate(out_users)
    return pd.DataFrame(
        {
            "user": np.asarray(users)[row],
            "rank": np.concatenate(out_ranks).astype(np.int64),
            "item": item_raw_ids(rec, np.concatenate(out_items)),
            "score": np.concatenate(out_scores),
        }
    )


class RecommenderModel(PythonModel):
    """Pyfunc over a saved recommender directory: history rows (user, item) in, rows (user, rank, item, score) out;
    param `top_n` (default 100). Column types come from the logged signature (`tracking.model_signature`)."""

    rec: Recommender

    def load_context(self, context: Any) -> None:
        self.rec = load_recommender(context.artifacts[ARTIFACT_KEY])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        top_n = int((params or {}).get("top_n", DEFAULT_TOP_N))
        return recommend_frame(self.rec, pd.DataFrame(model_input), top_n)


mlflow.models.set_model(RecommenderModel())

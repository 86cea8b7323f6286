"""Anomalous users from the model's own likelihood: per user, the multinomial negative log-likelihood of the user's
items per item, KL(q(z|x) || prior) and the negative ELBO, each also as a percentile among the snapshot's training
users; published to `recvae_user_anomalies` (with the scored histories, for the per-item query) like the lists."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recvae.data.snapshot import Snapshot
from recvae.models.latent import user_elbo
from recvae.serving.recommend import build_input
from recvae.serving.store.outputs import OutputStore, OutputSummary

logger = logging.getLogger(__name__)

SCORES = ("nll_per_item", "kl", "neg_elbo")  # higher is more anomalous for each


def anomaly_frame(rec: Any, history: sp.csr_matrix, user_ids: np.ndarray) -> pd.DataFrame:
    """Columns user_id, n_items and SCORES for each row of `history` (users x the model's items)."""
    terms = user_elbo(rec, history)
    return pd.DataFrame({"user_id": np.asarray(user_ids, dtype=object), **terms})


def percentiles(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """100 x the share of `reference` values at or below each value (NaN stays NaN): where a user stands among
    the training users."""
    ref = np.sort(reference[np.isfinite(reference)])
    out = np.full(len(values), np.nan)
    if len(ref) == 0:
        return out
    ok = np.isfinite(values)
    out[ok] = 100.0 * np.searchsorted(ref, values[ok], side="right") / len(ref)
    return out


def snapshot_anomalies(rec: Any, snap: Snapshot) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores of every user of the snapshot with their percentiles among its training users, the (user_id,
    item_id) histories they were scored on)."""
    inp = build_input(rec, snap)
    frame = anomaly_frame(rec, inp.history, inp.user_ids)
    train_users = np.asarray([str(u) for u in snap.users.to_raw(snap.rows["train"])], dtype=object)
    is_train = np.isin(inp.user_ids, train_users)
    for score in SCORES:
        values = frame[score].to_numpy(dtype=np.float64)
        frame[f"{score}_pct"] = percentiles(values, values[is_train])
    coo = inp.history.tocoo()
    interactions = pd.DataFrame({"user_id": inp.user_ids[coo.row], "item_id": inp.item_ids[coo.col]})
    logger.info("anomaly scores of %d users (%d training users as the reference), %d interactions", len(frame),
                int(is_train.sum()), len(interactions))
    return frame, interactions


def anomalies_to_store(rec: Any, snap: Snapshot, store: OutputStore, batch_key: str, *, model_name: str,
                       model_version: str | None = None, run_id: str | None = None,
                       keep: int | None = None) -> tuple[OutputSummary, pd.DataFrame]:
    """Score every user of `snap` and publish the scores (and the scored histories) as one batch."""
    frame, interactions = snapshot_anomalies(rec, snap)
    summary = store.publish("user_anomalies", batch_key, {"user_anomalies": frame,
                                                          "anomaly_interactions": interactions},
                            model_name=model_name, model_version=model_version, run_id=run_id,
                            snapshot_id=snap.snapshot_id, keep=keep)
    return summary, frame


def histogram_png(frame: pd.DataFrame, path: str | Path) -> Path:
    """One panel per score: its histogram over users (log counts), with the 95th and 99th percentiles marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(SCORES), figsize=(5 * len(SCORES), 3.6))
    for ax, score in zip(axes, SCORES, strict=True):
        values = frame[score].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values):
            ax.hist(values, bins=60, log=True, color="#4c72b0")
            for q, style in ((95, "--"), (99, ":")):
                ax.axvline(np.percentile(values, q), color="#c44e52", linestyle=style, label=f"p{q}")
            ax.legend(fontsize="small")
        ax.set_title(score)
        ax.set_xlabel(score)
        ax.set_ylabel("users")
    fig.suptitle(f"anomaly scores of {len(frame):,} users (higher: more anomalous)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""Latent user preferences: the posterior mean of q(z|x) of every user (from the user's whole history), exported
to Parquet and published to `recvae_user_embeddings`, and the users closest to a user by cosine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recvae.data.snapshot import Snapshot
from recvae.models.latent import user_embeddings
from recvae.serving.recommend import UnknownUsersError, build_input

logger = logging.getLogger(__name__)


def snapshot_embeddings(rec: Any, snap: Snapshot) -> pd.DataFrame:
    """Columns user_id, embedding (a float32 array per user) for every user of the snapshot."""
    inp = build_input(rec, snap)
    z = user_embeddings(rec, inp.history)
    return pd.DataFrame({"user_id": inp.user_ids, "embedding": list(z)})


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """The embeddings as Parquet (user_id, embedding: a list of float32), written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give a Parquet file name")
    if not path.resolve().parent.is_dir():
        raise FileNotFoundError(f"{path}: folder {path.resolve().parent} does not exist")
    dim = len(frame["embedding"].iloc[0]) if len(frame) else 0
    values = np.stack(frame["embedding"].to_list()).astype(np.float32) if len(frame) else np.zeros((0, dim))
    table = pa.table({"user_id": pa.array(frame["user_id"].astype(str).to_list(), pa.string()),
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), pa.float32()), dim)})
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def similar_users(frame: pd.DataFrame, user_id: str, k: int = 10) -> pd.DataFrame:
    """The `k` users whose embeddings have the highest cosine with `user_id`'s (the user excluded): columns
    rank, user_id, score. UnknownUsersError naming the user when it has no embedding."""
    ids = frame["user_id"].astype(str).to_numpy()
    hit = np.flatnonzero(ids == str(user_id))
    if len(hit) == 0:
        raise UnknownUsersError(f"user {user_id!r} has no embedding in the current batch ({len(ids):,} users)")
    z = np.stack(frame["embedding"].to_list()).astype(np.float32)
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    s = z @ z[hit[0]]
    s[hit[0]] = -np.inf
    order = np.argsort(-s, kind="stable")[: min(int(k), len(ids) - 1)]
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "user_id": ids[order], "score": s[order]})

"""A small planted snapshot (users in taste groups over their own items) and a Mult-VAE trained on it in seconds,
shared by the tests of what the model says beyond the lists (anomalies, embeddings, similar items)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recvae.config import Config, ModelConfig, TrainConfig
from recvae.data.idmap import IdMap
from recvae.data.snapshot import Snapshot

GROUPS, ITEMS_PER_GROUP, USERS_PER_GROUP = 4, 10, 40
N_ITEMS = GROUPS * ITEMS_PER_GROUP


def group_of_item(i: int) -> int:
    return i // ITEMS_PER_GROUP


def planted_rows(rng: np.random.Generator, n_users: int, group: int) -> np.ndarray:
    """Users of one taste group: 4..7 items of their group, rarely one other."""
    m = np.zeros((n_users, N_ITEMS), np.float32)
    for u in range(n_users):
        own = rng.choice(ITEMS_PER_GROUP, size=rng.integers(4, 8), replace=False) + group * ITEMS_PER_GROUP
        m[u, own] = 1.0
        if rng.random() < 0.2:
            m[u, rng.integers(N_ITEMS)] = 1.0
    return m


def planted_snapshot(path: Path, seed: int = 0, extra: np.ndarray | None = None) -> Snapshot:
    """GROUPS x USERS_PER_GROUP users (raw ids u0, u1, ...), 80% train, 10% validation, 10% test; items i0..i39;
    `extra` rows (e.g. fake profiles) are added as training users after them. Saved at `path`."""
    rng = np.random.default_rng(seed)
    m = np.vstack([planted_rows(rng, USERS_PER_GROUP, g) for g in range(GROUPS)])
    m = m[rng.permutation(len(m))]
    n_val = len(m) // 10
    if extra is not None:
        m = np.vstack([m, extra])
    n = len(m)
    val_rows, test_rows, train_rows = np.arange(n_val), np.arange(n_val, 2 * n_val), np.arange(2 * n_val, n)
    h = sp.csr_matrix(m)

    def split(rows: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        part = h[rows].toarray()
        tr = part.copy()
        for r in range(len(tr)):
            nz = np.flatnonzero(tr[r])
            tr[r, nz[: max(1, len(nz) // 5)]] = 0.0
        return sp.csr_matrix(tr), sp.csr_matrix(part - tr)

    vtr, vte = split(val_rows)
    ttr, tte = split(test_rows)
    snap = Snapshot(matrices={"train": h[train_rows], "validation_tr": vtr, "validation_te": vte, "test_tr": ttr,
                              "test_te": tte},
                    rows={"train": train_rows, "validation_tr": val_rows, "validation_te": val_rows,
                          "test_tr": test_rows, "test_te": test_rows},
                    users=IdMap([f"u{k}" for k in range(n)]), items=IdMap([f"i{k}" for k in range(N_ITEMS)]),
                    manifest={})
    return Snapshot.load(snap.save(path))


def trained_vae(snap: Snapshot, epochs: int = 60, kind: str = "vae") -> object:
    """A small Mult-VAE (or another kind) trained on the snapshot's training users, without evaluation."""
    from recvae.training import train

    config = Config(model=ModelConfig(kind=kind, hidden_dims=(32,), latent_dim=8, dropout=0.2),
                    train=TrainConfig(epochs=epochs, batch_size=64, lr=1e-2, total_anneal_steps=200,
                                      scale_anneal_to_data=False, device="cpu", seed=3))
    return train(snap, config, out_dir=None, select_on=None).recommender

"""Small data and configs shared by the model tests."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recvae.config import Config, ModelConfig, TrainConfig

N_ITEMS = 30


def random_csr(rng: np.random.Generator, n_rows: int = 12, n_items: int = N_ITEMS,
               density: float = 0.2) -> sp.csr_matrix:
    """A binary users x items matrix with no empty row."""
    m = rng.random((n_rows, n_items)) < density
    m[:, 0] |= ~m.any(1)  # no empty rows
    return sp.csr_matrix(m.astype(np.float32))


def small_config(kind: str = "vae", **train: object) -> Config:
    """A model small and fast enough for tests: one 32-wide layer (RecVAE: two), 16 latent dimensions."""
    c = Config()
    c.model = ModelConfig(kind=kind, hidden_dims=(32, 32) if kind == "recvae" else (32,), latent_dim=16)
    c.train = TrainConfig(epochs=20, batch_size=32, lr=5e-3, num_threads=1, eval_batch_size=7)
    for k, v in train.items():
        setattr(c.train, k, v)
    return c

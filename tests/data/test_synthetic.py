"""Synthetic generator: deterministic, MovieLens-shaped, and with structure a model can learn."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae.config import DataConfig, SplitConfig
from recvae.data import synthetic
from recvae.data.preprocess import preprocess
from recvae.data.split import strong_split
from recvae.evaluation.metrics import evaluate


@pytest.fixture(scope="module")
def small():
    return synthetic.generate("small")


def test_deterministic_with_a_seed(small):
    again = synthetic.generate("small")
    assert small.equals(again)
    other = synthetic.generate("small", seed=1)
    assert not small[["user", "item"]].equals(other[["user", "item"]])


def test_contract_and_shape(small):
    assert list(small.columns) == ["user", "item", "rating", "timestamp"]
    assert small["user"].dtype == np.int64 and small["item"].dtype == np.int64
    assert small["rating"].dtype == np.float64 and small["timestamp"].dtype == np.int64
    spec = synthetic.PRESETS["small"]
    assert small["user"].nunique() == spec.n_users
    assert small["item"].between(1, spec.n_items).all()
    assert not small.duplicated(["user", "item"]).any()
    assert set(np.unique(small["rating"] * 2)) <= set(range(1, 11))  # half stars 0.5..5
    assert small.groupby("user").size().min() >= 1
    # about half the ratings are positives (> 3.5), as in MovieLens
    assert 0.3 < (small["rating"] > 3.5).mean() < 0.7


def test_popularity_is_heavy_tailed(small):
    counts = np.sort(small["item"].value_counts().to_numpy())[::-1]
    top_tenth = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_tenth > 0.3  # a uniform catalogue would give 0.10
    assert counts[0] > 5 * np.median(counts)


def _item_knn_scores(train: sp.csr_matrix):
    sim = (train.T @ train).toarray().astype(np.float32)
    norms = np.sqrt(np.diag(sim)) + 1e-9
    sim = sim / norms[:, None] / norms[None, :]
    np.fill_diagonal(sim, 0.0)
    return lambda x: torch.from_numpy(np.asarray(x @ sim, dtype=np.float32))


def test_a_collaborative_model_clearly_beats_popularity(small):
    df, _ = preprocess(small, DataConfig())
    snap = strong_split(df, SplitConfig(n_heldout_users=300))
    pop = np.asarray(snap.train.sum(axis=0), dtype=np.float32).ravel()
    popularity = lambda x: torch.from_numpy(np.tile(pop, (x.shape[0], 1)))  # noqa: E731
    fold_in, held_out = snap.heldout("test")
    ndcg_pop = evaluate(popularity, fold_in, held_out, metrics=["ndcg@100"]).means["ndcg@100"]
    ndcg_knn = evaluate(_item_knn_scores(snap.train), fold_in, held_out, metrics=["ndcg@100"]).means["ndcg@100"]
    assert ndcg_knn > 1.5 * ndcg_pop


def test_overrides_and_errors():
    df = synthetic.generate("small", n_users=50, n_items=80, mean_per_user=15, min_per_user=5, seed=4)
    assert df["user"].nunique() == 50 and df["item"].max() <= 80
    with pytest.raises(ValueError, match="unknown synthetic preset"):
        synthetic.generate("huge")
    with pytest.raises(ValueError, match="unknown synthetic parameter"):
        synthetic.generate("small", n_user=3)
    with pytest.raises(ValueError, match="too large"):
        synthetic.generate("small", n_items=10)


def test_ml20m_preset_shape_at_reduced_scale():
    """The ML-20M preset scaled to 3,000 users keeps ML-20M's ratios: half positives, ~72 per user."""
    spec = synthetic.spec_for("ml-20m")
    assert (spec.n_users, spec.n_items) == (136_700, 20_108)
    df = synthetic.generate("ml-20m", n_users=3_000)
    kept, stats = preprocess(df, DataConfig())
    assert 0.45 < stats["after_binarize"] / stats["rows_read"] < 0.6
    assert 60 < len(kept) / kept["user"].nunique() < 85
    assert kept["user"].nunique() > 0.99 * 3_000

"""recvae.training and scoring on CUDA: a short fit, a checkpoint loaded on the CPU, the same scores and top-N."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae.config import Config, apply_overrides
from recvae.models.base import load_recommender
from recvae.models.neural import MultVAERecommender
from recvae.serving.topn import iter_topn
from recvae.training import TrainResult, fit_model, load_best

pytestmark = pytest.mark.cuda
SETTINGS = {"train.device": "cuda", "train.epochs": 5, "train.batch_size": 64, "model.hidden_dims": [64],
            "model.latent_dim": 16, "train.eval_batch_size": 100}


def _validation(X: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The first 50 users' items split in two: fold-in (even positions) and held-out (odd positions)."""
    part = X[:50].tocoo()
    odd = np.arange(part.nnz) % 2 == 1
    halves = [sp.csr_matrix((part.data[m], (part.row[m], part.col[m])), shape=part.shape) for m in (~odd, odd)]
    return halves[0], halves[1]


def _fit(X: sp.csr_matrix, out: Path | None = None, amp: str = "none") -> TrainResult:
    config = apply_overrides(Config(), {**SETTINGS, "train.amp": amp}).validate()
    return fit_model(X, _validation(X), config, out, select_on="validation")


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_a_short_fit_on_cuda_learns_and_keeps_the_weights_there(interactions: sp.csr_matrix, amp: str) -> None:
    result = _fit(interactions, amp=amp)
    losses = [h["loss"] for h in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert result.recommender.device.type == "cuda"
    assert result.best_metrics["ndcg@100"] > 0


def test_checkpoint_saved_on_cuda_loads_on_the_cpu_with_the_same_scores(interactions: sp.csr_matrix,
                                                                         tmp_path: Path) -> None:
    result = _fit(interactions, tmp_path / "run")
    on_gpu = result.recommender.scores(interactions)
    from_checkpoint = load_best(tmp_path / "run")
    assert from_checkpoint.device.type == "cpu"
    torch.testing.assert_close(from_checkpoint.scores(interactions), on_gpu, rtol=1e-4, atol=1e-4)
    saved = load_recommender(result.recommender.save(tmp_path / "model"))
    assert isinstance(saved, MultVAERecommender) and saved.device.type == "cpu"
    torch.testing.assert_close(saved.scores(interactions), on_gpu, rtol=1e-4, atol=1e-4)


def test_top_n_on_cuda_matches_the_cpu(interactions: sp.csr_matrix, tmp_path: Path) -> None:
    rec = _fit(interactions).recommender
    gpu = list(iter_topn(rec, interactions, 10, chunk_size=128, device="cuda"))
    cpu_rec = load_recommender(rec.save(tmp_path / "model"))
    cpu = list(iter_topn(cpu_rec, interactions, 10, chunk_size=128, device="cpu"))
    for g, c in zip(gpu, cpu, strict=True):
        np.testing.assert_array_equal(g.rows, c.rows)
        np.testing.assert_array_equal(g.counts, c.counts)
        np.testing.assert_allclose(g.scores, c.scores, rtol=1e-4, atol=1e-4)
        # ties aside, the same items: every CPU item is within the GPU's list
        assert np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(g.items, c.items, strict=True)]) > 0.98
        seen = interactions[g.rows].toarray() > 0
        assert not np.take_along_axis(seen, np.maximum(g.items, 0), axis=1)[g.items >= 0].any()

"""The ensemble recommender: the mean of its members' softmax, saved and loaded with its members."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from recommender_contract import RecommenderContract

from recvae.config import Config, ModelConfig, TrainConfig
from recvae.data.idmap import IdMap
from recvae.models.base import Estimator, load_recommender
from recvae.models.baselines import EASE, Popularity
from recvae.models.ensemble import MEMBERS_DIR, Ensemble
from recvae.training import VAETrainer


def vae(seed: int) -> VAETrainer:
    return VAETrainer(Config(model=ModelConfig(hidden_dims=(32,), latent_dim=16),
                             train=TrainConfig(epochs=20, batch_size=32, lr=5e-3, num_threads=1, seed=seed)))


@dataclass
class EnsembleOf:
    """The ensemble of what its members' estimators fit (an ensemble is built from fitted members)."""

    members: list[Estimator]

    def fit(self, train: sp.csr_matrix) -> Ensemble:
        return Ensemble([m.fit(train) for m in self.members])


class TestEnsembleContract(RecommenderContract):
    def make_model(self) -> EnsembleOf:
        return EnsembleOf([vae(1), vae(2)])


def matrix(seed: int = 0, n_users: int = 40, n_items: int = 25) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    m = rng.random((n_users, n_items)) < 0.2
    m[:, 0] = True
    return sp.csr_matrix(m.astype(np.float32))


def test_scores_are_the_log_of_the_mean_softmax() -> None:
    X = matrix()
    members = [Popularity().fit(X), EASE(lam=10.0).fit(X), EASE(lam=200.0).fit(X)]
    expected = torch.stack([torch.softmax(m.scores(X), dim=1) for m in members]).mean(0).log()
    ens = Ensemble(members)
    torch.testing.assert_close(ens.scores(X), expected)
    assert ens.scores(X).dtype == torch.float32 and ens.n_items == 25
    # two copies of one model rank exactly as that model does
    twice = Ensemble([members[1], members[1]])
    torch.testing.assert_close(twice.scores(X), torch.log_softmax(members[1].scores(X), dim=1))


def test_members_must_agree_on_items() -> None:
    X = matrix()
    with pytest.raises(ValueError, match="at least 2"):
        Ensemble([Popularity().fit(X)])
    with pytest.raises(ValueError, match="different numbers of items"):
        Ensemble([Popularity().fit(X), Popularity().fit(matrix(n_items=30))])
    a, b = Popularity().fit(X), Popularity().fit(X)
    a.items, b.items = IdMap(np.arange(25)), IdMap(np.arange(25)[::-1])
    with pytest.raises(ValueError, match="different item columns"):
        Ensemble([a, b])
    b.items = IdMap(np.arange(25))
    assert Ensemble([a, b]).items == a.items


def test_save_load_keeps_every_member_and_refuses_a_missing_one(tmp_path) -> None:
    X = matrix()
    ens = Ensemble([Popularity().fit(X), EASE(lam=50.0).fit(X)])
    ens.save(tmp_path / "e")
    loaded = load_recommender(tmp_path / "e")
    assert isinstance(loaded, Ensemble) and [m.kind for m in loaded.members] == ["popularity", "ease"]
    assert loaded.params() == ens.params()
    torch.testing.assert_close(loaded.scores(X), ens.scores(X))
    import shutil

    shutil.rmtree(tmp_path / "e" / MEMBERS_DIR / "1")
    with pytest.raises(ValueError, match="missing"):
        load_recommender(tmp_path / "e")

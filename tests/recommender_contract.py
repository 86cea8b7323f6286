"""Behavioural contract every Recommender passes: subclass `RecommenderContract` in a test module.

A subclass implements `make_model()` (an `Estimator` with fixed hyperparameters: an unfitted baseline, or
`recvae.training.VAETrainer` for the neural models); it may override `fit_model()` and set `personalized = False`
for a model that scores every user the same. The tests check the `Recommender` that fitting returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae.data.idmap import IdMap
from recvae.evaluation.metrics import evaluate, mask_seen
from recvae.models.base import Estimator, Recommender, load_recommender, read_meta


@dataclass
class Planted:
    """Users drawn from taste groups: each group owns a block of items, liked with item-specific probability."""

    train: sp.csr_matrix
    foldin: sp.csr_matrix  # held-out users (not in train): the part the model sees
    heldout: sp.csr_matrix  # the same users: the part to predict
    heldout_groups: np.ndarray  # taste group of each held-out user
    item_groups: np.ndarray  # group owning each item
    items: IdMap


def planted_data(
    seed: int = 0,
    n_groups: int = 4,
    items_per_group: int = 20,
    n_train_users: int = 240,
    n_heldout_users: int = 60,
    noise: float = 0.02,
    foldin_share: float = 0.6,
) -> Planted:
    """A small planted-structure data set; popularity varies within each group so popularity beats random."""
    rng = np.random.default_rng(seed)
    n_items = n_groups * items_per_group
    item_groups = np.repeat(np.arange(n_groups), items_per_group)
    like = np.tile(np.linspace(0.9, 0.15, items_per_group), n_groups)
    # Group sizes differ so that item popularity also differs between groups.
    group_p = np.linspace(2.0, 1.0, n_groups)
    group_p /= group_p.sum()

    def users(n: int) -> tuple[np.ndarray, np.ndarray]:
        groups = rng.choice(n_groups, size=n, p=group_p)
        p = np.where(item_groups[None, :] == groups[:, None], like[None, :], noise)
        m = rng.random((n, n_items)) < p
        # every user gets at least two items of their own group
        for u in range(n):
            own = np.flatnonzero(item_groups == groups[u])
            m[u, own[:2]] = True
        return groups, m

    _, train = users(n_train_users)
    groups, held = users(n_heldout_users)
    to_foldin = held & (rng.random(held.shape) < foldin_share)
    for u in range(n_heldout_users):  # both parts non-empty
        items = np.flatnonzero(held[u])
        if not to_foldin[u].any():
            to_foldin[u, items[0]] = True
        if not (held[u] & ~to_foldin[u]).any():
            to_foldin[u, items[-1]] = False

    def csr(m: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix(m.astype(np.float32))

    return Planted(
        train=csr(train),
        foldin=csr(to_foldin),
        heldout=csr(held & ~to_foldin),
        heldout_groups=groups,
        item_groups=item_groups,
        items=IdMap(np.array([f"item-{i:04d}" for i in range(n_items)], dtype=object)),
    )


def random_scores(n_items: int, seed: int = 0):
    """A score function ranking items uniformly at random (the floor a model must beat)."""
    gen = torch.Generator().manual_seed(seed)
    return lambda X: torch.rand((X.shape[0], n_items), generator=gen)


class RecommenderContract:
    """Mixin of behavioural tests for a `Recommender` subclass."""

    personalized: ClassVar[bool] = True
    # NDCG@10 margin over random ranking required on the planted data.
    min_gain_over_random: ClassVar[float] = 0.05

    def make_model(self) -> Estimator:
        raise NotImplementedError

    def fit_model(self, model: Estimator, train: sp.csr_matrix) -> Recommender:
        return model.fit(train)

    @pytest.fixture(scope="class")
    @classmethod
    def planted(cls) -> Planted:
        return planted_data()

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, planted: Planted) -> Recommender:
        helper = cls()
        model = helper.fit_model(helper.make_model(), planted.train)
        model.items = planted.items
        return model

    def test_scores_shape_and_dtype(self, fitted: Recommender, planted: Planted) -> None:
        n_items = planted.train.shape[1]
        s = fitted.scores(planted.foldin)
        assert isinstance(s, torch.Tensor)
        assert s.dtype == torch.float32
        assert tuple(s.shape) == (planted.foldin.shape[0], n_items)
        assert torch.isfinite(s).all()
        assert fitted.n_items == n_items
        assert tuple(fitted.scores(planted.foldin[:1]).shape) == (1, n_items)
        assert tuple(fitted.scores(planted.foldin[:0]).shape) == (0, n_items)

    def test_ranking_scores_rank_as_scores_and_are_the_callers(self, fitted: Recommender, planted: Planted) -> None:
        s = fitted.scores(planted.foldin)
        r = fitted.ranking_scores(planted.foldin)
        assert tuple(r.shape) == tuple(s.shape) and r.dtype in (torch.float32, torch.bfloat16, torch.float16)
        torch.testing.assert_close(r.float(), s, rtol=1e-2, atol=1e-2 * float(s.abs().max()))
        r.fill_(float("-inf"))  # top-N masks seen items in place: that must not reach the model
        torch.testing.assert_close(fitted.scores(planted.foldin), s)

    def test_scores_do_not_depend_on_batch(self, fitted: Recommender, planted: Planted) -> None:
        whole = fitted.scores(planted.foldin)
        rows = torch.cat([fitted.scores(planted.foldin[i : i + 1]) for i in range(5)])
        torch.testing.assert_close(rows, whole[:5], rtol=1e-5, atol=1e-5)

    def test_foldin_users_get_their_own_scores(self, fitted: Recommender, planted: Planted) -> None:
        s = fitted.scores(planted.foldin)
        g = planted.heldout_groups
        a, b = int(np.flatnonzero(g == g[0])[0]), int(np.flatnonzero(g != g[0])[0])
        # users unseen in training, from different taste groups
        assert torch.allclose(s[a], s[b]) != self.personalized

    def test_deterministic(self, fitted: Recommender, planted: Planted) -> None:
        s = fitted.scores(planted.foldin)
        assert torch.equal(s, fitted.scores(planted.foldin))
        again = self.fit_model(self.make_model(), planted.train)
        torch.testing.assert_close(again.scores(planted.foldin), s, rtol=1e-5, atol=1e-6)

    def test_save_load_round_trip(self, fitted: Recommender, planted: Planted, tmp_path) -> None:
        fitted.save(tmp_path / "model", snapshot_id="snap-test")
        loaded = load_recommender(tmp_path / "model")
        assert type(loaded) is type(fitted)
        assert loaded.kind == fitted.kind
        assert loaded.params() == fitted.params()
        assert loaded.n_items == fitted.n_items
        assert loaded.items == planted.items
        assert read_meta(tmp_path / "model")["snapshot_id"] == "snap-test"
        assert torch.equal(loaded.scores(planted.foldin), fitted.scores(planted.foldin))
        assert not list((tmp_path / "model").glob("*.pkl")) and not list((tmp_path / "model").glob("*.pickle"))

    def test_planted_group_items_rank_high(self, fitted: Recommender, planted: Planted) -> None:
        s = mask_seen(fitted.scores(planted.foldin).clone(), planted.foldin)
        precisions = []
        for u in range(planted.foldin.shape[0]):
            own = planted.item_groups == planted.heldout_groups[u]
            own[planted.foldin[u].indices] = False  # unseen items of the user's group
            k = min(10, int(own.sum()))
            if k == 0:
                continue
            top = torch.topk(s[u], k).indices.numpy()
            precisions.append(own[top].mean())
        # a model that ignores the user ranks other groups' items too (about 1/3 here), and so fails
        if self.personalized:
            assert np.mean(precisions) > 0.8
        else:
            assert np.mean(precisions) < 0.6

    def test_better_than_random(self, fitted: Recommender, planted: Planted) -> None:
        names = ("ndcg@10", "recall@10")
        model = evaluate(fitted.scores, planted.foldin, planted.heldout, names).means
        chance = evaluate(random_scores(planted.train.shape[1]), planted.foldin, planted.heldout, names).means
        assert model["ndcg@10"] > chance["ndcg@10"] + self.min_gain_over_random
        assert model["recall@10"] > chance["recall@10"]

"""Popularity, EASE and ALS: the recommender contract plus each model's own maths, tuning and limits."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from recommender_contract import Planted, RecommenderContract, planted_data

from recvae.data.idmap import IdMap
from recvae.data.snapshot import Snapshot
from recvae.evaluation.metrics import evaluate
from recvae.models.baselines import ALS, EASE, Popularity, fit_baseline, make_baseline, param_grid, spd_inverse, tune


class TestPopularityContract(RecommenderContract):
    personalized = False

    def make_model(self):
        return Popularity()


class TestEASEContract(RecommenderContract):
    def make_model(self):
        return EASE(lam=50.0)


class TestALSContract(RecommenderContract):
    def make_model(self):
        return ALS(factors=8, regularization=0.1, alpha=2.0, iterations=10, random_state=0)


def _random_binary(rng, shape, density=0.3) -> sp.csr_matrix:
    m = (rng.random(shape) < density).astype(np.float32)
    m[:, 0] = 1.0  # no empty column
    return sp.csr_matrix(m)


def test_ease_equals_numpy_closed_form(rng):
    X = _random_binary(rng, (40, 12))
    lam = 3.0
    Xd = X.toarray().astype(np.float64)
    P = np.linalg.inv(Xd.T @ Xd + lam * np.eye(12))
    B_ref = -P / np.diag(P)[None, :]
    np.fill_diagonal(B_ref, 0.0)
    model = EASE(lam=lam).fit(X)
    np.testing.assert_allclose(model.B, B_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.scores(X[:5]).numpy(), Xd[:5] @ B_ref, rtol=1e-4, atol=1e-5)


def test_ease_columns_are_ridge_regressions_on_the_other_items(rng):
    # Steck's theorem, checked directly: column j of B regresses item j on every other item (zero diagonal).
    X = _random_binary(rng, (50, 9)).toarray().astype(np.float64)
    lam = 2.0
    B = EASE(lam=lam).fit(sp.csr_matrix(X)).B
    for j in range(9):
        others = np.delete(np.arange(9), j)
        A = X[:, others]
        b = np.linalg.solve(A.T @ A + lam * np.eye(8), A.T @ X[:, j])
        np.testing.assert_allclose(B[others, j], b, rtol=1e-4, atol=1e-5)
        assert B[j, j] == 0.0


def test_ease_refuses_an_item_count_that_does_not_fit():
    huge = sp.csr_matrix((3, 3_000_000), dtype=np.float32)  # 3M^2 dense entries: far beyond any memory
    with pytest.raises(MemoryError, match="3,000,000 x 3,000,000"):
        EASE().fit(huge)
    small = sp.csr_matrix(np.eye(20, dtype=np.float32))
    with pytest.raises(MemoryError, match="GiB in float32"):
        EASE(max_memory_bytes=EASE.memory_needed(20, np.float32) - 1).fit(small)
    assert EASE(max_memory_bytes=EASE.memory_needed(20, np.float32)).fit(small).B.shape == (20, 20)


def test_ease_falls_back_to_a_float32_work_matrix_when_float64_does_not_fit(rng, caplog):
    # Gowalla's 40,981 items need 20 GiB in float64 but 6.7 GiB in float32: EASE must still fit, to the same weights.
    X = _random_binary(rng, (300, 60))
    exact = EASE(lam=20.0).fit(X)
    tight = EASE(lam=20.0, max_memory_bytes=EASE.memory_needed(60) - 1)
    assert tight.work_dtype(60) == np.float32 and exact.work_dtype(60) == np.float64
    with caplog.at_level("INFO", logger="recvae.models.baselines.ease"):
        tight.fit(X)
    assert "float32 work matrix" in caplog.text
    assert tight.B.dtype == np.float32 and np.all(np.diag(tight.B) == 0.0)
    np.testing.assert_allclose(tight.B, exact.B, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tight.scores(X).numpy(), exact.scores(X).numpy(), rtol=1e-4, atol=1e-4)


def test_spd_inverse_float32_inverts_in_float32(rng):
    A = rng.standard_normal((30, 30))
    G = (A @ A.T + 30 * np.eye(30)).astype(np.float32)
    work = G.copy()
    P = spd_inverse(work)
    assert P.dtype == np.float32
    assert np.shares_memory(P, work)  # in place: a second n x n matrix would double EASE's memory
    np.testing.assert_allclose(P, np.linalg.inv(G.astype(np.float64)), rtol=1e-4, atol=1e-6)


def test_ease_rejects_non_positive_lambda():
    with pytest.raises(ValueError, match="lam"):
        EASE(lam=0.0)


def test_popularity_orders_items_by_training_count():
    counts = np.array([3, 0, 5, 1, 4])
    rows, cols = [], []
    for item, c in enumerate(counts):
        rows += list(range(c))
        cols += [item] * c
    train = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(6, 5))
    model = Popularity().fit(train)
    s = model.scores(sp.csr_matrix(np.eye(3, 5, dtype=np.float32)))
    assert torch.equal(s[0], s[1]) and torch.equal(s[1], s[2])
    assert s[0].argsort(descending=True).tolist() == [2, 4, 0, 3, 1]
    np.testing.assert_array_equal(s[0].numpy(), counts.astype(np.float32))


def test_als_folds_in_new_users_by_regularized_least_squares(rng):
    p = planted_data(n_train_users=120, n_heldout_users=10)
    model = ALS(factors=6, regularization=0.5, alpha=4.0, iterations=8).fit(p.train)
    V = model.item_factors.astype(np.float64)
    U = model.user_factors(p.foldin)
    for u in range(p.foldin.shape[0]):
        # implicit's objective: confidence alpha*r on observed items, 1 elsewhere; preference 1 on observed items
        c = np.ones(V.shape[0])
        pref = np.zeros(V.shape[0])
        obs = p.foldin[u].indices
        c[obs] = model.alpha * p.foldin[u].data
        pref[obs] = 1.0
        A = V.T @ (c[:, None] * V) + model.regularization * np.eye(V.shape[1])
        x = np.linalg.solve(A, V.T @ (c * pref))
        np.testing.assert_allclose(U[u], x, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(model.scores(p.foldin), torch.from_numpy(U @ model.item_factors.T))


def test_als_uses_implicits_cpu_model():
    from implicit.cpu.als import AlternatingLeastSquares

    model = ALS(factors=4, iterations=2).fit(planted_data().train)
    assert isinstance(model._model, AlternatingLeastSquares)


def test_make_baseline_names_unknown_kinds_and_params():
    with pytest.raises(ValueError, match="unknown baseline 'knn'"):
        make_baseline("knn")
    with pytest.raises(ValueError, match="unknown parameter.*lambda.*known: lam"):
        make_baseline("ease", **{"lambda": 5})


def test_fit_baseline_attaches_items():
    p = planted_data()
    model = fit_baseline("ease", p.train, items=p.items, lam=20.0)
    assert isinstance(model, EASE) and model.lam == 20.0 and model.items == p.items
    with pytest.raises(ValueError, match="item id map has 3 ids"):
        fit_baseline("popularity", p.train, items=IdMap(["a", "b", "c"]))


def test_param_grid_is_the_cartesian_product():
    assert param_grid({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert param_grid({}) == [{}]
    with pytest.raises(ValueError, match="non-empty list"):
        param_grid({"a": []})


def _snapshot(validation: Planted, test: Planted) -> Snapshot:
    n_train, n_val, n_test = validation.train.shape[0], validation.foldin.shape[0], test.foldin.shape[0]
    matrices = {
        "train": validation.train,
        "validation_tr": validation.foldin,
        "validation_te": validation.heldout,
        "test_tr": test.foldin,
        "test_te": test.heldout,
    }
    offsets = np.cumsum([0, n_train, n_val, n_test])
    rows = {
        "train": np.arange(offsets[0], offsets[1]),
        "validation_tr": np.arange(offsets[1], offsets[2]),
        "validation_te": np.arange(offsets[1], offsets[2]),
        "test_tr": np.arange(offsets[2], offsets[3]),
        "test_te": np.arange(offsets[2], offsets[3]),
    }
    return Snapshot(matrices=matrices, rows=rows, users=IdMap(np.arange(offsets[3])), items=validation.items)


def test_tune_picks_the_best_grid_point_on_validation_users():
    val = planted_data(seed=1)
    # test users drawn with other seeds and a denser held-out part: their figures differ from validation's
    test = planted_data(seed=2, foldin_share=0.3)
    snap = _snapshot(val, test)
    grid = {"lam": [0.1, 30.0, 3000.0]}
    best, table = tune("ease", snap, grid)
    assert [row["lam"] for row in table] == grid["lam"]
    expected = {
        lam: evaluate(EASE(lam=lam).fit(val.train).scores, val.foldin, val.heldout, ("ndcg@100",)).means["ndcg@100"]
        for lam in grid["lam"]
    }
    for row in table:
        assert row["ndcg@100"] == pytest.approx(expected[row["lam"]], abs=1e-9)
        assert row["n_users"] == val.foldin.shape[0]
    assert best == {"lam": max(expected, key=expected.get)}
    on_test = {
        lam: evaluate(EASE(lam=lam).fit(val.train).scores, test.foldin, test.heldout, ("ndcg@100",)).means["ndcg@100"]
        for lam in grid["lam"]
    }
    assert any(abs(on_test[lam] - expected[lam]) > 1e-6 for lam in grid["lam"])  # so test data would show


def test_tune_rejects_a_bad_grid_before_fitting():
    snap = _snapshot(planted_data(seed=1), planted_data(seed=2))
    with pytest.raises(ValueError, match="unknown parameter"):
        tune("als", snap, {"factors": [4], "learning_rate": [0.1]})

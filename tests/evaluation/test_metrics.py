"""recvae.evaluation.metrics against plain-Python loops written from the paper's definitions (Liang et al. 2018)
and LightGCN's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae.evaluation.metrics import evaluate, mask_seen, ndcg_at_k, per_user_metrics, recall_at_k


def ranking(scores: list[float], excluded: set[int]) -> list[int]:
    """Items by decreasing score, excluded items removed (scores are distinct)."""
    return [i for i in sorted(range(len(scores)), key=lambda i: -scores[i]) if i not in excluded]


def ndcg_loop(scores: list[float], relevant: set[int], k: int, excluded: set[int] = frozenset()) -> float:
    top = ranking(scores, excluded)[:k]
    dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(top) if item in relevant)
    idcg = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return dcg / idcg


def recall_loop(
    scores: list[float], relevant: set[int], k: int, denominator: str, excluded: set[int] = frozenset()
) -> float:
    hits = sum(1 for item in ranking(scores, excluded)[:k] if item in relevant)
    return hits / (min(k, len(relevant)) if denominator == "min" else len(relevant))


def random_case(rng: np.random.Generator, n_users: int = 40, n_items: int = 60, density: float = 0.15):
    scores = rng.standard_normal((n_users, n_items)).astype(np.float32)
    held = rng.random((n_users, n_items)) < density
    held[:3] = False  # users without held-out items
    held[3, :] = False
    held[3, :30] = True  # more relevant items than k for small k
    return scores, held


@pytest.mark.parametrize("k", [1, 5, 20, 100])
def test_ndcg_and_recall_match_loops(rng, k: int) -> None:
    scores, held = random_case(rng)
    s, h = torch.from_numpy(scores), torch.from_numpy(held.astype(np.float32))
    ndcg = ndcg_at_k(s, h, k).numpy()
    rec_min = recall_at_k(s, h, k, "min").numpy()
    rec_all = recall_at_k(s, h, k, "all").numpy()
    kk = min(k, scores.shape[1])
    for u in range(scores.shape[0]):
        rel = set(np.flatnonzero(held[u]).tolist())
        if not rel:
            assert np.isnan(ndcg[u]) and np.isnan(rec_min[u]) and np.isnan(rec_all[u])
            continue
        assert ndcg[u] == pytest.approx(ndcg_loop(scores[u].tolist(), rel, kk), abs=1e-9)
        assert rec_min[u] == pytest.approx(recall_loop(scores[u].tolist(), rel, kk, "min"), abs=1e-12)
        assert rec_all[u] == pytest.approx(recall_loop(scores[u].tolist(), rel, kk, "all"), abs=1e-12)


def test_several_metrics_from_one_ranking_match_the_plain_loops(rng) -> None:
    """per_user_metrics ranks once for the largest k and reads smaller k from its prefix."""
    scores, held = random_case(rng)
    s, h = torch.from_numpy(scores), torch.from_numpy(held.astype(np.float32))
    names = ["recall@5", "ndcg@100", "recall_all@20", "ndcg@3", "recall@50"]
    out = {name: v.numpy() for name, v in per_user_metrics(s, h, names).items()}
    assert list(out) == names
    for u in range(scores.shape[0]):
        rel = set(np.flatnonzero(held[u]).tolist())
        if not rel:
            assert all(np.isnan(v[u]) for v in out.values())
            continue
        row = scores[u].tolist()
        assert out["ndcg@100"][u] == pytest.approx(ndcg_loop(row, rel, 60), abs=1e-9)  # k above the item count
        assert out["ndcg@3"][u] == pytest.approx(ndcg_loop(row, rel, 3), abs=1e-9)
        assert out["recall@5"][u] == pytest.approx(recall_loop(row, rel, 5, "min"), abs=1e-12)
        assert out["recall@50"][u] == pytest.approx(recall_loop(row, rel, 50, "min"), abs=1e-12)
        assert out["recall_all@20"][u] == pytest.approx(recall_loop(row, rel, 20, "all"), abs=1e-12)


def test_recall_denominators_differ_only_when_more_relevant_than_k(rng) -> None:
    scores, held = random_case(rng)
    s, h = torch.from_numpy(scores), torch.from_numpy(held.astype(np.float32))
    a, b = recall_at_k(s, h, 5, "min").numpy(), recall_at_k(s, h, 5, "all").numpy()
    many = held.sum(1) > 5
    ok = ~np.isnan(a)
    assert np.allclose(a[ok & ~many], b[ok & ~many])
    assert (a[many] >= b[many]).all() and (a[many] > b[many]).any()
    with pytest.raises(ValueError, match="denominator"):
        recall_at_k(s, h, 5, "bogus")


def test_evaluate_excludes_seen_items_and_users_without_heldout(rng) -> None:
    n_users, n_items = 50, 80
    scores = rng.standard_normal((n_users, n_items)).astype(np.float32)
    seen = rng.random((n_users, n_items)) < 0.2
    held = (rng.random((n_users, n_items)) < 0.1) & ~seen
    held[5] = False
    held[17] = False
    # seen items get the highest scores: only excluding them lets held-out items reach the top
    scores[seen] += 100.0
    foldin, heldout = sp.csr_matrix(seen.astype(np.float32)), sp.csr_matrix(held.astype(np.float32))
    table = torch.from_numpy(scores)

    offset = 0  # evaluate() scores the users in order, one batch per call

    def score_fn(X: sp.csr_matrix) -> torch.Tensor:
        nonlocal offset
        out = table[offset : offset + X.shape[0]].clone()
        offset += X.shape[0]
        return out

    names = ("ndcg@10", "recall@10", "recall_all@10", "ndcg@100")
    res = evaluate(score_fn, foldin, heldout, names, batch_size=16)  # several batches, the last one partial
    users = [u for u in range(n_users) if held[u].any()]
    assert res.n_users == len(users) < n_users
    for name in names:
        metric, k = name.split("@")
        k = int(k)
        expected = []
        for u in users:
            rel, excl = set(np.flatnonzero(held[u]).tolist()), set(np.flatnonzero(seen[u]).tolist())
            if metric == "ndcg":
                expected.append(ndcg_loop(scores[u].tolist(), rel, min(k, n_items), excl))
            else:
                expected.append(recall_loop(scores[u].tolist(), rel, k, "min" if metric == "recall" else "all", excl))
        assert res.means[name] == pytest.approx(float(np.mean(expected)), abs=1e-9)
        assert np.isnan(res.per_user[name][5]) and np.isnan(res.per_user[name][17])
        v = np.asarray(expected)
        assert res.stderr[name] == pytest.approx(v.std(ddof=1) / math.sqrt(len(v)), rel=1e-9)


def test_mask_seen_sets_minus_inf_only_on_seen(rng) -> None:
    seen = sp.csr_matrix((rng.random((6, 9)) < 0.3).astype(np.float32))
    s = mask_seen(torch.zeros(6, 9), seen)
    assert torch.equal(torch.isinf(s), torch.from_numpy(seen.toarray() > 0))


def test_per_user_metrics_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        per_user_metrics(torch.zeros(1, 3), torch.ones(1, 3), ["precision@3"])

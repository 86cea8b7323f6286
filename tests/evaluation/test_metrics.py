"""recvae.evaluation.metrics against plain-Python loops written from the paper's definitions (Liang et al. 2018)
and LightGCN's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae.evaluation import metrics
from recvae.evaluation.metrics import (
    DEFAULT_METRICS,
    evaluate,
    hitrate_at_k,
    map_at_k,
    mask_seen,
    mrr_at_k,
    ndcg_at_k,
    per_user_metrics,
    precision_at_k,
    recall_at_k,
)


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
        per_user_metrics(torch.zeros(1, 3), torch.ones(1, 3), ["auc@3"])
    for bad in ("precision@0", "precision", "precision@x", "map@-1"):
        with pytest.raises(ValueError, match="unknown metric"):
            per_user_metrics(torch.zeros(1, 3), torch.ones(1, 3), [bad])


# Hand-computed case. Scores fall with the item index, so every user's ranking is items 0, 1, 2, 3, 4, 5.
#   user 0: held-out {1, 3, 5}  top-4 hit flags 0 1 0 1
#   user 1: held-out {0}        top-4 hit flags 1 0 0 0  (fewer held-out items than k)
#   user 2: held-out {4, 5}     top-4 hit flags 0 0 0 0
#   user 3: held-out {}         NaN everywhere
HAND_SCORES = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]] * 4)
HAND_HELD = torch.tensor(
    [[0, 1, 0, 1, 0, 1], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.float32
)
HAND_EXPECTED = {
    # precision@4 = hits / 4: 2/4, 1/4, 0/4
    "precision@4": [0.5, 0.25, 0.0],
    # mrr@4 = 1 / rank of the first hit: 1/2, 1/1, no hit -> 0
    "mrr@4": [0.5, 1.0, 0.0],
    "hitrate@4": [1.0, 1.0, 0.0],
    # map@4 = sum of precision@i at hit ranks i / min(4, |held-out|):
    #   user 0: (P@2 + P@4) / 3 = (1/2 + 2/4) / 3 = 1/3; user 1: P@1 / 1 = 1; user 2: 0
    "map@4": [1 / 3, 1.0, 0.0],
    # k = 1: only item 0 counts
    "precision@1": [0.0, 1.0, 0.0],
    "mrr@1": [0.0, 1.0, 0.0],
    "hitrate@1": [0.0, 1.0, 0.0],
    "map@1": [0.0, 1.0, 0.0],
    # k = 10 above the 6 items is capped at 6: user 0 flags 0 1 0 1 0 1, user 2 flags 0 0 0 0 1 1
    #   precision: 3/6, 1/6, 2/6; mrr: 1/2, 1, 1/5
    #   map: (1/2 + 2/4 + 3/6) / min(6, 3) = 1/2; 1; (1/5 + 2/6) / 2 = 4/15
    "precision@10": [0.5, 1 / 6, 1 / 3],
    "mrr@10": [0.5, 1.0, 0.2],
    "hitrate@10": [1.0, 1.0, 1.0],
    "map@10": [0.5, 1.0, 4 / 15],
}


@pytest.mark.parametrize("name", list(HAND_EXPECTED))
def test_new_ranking_metrics_on_a_hand_computed_case(name: str) -> None:
    got = per_user_metrics(HAND_SCORES, HAND_HELD, [name])[name].numpy()
    assert got[:3] == pytest.approx(HAND_EXPECTED[name], abs=1e-15)
    assert np.isnan(got[3])
    metric, k = name.split("@")
    single = {"precision": precision_at_k, "mrr": mrr_at_k, "hitrate": hitrate_at_k, "map": map_at_k}[metric]
    assert np.array_equal(single(HAND_SCORES, HAND_HELD, int(k)).numpy(), got, equal_nan=True)


def test_all_metrics_in_one_call_match_each_alone() -> None:
    """One shared top-K for every name gives the same values as each metric computed alone."""
    together = per_user_metrics(HAND_SCORES, HAND_HELD, list(HAND_EXPECTED))
    for name in HAND_EXPECTED:
        alone = per_user_metrics(HAND_SCORES, HAND_HELD, [name])[name]
        assert torch.equal(together[name].nan_to_num(-1.0), alone.nan_to_num(-1.0))


def test_single_item_catalogue() -> None:
    scores, held = torch.tensor([[0.3], [0.1]]), torch.tensor([[1.0], [0.0]])
    out = per_user_metrics(scores, held, ["precision@5", "mrr@5", "hitrate@5", "map@5", "ndcg@5"])
    assert {n: v[0].item() for n, v in out.items()} == {n: 1.0 for n in out}
    assert all(np.isnan(v[1].item()) for v in out.values())


def ap_loop(scores: list[float], relevant: set[int], k: int) -> float:
    top = ranking(scores, set())[:k]
    hits, total = 0, 0.0
    for rank, item in enumerate(top, start=1):
        if item in relevant:
            hits += 1
            total += hits / rank
    return total / min(k, len(relevant))


def rr_loop(scores: list[float], relevant: set[int], k: int) -> float:
    return next((1.0 / r for r, item in enumerate(ranking(scores, set())[:k], start=1) if item in relevant), 0.0)


@pytest.mark.parametrize("k", [1, 5, 20, 100])
def test_new_ranking_metrics_match_loops(rng, k: int) -> None:
    scores, held = random_case(rng)
    s, h = torch.from_numpy(scores), torch.from_numpy(held.astype(np.float32))
    names = [f"precision@{k}", f"mrr@{k}", f"hitrate@{k}", f"map@{k}"]
    out = {n: v.numpy() for n, v in per_user_metrics(s, h, names).items()}
    kk = min(k, scores.shape[1])
    for u in range(scores.shape[0]):
        rel = set(np.flatnonzero(held[u]).tolist())
        if not rel:
            assert all(np.isnan(v[u]) for v in out.values())
            continue
        row = scores[u].tolist()
        n_hits = sum(1 for item in ranking(row, set())[:kk] if item in rel)
        assert out[f"precision@{k}"][u] == pytest.approx(n_hits / kk, abs=1e-12)
        assert out[f"hitrate@{k}"][u] == float(n_hits > 0)
        assert out[f"mrr@{k}"][u] == pytest.approx(rr_loop(row, rel, kk), abs=1e-12)
        assert out[f"map@{k}"][u] == pytest.approx(ap_loop(row, rel, kk), abs=1e-12)


def test_evaluate_takes_new_names_and_ranks_once_per_batch(rng, monkeypatch: pytest.MonkeyPatch) -> None:
    """New names ride on the same one top-K per batch; the default metric set is unchanged."""
    assert DEFAULT_METRICS == ("ndcg@100", "recall@20", "recall@50")
    calls = []
    real = metrics._ranked_hits

    def counting(scores: torch.Tensor, heldout: torch.Tensor, k: int):
        calls.append(k)
        return real(scores, heldout, k)

    monkeypatch.setattr(metrics, "_ranked_hits", counting)
    foldin = sp.csr_matrix(np.zeros((4, 6), dtype=np.float32))
    names = [*DEFAULT_METRICS, *HAND_EXPECTED]
    res = evaluate(lambda X: HAND_SCORES[: X.shape[0]].clone(), foldin, sp.csr_matrix(HAND_HELD.numpy()), names)
    assert calls == [6]  # one batch, one ranking at the largest k (capped at the 6 items)
    for name, expected in HAND_EXPECTED.items():
        assert res.means[name] == pytest.approx(float(np.mean(expected)), abs=1e-15)
    assert res.n_users == 3

"""The one top-N (scores, seen items masked, top-k, chunk by chunk) behind the batch job, the ad-hoc lists and the
served pyfunc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from cooc_model import N_ITEMS, Cooc, MasksOddItems, random_history, reference_topn

from recvae.data.idmap import IdMap
from recvae.serving.pyfunc import recommend_frame
from recvae.serving.recommend import expected_counts, recommend_to_store, topn_frame
from recvae.serving.store import RecommendationStore
from recvae.serving.topn import iter_topn, top_unseen

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def model(rng):
    return Cooc().fit(random_history(rng, 60))


# ---------------------------------------------------------------------------------------------------------------
# top_unseen: one chunk


def test_top_unseen_masks_seen_items_and_pads_short_rows():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.4, 0.2, 0.8, 0.6], [1.0, 2.0, 3.0, 4.0]])
    seen = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]], np.float32))
    vals, items, counts = top_unseen(scores, seen, 3)
    assert items.tolist() == [[2, 3, 0], [2, 3, 0], [3, -1, -1]]
    assert counts.tolist() == [3, 3, 1]
    assert torch.isneginf(vals[2, 1:]).all() and vals[0].tolist() == pytest.approx([0.5, 0.3, 0.1])
    assert torch.isneginf(scores[0, 1]), "the scores are overwritten (the caller's to give away)"



@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
@pytest.mark.parametrize("top_n", [5, 40])
def test_iter_topn_matches_brute_force(model, rng, chunk_size, top_n):
    history = random_history(rng, 23)
    scores = model.scores(history).numpy()
    expected = reference_topn(scores, history, top_n)
    got: dict[int, list[int]] = {}
    for t in iter_topn(model, history, top_n, chunk_size=chunk_size):
        assert t.items.shape == t.scores.shape == (len(t.rows), min(top_n, N_ITEMS))
        assert len(t.rows) <= chunk_size
        for row, items, scores, count in zip(t.rows, t.items, t.scores, t.counts, strict=True):
            got[int(row)] = items[:count].tolist()
            assert (items[count:] == -1).all() and np.isneginf(scores[count:]).all()
            assert np.isfinite(scores[:count]).all() and (np.diff(scores[:count]) <= 0).all()
    assert [got[r] for r in range(23)] == expected
    assert [len(got[r]) for r in range(23)] == expected_counts(history, top_n).tolist()
    assert len(got[0]) == 0 and len(got[1]) == min(2, top_n) and len(got[2]) == min(top_n, N_ITEMS)


def test_seen_items_are_never_recommended(model, rng):
    history = random_history(rng, 40, density=0.6)
    for t in iter_topn(model, history, 10, chunk_size=8):
        for row, items, count in zip(t.rows, t.items, t.counts, strict=True):
            assert not set(items[:count].tolist()) & set(history[row].indices.tolist())


def test_items_scored_minus_infinity_are_never_emitted(rng):
    model = MasksOddItems().fit(random_history(rng, 30))
    history = random_history(rng, 10)
    for t in iter_topn(model, history, 20, chunk_size=4):
        for row, items, count in zip(t.rows, t.items, t.counts, strict=True):
            unseen_even = [i for i in range(0, N_ITEMS, 2) if i not in set(history[row].indices)]
            assert count == min(20, len(unseen_even))
            assert all(i % 2 == 0 for i in items[:count])


def test_iter_topn_subset_of_rows_and_device(model, rng):
    history = random_history(rng, 12)
    full = {int(r): i[:c].tolist()
            for t in iter_topn(model, history, 4) for r, i, c in zip(t.rows, t.items, t.counts, strict=True)}
    part = list(iter_topn(model, history, 4, chunk_size=2, rows=np.array([3, 9, 11]), device="cpu"))
    assert [r for t in part for r in t.rows.tolist()] == [3, 9, 11]
    got = {int(r): i[:c].tolist() for t in part for r, i, c in zip(t.rows, t.items, t.counts, strict=True)}
    assert got == {k: full[k] for k in (3, 9, 11)}


def test_iter_topn_rejects_bad_scores(model, rng):
    history = random_history(rng, 4)

    class WrongShape(Cooc):
        def scores(self, X):
            return super().scores(X)[:, :-1]

    class NaNs(Cooc):
        def scores(self, X):
            s = super().scores(X)
            s[0, 3] = float("nan")
            return s

    with pytest.raises(ValueError, match="expected"):
        next(iter_topn(WrongShape().fit(history), history, 3))
    nan_history = history.copy().tolil()
    nan_history[0, 3] = 0  # the NaN item is unseen for user 0
    with pytest.raises(ValueError, match="NaN"):
        next(iter_topn(NaNs().fit(history), sp.csr_matrix(nan_history), 3))
    with pytest.raises(ValueError, match="item columns"):
        next(iter_topn(model, sp.csr_matrix((2, N_ITEMS + 1)), 3))


# ---------------------------------------------------------------------------------------------------------------
# one top-N for every path: batch rows, ad-hoc lists, the served pyfunc


def foldin_frame(history: sp.csr_matrix, items: IdMap) -> pd.DataFrame:
    """(user, item) raw-id rows of a history matrix; users u0, u1, ..."""
    coo = history.tocoo()
    return pd.DataFrame({"user": [f"u{r}" for r in coo.row], "item": items.to_raw(coo.col)})


def test_batch_adhoc_and_served_lists_are_the_same(tmp_path, rng):
    model = Cooc().fit(random_history(rng, 60))
    model.items = IdMap([f"m{i}" for i in range(N_ITEMS)])
    history = random_history(rng, 15)[3:]  # users with some history and some candidates left
    users = np.array([f"u{r}" for r in range(history.shape[0])], dtype=object)
    history_frame = foldin_frame(history, model.items)
    users_with_history = pd.unique(history_frame["user"])
    served = recommend_frame(model, history_frame, top_n=4)
    adhoc = topn_frame(model, history_frame, top_n=4, chunk_size=3)
    with RecommendationStore(f"sqlite:///{tmp_path}/r.db") as store:
        recommend_to_store(model, (users, history), store, 4, "k", "cooc", chunk_size=5)
        stored = [(u, r["rank"], r["item_id"]) for u in users_with_history
                  for r in store.query("user_top", user_id=u, n=4)]
    expected = reference_topn(model.scores(history).numpy(), history, 4)
    want = [(f"u{r}", rank + 1, f"m{i}") for r, items in enumerate(expected) for rank, i in enumerate(items)
            if f"u{r}" in set(users_with_history)]
    assert len(want) == 4 * len(users_with_history) > 0
    assert stored == want
    assert list(served[["user", "rank", "item"]].itertuples(index=False, name=None)) == want
    assert list(adhoc[["user", "rank", "item"]].itertuples(index=False, name=None)) == want
    np.testing.assert_allclose(served["score"], adhoc["score"], rtol=1e-6)
    assert served["score"].dtype == np.float64 and served["rank"].dtype == np.int64


PYFUNC_IMPORTS = """
import json, sys
import recvae.serving.pyfunc
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("recvae", "sqlalchemy", "psycopg")))))
"""


def test_the_pyfunc_module_loads_no_store_or_batch_job():
    """What serving imports on load: the top-N and item matching, never the store, the batch job or the pipeline."""
    out = subprocess.run([sys.executable, "-c", PYFUNC_IMPORTS], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert {"recvae.serving.topn", "recvae.serving.items"} <= loaded
    assert not {m for m in loaded if m.startswith(("recvae.serving.store", "recvae.serving.recommend", "recvae.log",
                                                   "recvae.pipeline", "recvae.tracking", "recvae.data.readers"))}

"""Every query in sql/queries, on SQLite and PostgreSQL, against values computed here from the written rows."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from recvae.serving.store import RecChunk, RecommendationStore, load_query, query_names

N, N_ITEMS = 5, 30
TESTED = {"user_top", "user_top_with_titles", "batch_overlap", "coverage", "top_items", "current_batch",
          # the output tables' queries: tests/serving/test_outputs.py
          "anomalous_users", "anomaly_dominated_items", "similar_items"}


def lists(users: list[str], seed: int, counts: dict[str, int] | None = None) -> dict[str, list[tuple[str, float]]]:
    """Per user, a top-N list of (item, score) with decreasing scores; items drawn from a skewed pool."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, N_ITEMS + 1)
    out = {}
    for u in users:
        items = rng.choice(N_ITEMS, size=N, replace=False, p=p / p.sum())
        scores = np.sort(rng.random(N))[::-1]
        k = (counts or {}).get(u, N)
        out[u] = [(f"i{i}", float(s)) for i, s in zip(items[:k], scores[:k], strict=True)]
    return out


def write(store: RecommendationStore, key: str, recs: dict[str, list[tuple[str, float]]],
          titles: pd.DataFrame | None = None) -> int:
    users = list(recs)
    items = np.array([[it for it, _ in recs[u]] + ["-"] * (N - len(recs[u])) for u in users], dtype=object)
    scores = np.array([[s for _, s in recs[u]] + [0.0] * (N - len(recs[u])) for u in users])
    counts = np.array([len(recs[u]) for u in users])
    batch = store.begin_batch(key, model_name="m", model_version=key, top_n=N, n_items=N_ITEMS, run_id=f"run-{key}")
    if titles is not None:
        store.write_items(batch, titles)
    chunk = RecChunk(np.array(users, dtype=object), items, scores, counts)
    store.write_shard(batch, [chunk], expected_rows=int(counts.sum()))
    return store.publish(batch).batch_id


@pytest.fixture
def setup(db_url):
    """Two batches (the second is current), the old one with titles for every item, the current one for the even
    items (the queries must show the current batch's)."""
    old = lists([f"u{k}" for k in range(14)], seed=1)
    new = lists([f"u{k}" for k in range(2, 16)], seed=2, counts={"u15": 2})
    store = RecommendationStore(db_url)
    assert store.query("coverage") == [] and store.query("user_top", user_id="u3", n=10) == []
    old_titles = pd.DataFrame({"item_id": [f"i{k}" for k in range(N_ITEMS)], "title": "Old", "genres": "Horror"})
    titles = pd.DataFrame({"item_id": [f"i{k}" for k in range(0, N_ITEMS, 2)],
                           "title": [f"Title {k}" for k in range(0, N_ITEMS, 2)], "genres": "Drama"})
    a, b = write(store, "a", old, old_titles), write(store, "b", new, titles)
    yield store, old, new, a, b
    store.close()


def test_every_query_file_is_tested():
    assert set(query_names()) == TESTED


def test_user_top(setup):
    store, old, new, _, b = setup
    rows = store.query("user_top", user_id="u4", n=3)
    assert [(r["rank"], r["item_id"]) for r in rows] == [(k + 1, it) for k, (it, _) in enumerate(new["u4"][:3])]
    assert [r["score"] for r in rows] == pytest.approx([s for _, s in new["u4"][:3]], rel=1e-6)
    assert len(store.query("user_top", user_id="u15", n=10)) == 2
    assert store.query("user_top", user_id="u0", n=10) == []  # only in the superseded batch
    assert store.query("user_top", user_id="u4' OR '1'='1", n=10) == []  # a bound value, not SQL


def test_user_top_with_titles(setup):
    store, _, new, _, _ = setup
    rows = store.query("user_top_with_titles", user_id="u7", n=10)
    assert [r["item_id"] for r in rows] == [it for it, _ in new["u7"]]
    for r in rows:
        k = int(r["item_id"][1:])
        assert (r["title"], r["genres"]) == ((f"Title {k}", "Drama") if k % 2 == 0 else (None, None))
    assert store.user_recommendations("u7", 2) == rows[:2]


@pytest.mark.parametrize("n", [2, N])
def test_batch_overlap(setup, n):
    store, old, new, a, b = setup
    jac, share = [], []
    for u in set(old) & set(new):
        la, lb = {i for i, _ in old[u][:n]}, {i for i, _ in new[u][:n]}
        jac.append(len(la & lb) / len(la | lb))
        share.append(len(la & lb) / len(la))
    (row,) = store.query("batch_overlap", batch_a=a, batch_b=b, n=n)
    assert row["users"] == 12
    assert row["mean_jaccard"] == pytest.approx(np.mean(jac))
    assert row["mean_common_share"] == pytest.approx(np.mean(share))
    assert 0 < row["mean_jaccard"] < 1  # the data has partial overlap, so this checks something
    (same,) = store.query("batch_overlap", batch_a=b, batch_b=b, n=n)
    assert same["mean_jaccard"] == pytest.approx(1.0) and same["users"] == 14


def test_coverage(setup):
    store, _, new, _, b = setup
    (row,) = store.query("coverage")
    distinct = {i for recs in new.values() for i, _ in recs}
    assert (row["batch_id"], row["items_recommended"], row["catalogue_items"]) == (b, len(distinct), N_ITEMS)
    assert row["coverage"] == pytest.approx(len(distinct) / N_ITEMS)


def test_top_items(setup):
    store, _, new, _, _ = setup
    counts = Counter(i for recs in new.values() for i, _ in recs)
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:4]
    rows = store.query("top_items", n=4)
    assert [(r["item_id"], r["times_recommended"]) for r in rows] == expected
    assert rows[0]["user_share"] == pytest.approx(expected[0][1] / len(new))
    first = expected[0][0]
    ranks = [k + 1 for recs in new.values() for k, (i, _) in enumerate(recs) if i == first]
    assert rows[0]["mean_rank"] == pytest.approx(np.mean(ranks))
    assert rows[0]["title"] == (f"Title {first[1:]}" if int(first[1:]) % 2 == 0 else None)


def test_current_batch(setup):
    store, _, new, _, b = setup
    (row,) = store.query("current_batch")
    assert (row["batch_id"], row["batch_key"], row["run_id"], row["top_n"]) == (b, "b", "run-b", N)
    assert (row["user_count"], row["row_count"]) == (len(new), sum(len(v) for v in new.values()))


def test_queries_run_through_plain_sqlalchemy(setup, db_url):
    """What a person or another service does: the rendered file through sqlalchemy.text on its own engine."""
    store, _, new, _, _ = setup
    eng = create_engine(db_url)
    try:
        with eng.connect() as conn:
            rows = conn.execute(text(load_query("user_top")), {"user_id": "u9", "n": 10}).all()
    finally:
        eng.dispose()
    assert [r.item_id for r in rows] == [i for i, _ in new["u9"]]

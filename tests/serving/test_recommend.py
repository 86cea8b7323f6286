"""The batch job and the ad-hoc lists: who is scored with what history (snapshot, fold-in), streamed into the store."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from cli_error_line import error_line
from cooc_model import N_ITEMS, Cooc, random_history, reference_topn
from sqlalchemy import create_engine, text

from recvae.data.idmap import IdMap
from recvae.data.item_metadata import read_item_metadata
from recvae.data.snapshot import Snapshot
from recvae.data.validate import DataValidationError
from recvae.serving.pyfunc import recommend_frame
from recvae.serving.recommend import (
    build_input,
    read_foldin,
    recommend_to_store,
    topn_frame,
)
from recvae.serving.store import RecommendationStore, StoreError

# ---------------------------------------------------------------------------------------------------------------
# recommend_to_store


def make_snapshot(rng) -> Snapshot:
    """30 users (raw ids 100..129): 20 train, 5 validation, 5 test; items m0..m24."""
    h = random_history(rng, 30)
    parts = {
        "train": h[:20],
        "validation_tr": h[20:25].multiply(rng.random((5, N_ITEMS)) < 0.7).tocsr(),
        "test_tr": h[25:].multiply(rng.random((5, N_ITEMS)) < 0.7).tocsr(),
    }
    parts["validation_te"] = (h[20:25] - parts["validation_tr"]).tocsr()
    parts["test_te"] = (h[25:] - parts["test_tr"]).tocsr()
    for m in parts.values():
        m.eliminate_zeros()
    rows = {"train": np.arange(20), "validation_tr": np.arange(20, 25), "validation_te": np.arange(20, 25),
            "test_tr": np.arange(25, 30), "test_te": np.arange(25, 30)}
    items = IdMap([f"m{i}" for i in range(N_ITEMS)])
    return Snapshot(matrices=parts, rows=rows, users=IdMap(np.arange(100, 130)), items=items,
                    manifest={"snapshot_id": "snap-test"})


def stored(url: str, batch_id: int) -> pd.DataFrame:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return pd.DataFrame(conn.execute(
                text('SELECT user_id, rank, item_id, score FROM "recvae_recommendations" WHERE batch_id = :b'),
                {"b": batch_id},
            ).mappings().all())
    finally:
        eng.dispose()


def seen_by_user(snap: Snapshot) -> dict[str, set[str]]:
    users, h = snap.history()
    out: dict[str, set[str]] = {}
    for u, row in zip(users, h, strict=True):
        out.setdefault(str(snap.users.to_raw([u])[0]), set()).update(f"m{i}" for i in row.indices)
    return out


def test_recommend_to_store_from_a_snapshot(db_url, rng):
    snap = make_snapshot(rng)
    model = Cooc().fit(snap.train)
    with RecommendationStore(db_url) as store:
        summary = recommend_to_store(model, snap, store, 6, "job-1", "cooc", "3", "run-abc", chunk_size=7)
        assert summary.status == "published" and summary.user_count == 30 and not summary.reused
        batch = store.current_batch()
        identity = (batch.snapshot_id, batch.run_id, batch.model_version, batch.n_items)
        assert identity == ("snap-test", "run-abc", "3", N_ITEMS)
        df = stored(db_url, summary.batch_id)
    seen = seen_by_user(snap)
    assert summary.row_count == len(df) == sum(min(6, N_ITEMS - len(s)) for s in seen.values())
    users, h = snap.history()
    ref = reference_topn(model.scores(h).numpy(), h, 6)
    for u, items in zip(users, ref, strict=True):
        mine = df[df.user_id == str(snap.users.to_raw([u])[0])].sort_values("rank")
        assert mine.item_id.tolist() == [f"m{i}" for i in items]
        assert mine["rank"].tolist() == list(range(1, len(items) + 1))
        assert not set(mine.item_id) & seen[str(snap.users.to_raw([u])[0])]


def test_user_in_several_parts_gets_one_merged_list(tmp_path, rng):
    snap = make_snapshot(rng)
    snap.rows["test_tr"] = snap.rows["test_te"] = np.arange(3, 8)  # users 103..107 are also in train (temporal)
    model = Cooc().fit(snap.train)
    url = f"sqlite:///{tmp_path}/r.db"
    with RecommendationStore(url) as store:
        summary = recommend_to_store(model, snap, store, 30, "merged", "cooc")
    df = stored(url, summary.batch_id)
    seen = seen_by_user(snap)
    assert summary.user_count == 25 == len(seen)
    assert set(df.user_id) == {u for u, items in seen.items() if len(items) < N_ITEMS}  # user 100 has seen all
    for user, rows in df.groupby("user_id"):
        assert not set(rows.item_id) & seen[user] and len(rows) == N_ITEMS - len(seen[user])


def test_selected_users_and_unknown_ones(tmp_path, rng, caplog):
    snap = make_snapshot(rng)
    model = Cooc().fit(snap.train)
    url = f"sqlite:///{tmp_path}/r.db"
    with RecommendationStore(url) as store, caplog.at_level(logging.WARNING):
        summary = recommend_to_store(model, snap, store, 3, "some", "cooc", users=["105", 121, "999"])
    assert summary.user_count == 2
    assert set(stored(url, summary.batch_id).user_id) == {"105", "121"}
    assert "1 of 3 requested user(s) are unknown" in caplog.text
    with pytest.raises(ValueError, match="none of the 1 requested"):
        build_input(model, snap, users=["nobody"])


def test_foldin_histories_of_new_users(tmp_path, rng, caplog):
    snap = make_snapshot(rng)
    model = Cooc().fit(snap.train)
    model.items = snap.items
    foldin = pd.DataFrame({"user": ["new1", "new1", "new1", "new2", "new2"], "item": ["m3", "m4", "zzz", "m3", "yyy"]})
    csv = tmp_path / "foldin.csv"
    foldin.to_csv(csv, index=False)
    url = f"sqlite:///{tmp_path}/r.db"
    with RecommendationStore(url) as store, caplog.at_level(logging.WARNING):
        summary = recommend_to_store(model, csv, store, 5, "foldin", "cooc")
    assert "2 of 5 interaction(s) name items the model does not know" in caplog.text
    df = stored(url, summary.batch_id)
    assert summary.row_count == 10
    x = sp.csr_matrix(np.array([[1 if i in (3, 4) else 0 for i in range(N_ITEMS)],
                                [1 if i == 3 else 0 for i in range(N_ITEMS)]], np.float32))
    ref = reference_topn(model.scores(x).numpy(), x, 5)
    for user, items in zip(["new1", "new2"], ref, strict=True):
        assert df[df.user_id == user].sort_values("rank").item_id.tolist() == [f"m{i}" for i in items]
    same = build_input(model, foldin)
    assert same.user_ids.tolist() == ["new1", "new2"] and (same.history != x).nnz == 0
    with pytest.raises(ValueError, match="no item ids"):
        build_input(Cooc().fit(snap.train), foldin)


def test_foldin_item_ids_match_the_model_as_the_served_model_matches_them(rng):
    """Item ids that pandas made floats (a column with a blank) or text still name an integer-keyed model's items,
    in the ad-hoc lists exactly as in the served pyfunc: recvae.serving.items decides for both."""
    model = Cooc().fit(random_history(rng, 40))
    model.items = IdMap(np.arange(100, 100 + N_ITEMS))
    foldin = pd.DataFrame({"user": ["a", "a", "a", "b", "b"], "item": [103.0, 104.0, np.nan, 103.0, 999.0]})
    inp = build_input(model, foldin)
    assert inp.user_ids.tolist() == ["a", "b"]
    assert [sorted(inp.history[r].indices.tolist()) for r in range(2)] == [[3, 4], [3]]
    assert inp.item_ids[:2].tolist() == ["100", "101"]
    as_text = build_input(model, foldin.assign(item=["103", "104", "", "103", "999"]))
    assert (as_text.history != inp.history).nnz == 0
    adhoc = topn_frame(model, inp, top_n=5)
    served = recommend_frame(model, foldin, top_n=5)
    assert adhoc["item"].tolist() == served["item"].astype(str).tolist()


def test_model_with_another_item_order_than_the_snapshot(tmp_path, rng):
    snap = make_snapshot(rng)
    perm = rng.permutation(N_ITEMS)
    model = Cooc().fit(snap.train[:, perm])  # the model's column j is the snapshot's item perm[j]
    model.items = IdMap([f"m{i}" for i in perm])
    url = f"sqlite:///{tmp_path}/r.db"
    with RecommendationStore(url) as store:
        summary = recommend_to_store(model, snap, store, 4, "perm", "cooc")
    df = stored(url, summary.batch_id)
    seen = seen_by_user(snap)
    users, h = snap.history()
    ref = reference_topn(model.scores(h[:, perm]).numpy(), h[:, perm], 4)
    for u, items in zip(users, ref, strict=True):
        user = str(snap.users.to_raw([u])[0])
        assert df[df.user_id == user].sort_values("rank").item_id.tolist() == [f"m{perm[i]}" for i in items]
        assert not set(df[df.user_id == user].item_id) & seen[user]


def test_sharded_job_equals_single_job(tmp_path, rng):
    snap = make_snapshot(rng)
    model = Cooc().fit(snap.train)
    url = f"sqlite:///{tmp_path}/r.db"
    with RecommendationStore(url) as store:
        whole = recommend_to_store(model, snap, store, 5, "whole", "cooc")
        parts = [recommend_to_store(model, snap, store, 5, "sharded", "cooc", shard=s, n_shards=3) for s in range(3)]
        assert [p.status for p in parts] == ["staging"] * 3 and store.current_batch().batch_key == "whole"
        assert sum(p.user_count for p in parts) == 30
        published = store.publish("sharded", n_shards=3)
    a = stored(url, whole.batch_id).drop(columns="score").sort_values(["user_id", "rank"]).reset_index(drop=True)
    b = stored(url, published.batch_id).drop(columns="score").sort_values(["user_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_rerun_of_a_published_key_scores_nothing(tmp_path, rng):
    snap = make_snapshot(rng)
    model = Cooc().fit(snap.train)
    url = f"sqlite:///{tmp_path}/r.db"
    with RecommendationStore(url) as store:
        first = recommend_to_store(model, snap, store, 5, "daily-2024-01-01", "cooc", chunk_size=10)
        calls = model.calls
        again = recommend_to_store(model, snap, store, 5, "daily-2024-01-01", "cooc", chunk_size=10)
        assert again.reused and again.batch_id == first.batch_id and model.calls == calls
        assert store.count_rows(first.batch_id) == first.row_count


def test_crash_while_scoring_keeps_the_current_batch(tmp_path, rng):
    snap = make_snapshot(rng)
    url = f"sqlite:///{tmp_path}/r.db"
    with RecommendationStore(url) as store:
        good = recommend_to_store(Cooc().fit(snap.train), snap, store, 5, "day-1", "cooc")
        before = stored(url, good.batch_id)
        with pytest.raises(RuntimeError, match="model crashed"):
            recommend_to_store(Cooc(fail_on_call=3).fit(snap.train), snap, store, 5, "day-2", "cooc", chunk_size=4)
        failed = store.get_batch("day-2")
        assert failed.status == "failed" and "model crashed" in failed.error
        assert store.count_rows(failed.batch_id) == 0
        assert store.current_batch().batch_id == good.batch_id
        pd.testing.assert_frame_equal(stored(url, good.batch_id), before)
        # an Airflow retry
        retry = recommend_to_store(Cooc().fit(snap.train), snap, store, 5, "day-2", "cooc", chunk_size=4)
        assert retry.status == "published" and retry.batch_id == failed.batch_id and retry.row_count == good.row_count


def test_unreachable_database_fails_before_scoring(rng):
    snap = make_snapshot(rng)
    model = Cooc().fit(snap.train)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = RecommendationStore(f"postgresql+psycopg://u:hunter2-pw@127.0.0.1:{port}/db", connect_timeout_s=3)
    with pytest.raises(StoreError) as err:
        recommend_to_store(model, snap, store, 5, "k", "cooc")
    assert model.calls == 0 and "hunter2-pw" not in str(err.value) and "u:***@" in str(err.value)


def test_popularity_baseline_through_the_job(tmp_path, rng):
    baselines = pytest.importorskip("recvae.models.baselines")
    snap = make_snapshot(rng)
    pop = baselines.Popularity().fit(snap.train)
    pop.items = snap.items
    url = f"sqlite:///{tmp_path}/r.db"
    with RecommendationStore(url) as store:
        summary = recommend_to_store(pop, snap, store, 3, "pop", "popularity")
    df = stored(url, summary.batch_id)
    count = {f"m{i}": c for i, c in enumerate(np.asarray((snap.train > 0).sum(axis=0)).ravel())}
    seen = seen_by_user(snap)
    assert set(df.user_id) == {u for u, items in seen.items() if len(items) < N_ITEMS}
    for user, rows in df.groupby("user_id"):
        best_unseen = sorted((c for i, c in count.items() if i not in seen[user]), reverse=True)[:3]
        assert [count[i] for i in rows.sort_values("rank").item_id] == best_unseen  # ties may swap items, not counts


@pytest.mark.realdata
def test_ml100k_popularity_with_titles(data_home, tmp_path):
    baselines = pytest.importorskip("recvae.models.baselines")
    ratings = pd.read_csv(data_home / "ml-100k" / "u.data", sep="\t", names=["user", "item", "rating", "ts"])
    users, items = IdMap.from_values(ratings.user), IdMap.from_values(ratings.item)
    x = sp.csr_matrix((np.ones(len(ratings), np.float32), (users.to_index(ratings.user), items.to_index(ratings.item))),
                      shape=(len(users), len(items)))
    pop = baselines.Popularity().fit(x)
    pop.items = items
    with RecommendationStore(f"sqlite:///{tmp_path}/r.db") as store:
        titles = read_item_metadata(data_home / "ml-100k")
        assert len(titles) == 1682
        summary = recommend_to_store(pop, (users.raw_ids, x), store, 10, "ml100k", "popularity", item_metadata=titles)
        assert summary.user_count == 943 and summary.row_count == 9430
        top = store.user_recommendations("1", 10)
    assert len(top) == 10 and all(r["title"] for r in top)
    seen = set(ratings[ratings.user == 1].item.astype(str))
    assert not {r["item_id"] for r in top} & seen


def test_default_chunk_size_bounds_the_scores_held():
    from recvae.serving.recommend import SCORE_BUDGET, default_chunk_size

    assert default_chunk_size(50_000) == 1_000  # the 1M x 50k benchmark's setting (peak 1.72 GiB)
    assert default_chunk_size(3_000) == 2_000  # small catalogues: capped
    assert default_chunk_size(10_000_000) == 100  # huge catalogues: at least 100 users a chunk
    for n in (1_000, 20_108, 50_000, 400_000):
        assert default_chunk_size(n) * n <= max(SCORE_BUDGET, 100 * n)


# ---------------------------------------------------------------------------------------------------------------
# fold-in files on bad or unusual input (issue #13)


def test_read_foldin_names_the_file_line_and_column_of_a_blank_cell(tmp_path):
    f = tmp_path / "h.csv"
    f.write_text("user,item\nu1,m1\nu1,\n")
    with pytest.raises(DataValidationError) as info:
        read_foldin(f)
    assert (info.value.source, info.value.position, info.value.column) == (str(f), 3, "item")
    assert "missing value" in str(info.value)
    f.write_text("user,item\n")
    with pytest.raises(DataValidationError, match="no fold-in rows"):
        read_foldin(f)
    f.write_text("user,thing\nu1,m1\n")
    with pytest.raises(DataValidationError, match="missing column.*'item'"):
        read_foldin(f)


def test_read_foldin_keeps_ids_as_text(tmp_path):
    f = tmp_path / "h.csv"
    f.write_text("user,item,extra\n007,01,x\n7,1,y\n")
    df = read_foldin(f)
    assert df["user"].tolist() == ["007", "7"] and df["item"].tolist() == ["01", "1"]


def test_foldin_users_without_candidates_or_known_items_are_reported(rng, caplog):
    snap = make_snapshot(rng)
    model = Cooc().fit(snap.train)
    model.items = snap.items
    everything = [f"m{i}" for i in range(N_ITEMS)]
    foldin = pd.DataFrame({"user": ["all"] * N_ITEMS + ["odd", "new"], "item": everything + ["zzz", "m3"]})
    with caplog.at_level(logging.WARNING):
        inp = build_input(model, foldin)
    assert inp.nothing_unseen().tolist() == ["all"] and inp.unknown_only.tolist() == ["odd"]
    assert "1 user(s) have seen every item the model scores; they get no recommendations: all" in caplog.text
    assert "1 user(s) have no item the model knows" in caplog.text and ": odd" in caplog.text
    notes = inp.notes()
    assert len(notes) == 2 and "all" in notes[0] and "odd" in notes[1]
    assert set(topn_frame(model, inp, top_n=3)["user"]) == {"odd", "new"}


@pytest.fixture
def model_dir(tmp_path):
    """A saved Popularity model over items a, b, c, d (the CLI loads a model folder)."""
    from recvae.models.baselines import Popularity

    model = Popularity().fit(sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1]], np.float32)))
    model.items = IdMap(["a", "b", "c", "d"])
    return model.save(tmp_path / "model")


def test_cli_foldin_file_with_a_blank_item_is_one_error_line(tmp_path, capsys, model_dir):
    f = tmp_path / "h.csv"
    f.write_text("user,item\nu1,a\nu1,\n")
    line = error_line(capsys, ["recommend", "--model", str(model_dir), "--users", str(f)])
    assert line == f"recvae recommend: error: {f}, line 3, column 'item': missing value"
    f.write_text("user,item\n")
    assert "no fold-in rows" in error_line(capsys, ["recommend", "--model", str(model_dir), "--users", str(f)])


def test_cli_foldin_reports_users_left_without_recommendations(tmp_path, capsys, model_dir):
    from recvae import cli

    f = tmp_path / "h.csv"
    f.write_text("user,item\nu1,a\nu1,b\nu1,c\nu1,d\nu2,a\nu3,zz\n")
    out = tmp_path / "lists.csv"
    argv = ["recommend", "--model", str(model_dir), "--users", str(f), "--top-n", "2"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    assert set(pd.read_csv(out)["user"]) == {"u2", "u3"}
    assert "1 user(s) got no recommendations: they have seen every item the model scores (e.g. u1)" in stdout
    assert "1 user(s) have no item the model knows" in stdout and "(e.g. u3)" in stdout
    assert "WARNING" in stderr and "they get no recommendations: u1" in stderr
    assert cli.main(argv) == 0  # lists on stdout: the notes go to stderr and the CSV stays clean
    stdout, stderr = capsys.readouterr()
    assert stdout.splitlines()[0] == "user,rank,item,score" and "u1" not in stdout
    assert "got no recommendations" in stderr

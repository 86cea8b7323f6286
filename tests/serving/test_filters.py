"""Business filters: allow/deny lists from files, SQL tables and queries, applied before the top-N is cut, in the
batch job (both engines), the ad-hoc lists, the pyfunc and the scoring steps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from cli_error_line import error_line
from cooc_model import N_ITEMS, Cooc, random_history, reference_topn
from sqlalchemy import create_engine, text
from test_recommend import make_snapshot, seen_by_user, stored

from recvae.data.idmap import IdMap
from recvae.data.validate import DataValidationError
from recvae.serving.filters import ItemFilter, ItemFilterError, read_item_file, resolve_filter, sql_item_list
from recvae.serving.pyfunc import params_filter, recommend_frame
from recvae.serving.recommend import recommend_to_store, topn_frame
from recvae.serving.store import RecommendationStore, StoreError
from recvae.serving.topn import eligible_counts, iter_topn

ITEMS = np.array([f"m{i}" for i in range(N_ITEMS)], dtype=object)


def reference(scores: np.ndarray, history: sp.csr_matrix, n: int) -> list[list[int]]:
    """Brute force without the excluded (-inf) items."""
    full = reference_topn(scores, history, N_ITEMS)
    return [[i for i in row if np.isfinite(s[i])][:n] for row, s in zip(full, scores, strict=True)]


def test_filter_mask_allow_intersects_deny_adds_and_nothing_left_is_an_error():
    f = ItemFilter.of(allow=["m1", "m2", "m3", "zz"], deny=["m2"])
    mask = f.excluded(ITEMS)
    assert list(ITEMS[~mask]) == ["m1", "m3"]
    assert ItemFilter.of().excluded(ITEMS) is None and not ItemFilter.of(deny=[]).active
    assert ItemFilter.from_dict(f.to_dict()) == f
    with pytest.raises(ItemFilterError, match="leave none"):
        ItemFilter.of(allow=["m1"], deny=["m1"]).excluded(ITEMS)
    assert resolve_filter(allow_items=["m1", "m2"], deny_items=[3]).to_dict() == {
        "allow_items": ["m1", "m2"], "deny_items": ["3"]}


def test_item_file_header_comments_and_bad_lines(tmp_path):
    f = tmp_path / "deny.txt"
    f.write_text("item_id\nm1\n\n# a comment\nm2  # trailing\nm1\n")
    assert read_item_file(f) == ("m1", "m2")
    f.write_text("m1\nm2,m3\n")
    with pytest.raises(DataValidationError, match=r"deny.txt, line 2: expected one item id per line"):
        read_item_file(f)
    f.write_text("# nothing\n")
    with pytest.raises(DataValidationError, match="holds no item id"):
        read_item_file(f)
    with pytest.raises(DataValidationError, match="file not found"):
        read_item_file(tmp_path / "nope.txt")


def test_filtered_topn_still_fills_n_items(rng):
    h = random_history(rng, 40)
    model = Cooc().fit(h)
    exclude = np.zeros(N_ITEMS, dtype=bool)
    exclude[::3] = True
    s = model.scores(h).numpy()
    s[:, exclude] = -np.inf
    ref = reference(s, h, 5)
    got = {}
    for top in iter_topn(model, h, 5, chunk_size=7, exclude=exclude):
        for r, items, c in zip(top.rows, top.items, top.counts, strict=True):
            got[int(r)] = list(items[:c])
    for r, items in enumerate(ref):
        assert got[r] == list(items)
        assert not exclude[got[r]].any()
    counts = eligible_counts(sp.csr_matrix(h), 5, exclude)
    assert [len(got[r]) for r in range(len(ref))] == list(counts)
    assert (counts == 5).sum() > 30  # the cut comes after the filter: nearly everyone still gets 5


def test_batch_job_with_filters_on_both_engines(db_url, rng):
    snap = make_snapshot(rng)
    model = Cooc().fit(snap.train)
    allow = [f"m{i}" for i in range(0, N_ITEMS, 2)]
    filt = ItemFilter.of(allow=allow, deny=["m0", "m4"])
    with RecommendationStore(db_url) as store:
        summary = recommend_to_store(model, snap, store, 6, "f-1", "cooc", item_filter=filt, chunk_size=9)
        df = stored(db_url, summary.batch_id)
    eligible = set(allow) - {"m0", "m4"}
    assert set(df.item_id) <= eligible
    seen = seen_by_user(snap)
    sizes = df.groupby("user_id").size()
    for user, s in seen.items():
        assert sizes.get(user, 0) == min(6, len(eligible - s))
    users, h = snap.history()
    scores = model.scores(h).numpy()
    scores[:, [i for i in range(N_ITEMS) if f"m{i}" not in eligible]] = -np.inf
    for u, items in zip(users, reference(scores, h, 6), strict=True):
        mine = df[df.user_id == str(snap.users.to_raw([u])[0])].sort_values("rank")
        assert mine.item_id.tolist() == [f"m{i}" for i in items]


def test_sql_table_and_query_lists_on_both_engines(db_url):
    eng = create_engine(db_url)
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE banned (reason TEXT, item_id TEXT)"))
        conn.execute(text("INSERT INTO banned VALUES ('recall', 'm3'), ('recall', 'm5'), ('price', 'm7')"))
    eng.dispose()
    assert set(sql_item_list(db_url, "banned")) == {"m3", "m5", "m7"}
    assert sql_item_list(db_url, "SELECT item_id FROM banned WHERE reason = 'price';") == ("m7",)
    with pytest.raises(ItemFilterError, match="no_such_table"):
        sql_item_list(db_url, "SELECT item_id FROM no_such_table")
    with pytest.raises(ItemFilterError, match="returned no item id"):
        sql_item_list(db_url, "SELECT item_id FROM banned WHERE reason = 'none'")
    filt = resolve_filter(deny_sql="banned", allow_items=["m3", "m8", "m9"], db_url=db_url)
    assert filt.to_dict() == {"allow_items": ["m3", "m8", "m9"], "deny_items": ["m3", "m5", "m7"]}


def test_sql_list_on_an_unreachable_database_is_a_store_error():
    with pytest.raises(StoreError, match=r"\*\*\*"):
        sql_item_list("postgresql+psycopg://u:secretpw@127.0.0.1:1/db", "banned")


def test_pyfunc_params_filter_the_served_lists(rng):
    h = random_history(rng, 12)
    model = Cooc().fit(h)
    model.items = IdMap(list(ITEMS))
    r, c = h.nonzero()
    history = pd.DataFrame({"user": [f"u{i}" for i in r], "item": ITEMS[c]})
    deny = ["m1", "m2", "m3"]
    plain = recommend_frame(model, history, 4)
    filtered = recommend_frame(model, history, 4, item_filter=params_filter({"allow_items": [], "deny_items": deny}))
    assert not set(filtered["item"]) & set(deny) and set(plain["item"]) & set(deny)
    sizes = filtered.groupby("user").size()
    assert sizes["u1"] == 1 and sizes.drop("u1").min() == 4  # u1 had m0, m1 unseen; m1 is denied
    allowed = recommend_frame(model, history, 3, item_filter=params_filter({"allow_items": ["m5", "m6", "m7"]}))
    assert set(allowed["item"]) <= {"m5", "m6", "m7"}
    assert params_filter({"allow_items": [], "deny_items": []}) is None
    adhoc = topn_frame(model, history, top_n=4, item_filter=ItemFilter.of(deny=deny))
    pd.testing.assert_frame_equal(adhoc[["user", "rank", "item"]], filtered[["user", "rank", "item"]],
                                  check_dtype=False)


def test_scoring_steps_resolve_the_filter_once_for_every_shard(tmp_path, rng):
    from recvae import pipeline

    snap = make_snapshot(rng)
    snap = snap.__class__.load(snap.save(tmp_path / "snap"))
    model = Cooc().fit(snap.train)
    model.items = snap.items
    info = type("Info", (), {"name": "cooc", "version": "1", "run_id": "r", "kind": "cooc"})()
    (tmp_path / "deny.txt").write_text("m1\nm2\n")
    url = f"sqlite:///{tmp_path / 'r.db'}"
    batch = pipeline.begin_score_step(
        model_uri="x", snapshot_dir=None, top_n=5, n_shards=2, db_url=url, batch_key="k", loaded=(model, info, snap),
        item_filter={"deny_file": str(tmp_path / "deny.txt"), "deny_items": ["m3"]})
    assert batch.deny_items == ["m3", "m1", "m2"] and batch.allow_items is None
    for shard in range(2):
        pipeline.score_shard_step(batch.to_dict(), shard, db_url=url, loaded=(model, info, snap))
    summary = pipeline.publish_step(batch, db_url=url)
    df = stored(url, summary["batch_id"])
    assert len(df) and not set(df.item_id) & {"m1", "m2", "m3"}
    with pytest.raises(Exception, match="unknown item filter key"):
        pipeline.begin_score_step(model_uri="x", snapshot_dir=None, top_n=5, n_shards=1, db_url=url, batch_key="k2",
                                  loaded=(model, info, snap), item_filter={"deny": ["m1"]})


@pytest.fixture
def model_dir(tmp_path):
    """A saved Popularity model over items a..e (the CLI loads a model folder)."""
    from recvae.models.baselines import Popularity

    x = np.array([[1, 1, 1, 0, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], np.float32)
    model = Popularity().fit(sp.csr_matrix(x))
    model.items = IdMap(["a", "b", "c", "d", "e"])
    return model.save(tmp_path / "model")


def test_cli_recommend_with_deny_file_and_deny_sql(tmp_path, capsys, model_dir):
    from recvae import cli

    f = tmp_path / "h.csv"
    f.write_text("user,item\nu1,d\n")
    deny = tmp_path / "deny.txt"
    deny.write_text("a\n")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    eng = create_engine(db)
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE banned (item_id TEXT)"))
        conn.execute(text("INSERT INTO banned VALUES ('c')"))
    eng.dispose()
    argv = ["recommend", "--model", str(model_dir), "--users", str(f), "--top-n", "2", "--db", db]
    assert cli.main(argv) == 0
    assert pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))["item"].tolist() == ["a", "b"]
    assert cli.main([*argv, "--deny", str(deny), "--deny-sql", "banned"]) == 0
    assert pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))["item"].tolist() == ["b", "e"]
    line = error_line(capsys, [*argv, "--deny-sql", "SELECT item_id FROM nope"])
    assert line.startswith("recvae recommend: error: item list query") and "nope" in line
    deny.write_text("a\tb\n")
    assert error_line(capsys, [*argv, "--deny", str(deny)]).endswith("line 1: expected one item id per line, "
                                                                       "got 'a\\tb'")

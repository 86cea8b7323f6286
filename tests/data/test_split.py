"""Splits: the notebook's strong generalization (checked against a plain re-implementation and the real
pro_sg files) and the temporal split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recvae.config import ConfigError, DataConfig, SplitConfig
from recvae.data import synthetic
from recvae.data.idmap import IdMap
from recvae.data.preprocess import preprocess
from recvae.data.split import (
    default_n_heldout,
    fold_in_mask,
    latest_rows,
    reindex_snapshot,
    strong_split,
    temporal_split,
    training_items,
)
from recvae.data.validate import DataValidationError


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    df, _ = preprocess(synthetic.generate("small", n_users=600, seed=3), DataConfig())
    return df


def pairs(snap, part):
    m = snap.matrices[part].tocoo()
    users, items = snap.users.to_raw(snap.rows[part][m.row]).tolist(), snap.items.to_raw(m.col).tolist()
    return set(zip(users, items, strict=True))


def notebook_split(df: pd.DataFrame, n_heldout: int, seed: int, test_prop: float = 0.2):
    """A direct, loop-based transcription of the notebook's procedure, used as the reference."""
    users_sorted = np.sort(df["user"].unique())
    shuffled = users_sorted[np.random.RandomState(seed).permutation(len(users_sorted))]
    n = len(shuffled)
    groups = {
        "train": shuffled[: n - 2 * n_heldout],
        "validation": shuffled[n - 2 * n_heldout : n - n_heldout],
        "test": shuffled[n - n_heldout :],
    }
    train = df[df["user"].isin(groups["train"])]
    items = pd.unique(train["item"])
    out = {"train": set(zip(train["user"], train["item"], strict=True))}
    for part in ("validation", "test"):
        plays = df[df["user"].isin(groups[part]) & df["item"].isin(items)]
        rs = np.random.RandomState(seed)
        tr, te = [], []
        for _, g in plays.groupby("user"):
            k = len(g)
            chosen = np.zeros(k, dtype=bool)
            if k >= 5:
                chosen[rs.choice(k, size=int(test_prop * k), replace=False)] = True
            tr.append(g[~chosen])
            te.append(g[chosen])
        out[f"{part}_tr"] = set(zip(pd.concat(tr)["user"], pd.concat(tr)["item"], strict=True))
        out[f"{part}_te"] = set(zip(pd.concat(te)["user"], pd.concat(te)["item"], strict=True))
    return shuffled, items, out


def test_strong_split_equals_the_notebook_procedure(data):
    snap = strong_split(data, SplitConfig(n_heldout_users=50, seed=98765))
    shuffled, items, expected = notebook_split(data, 50, 98765)
    assert snap.users.raw_ids.tolist() == shuffled.tolist()  # uid order = the notebook's profile2id
    assert snap.items.raw_ids.tolist() == items.tolist()  # sid order = the notebook's show2id
    for part, want in expected.items():
        assert pairs(snap, part) == want, part


def test_strong_split_invariants(data):
    snap = strong_split(data, SplitConfig(n_heldout_users=50))
    users = {p: set(snap.rows[p].tolist()) for p in snap.matrices}
    assert users["train"].isdisjoint(users["validation_tr"]) and users["train"].isdisjoint(users["test_tr"])
    assert users["validation_tr"].isdisjoint(users["test_tr"])
    assert len(users["validation_tr"]) == len(users["test_tr"]) == 50
    for tr, te in (("validation_tr", "validation_te"), ("test_tr", "test_te")):
        assert np.array_equal(snap.rows[tr], snap.rows[te])
        # no held-out item unseen in training
        trained = np.asarray(snap.train.sum(axis=0)).ravel() > 0
        for p in (tr, te):
            assert trained[snap.matrices[p].indices].all()
        # 80/20 per user: exactly int(0.2 n) held out for users with n >= 5, none below
        n_tr, n_te = np.diff(snap.matrices[tr].indptr), np.diff(snap.matrices[te].indptr)
        n = n_tr + n_te
        assert np.array_equal(n_te, np.where(n >= 5, (0.2 * n).astype(int), 0))
        assert (snap.matrices[tr].multiply(snap.matrices[te])).nnz == 0
    total = sum(m.nnz for m in snap.matrices.values()) + snap.manifest["split"]["heldout_rows_dropped_unseen_items"]
    assert total == len(data)


def test_seed_reproducible_and_different_seed_differs(data):
    a = strong_split(data, SplitConfig(seed=1))
    b = strong_split(data, SplitConfig(seed=1))
    c = strong_split(data, SplitConfig(seed=2))
    assert a.snapshot_id == b.snapshot_id
    assert a.snapshot_id != c.snapshot_id
    test_users = lambda s: set(s.users.to_raw(s.rows["test_tr"]).tolist())  # noqa: E731
    assert test_users(a) == test_users(b) and test_users(a) != test_users(c)


def test_fold_in_mask_small_users_stay_in_fold_in():
    codes = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    mask = fold_in_mask(codes, 0.2, seed=0)
    assert not mask[:4].any()  # 4 items < 5: everything in fold-in
    assert mask[4:].sum() == 2
    assert np.array_equal(mask, fold_in_mask(codes, 0.2, seed=0))
    # the draw for user 1 depends only on the RNG state after earlier users, as in the notebook
    rs = np.random.RandomState(0)
    expected = np.zeros(10, bool)
    expected[rs.choice(10, size=2, replace=False)] = True
    assert np.array_equal(mask[4:], expected)


def test_default_heldout_rule():
    assert default_n_heldout(136_677) == 10_000
    assert default_n_heldout(6_040) == 442
    assert default_n_heldout(100) == 7
    assert default_n_heldout(6) == 1
    with pytest.raises(ConfigError):
        default_n_heldout(4)


def test_too_many_heldout_users_is_a_config_error(data):
    n = data["user"].nunique()
    with pytest.raises(ConfigError, match="leaves no training users"):
        strong_split(data, SplitConfig(n_heldout_users=n // 2))


def test_previous_item_map_keeps_columns_even_for_absent_items(data):
    old_items = IdMap(np.array([999_999, *pd.unique(data["item"])[:10]]))  # 999999 is not in this data
    old_users = IdMap(np.array([555_555, int(data["user"].iloc[0])]))
    snap = strong_split(data, SplitConfig(), users=old_users, items=old_items)
    assert snap.items.to_index(old_items.raw_ids).tolist() == list(range(len(old_items)))
    assert snap.users.to_index(old_users.raw_ids).tolist() == [0, 1]
    assert snap.train[:, 0].nnz == 0  # the absent item keeps its (empty) column
    for p in ("validation_tr", "validation_te", "test_tr", "test_te"):
        assert 0 not in set(snap.matrices[p].indices.tolist())


def test_previous_map_with_other_id_type_is_refused(data):
    with pytest.raises(DataValidationError, match="integer item ids but this data has string"):
        strong_split(data.assign(item=data["item"].astype(str)), SplitConfig(), items=IdMap(np.array([1, 2])))


def test_training_items_in_first_appearance_order():
    items = np.array([5, 3, 5, 9, 3, 7])
    is_train = np.array([False, True, True, True, True, False])
    _, uniq, seen, train = training_items(items, is_train)
    assert train.tolist() == [3, 5, 9]
    assert dict(zip(uniq.tolist(), seen.tolist(), strict=True)) == {5: True, 3: True, 9: True, 7: False}


# --- temporal ------------------------------------------------------------------------------------


def test_temporal_split_holds_out_each_users_latest_share(data):
    snap = temporal_split(data, SplitConfig(kind="temporal", n_heldout_users=40))
    assert snap.manifest["protocol"] == "temporal"
    ts = {(u, i): t for u, i, t in zip(data["user"], data["item"], data["timestamp"], strict=True)}
    train_users = set(snap.rows["train"].tolist())
    assert set(snap.rows["test_tr"].tolist()) <= train_users
    assert train_users.isdisjoint(snap.rows["validation_tr"].tolist())
    assert np.array_equal(snap.rows["test_tr"], snap.rows["test_te"])
    # test fold-in = the users' train rows
    pos = {u: k for k, u in enumerate(snap.rows["train"].tolist())}
    assert (snap.matrices["test_tr"] != snap.train[[pos[u] for u in snap.rows["test_tr"]]]).nnz == 0
    for fold, held in (("test_tr", "test_te"), ("validation_tr", "validation_te")):
        by_user: dict = {}
        for part, latest in ((fold, False), (held, True)):
            for u, i in pairs(snap, part):
                by_user.setdefault(u, ([], []))[latest].append(ts[(u, i)])
        for early, late in by_user.values():
            if early and late:
                assert max(early) <= min(late)
    trained = np.asarray(snap.train.sum(axis=0)).ravel() > 0
    assert trained[snap.matrices["test_te"].indices].all()


def test_latest_rows_by_timestamp_ties_in_data_order():
    codes = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2])
    ts = np.array([5, 1, 9, 9, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 4])
    latest = latest_rows(codes, ts, 0.2)
    assert np.flatnonzero(latest).tolist() == [3, 13, 14]  # user 0: one of 5 (the later 9); user 1: 2 of 10
    assert not latest_rows(codes, ts, 0.2, min_items=11).any()


def test_temporal_split_needs_timestamps(data):
    with pytest.raises(DataValidationError, match="timestamp"):
        temporal_split(data.drop(columns="timestamp"), SplitConfig(kind="temporal"))


def test_reindex_snapshot_onto_previous_maps(data):
    snap = strong_split(data, SplitConfig())
    prev_items = IdMap(np.array([424242, *snap.items.raw_ids[5:8][::-1]]))
    moved = reindex_snapshot(snap, None, prev_items)
    assert moved.n_items == snap.n_items + 1
    assert moved.items.to_index(prev_items.raw_ids).tolist() == [0, 1, 2, 3]
    for p in snap.matrices:
        assert pairs(moved, p) == pairs(snap, p)


@pytest.mark.realdata
def test_real_pro_sg_item_order_and_fold_in_reproduced(data_home):
    """Rebuild the ML-1M pro_sg item order and every *_te set from the positives with our functions."""
    from recvae.data.readers import read_parquet, read_pro_sg

    snap = read_pro_sg(data_home / "ml-1m" / "pro_sg")
    imp = read_parquet(data_home / "ml-1m" / "ratings_implicit.parquet", user_col="userId", item_col="movieId",
                       rating_col=None, time_col=None)
    rows, hist = snap.history()
    coo = hist.tocoo()
    known = snap.users.to_raw(rows[coo.row]) * 10_000 + snap.items.to_raw(coo.col)
    positives = imp[np.isin(imp["user"].to_numpy() * 10_000 + imp["item"].to_numpy(), known)]  # ratings.dat order
    assert len(positives) == 575_174
    is_train = np.isin(positives["user"].to_numpy(), snap.users.to_raw(snap.rows["train"]))
    icodes, _, seen, train_items = training_items(positives["item"].to_numpy(), is_train)
    assert train_items.tolist() == snap.items.raw_ids.tolist()
    for part in ("validation", "test"):
        part_users = snap.users.to_raw(snap.rows[f"{part}_tr"])
        sel = np.flatnonzero(np.isin(positives["user"].to_numpy(), part_users) & seen[icodes])
        codes = pd.factorize(positives["user"].to_numpy()[sel], sort=True)[0]
        held = sel[fold_in_mask(codes, 0.2, 98765)]
        got = set(zip(positives["user"].to_numpy()[held].tolist(), positives["item"].to_numpy()[held].tolist(),
                      strict=True))
        assert got == pairs(snap, f"{part}_te")


def test_carved_validation_holds_out_a_fifth_of_some_users_items_and_nothing_else() -> None:
    import numpy as np
    import scipy.sparse as sp

    from recvae.data.split import carve_validation

    rng = np.random.default_rng(0)
    dense = (rng.random((40, 30)) < 0.3).astype(np.float32)
    dense[3] = 0  # an empty user is never picked
    train = sp.csr_matrix(dense)
    keep, foldin, heldout = carve_validation(train, 10, 0.2, seed=1)
    assert foldin.shape == heldout.shape == (10, 30)
    assert (keep + _rows_back(train, foldin, heldout, keep) - train).nnz == 0  # the entries add back to the input
    assert keep.multiply(_rows_back(train, foldin, heldout, keep)).nnz == 0  # held-out entries left training
    for r in range(10):
        n = foldin[r].nnz + heldout[r].nnz
        assert n >= 5 and heldout[r].nnz == max(1, int(0.2 * n))
    again = carve_validation(train, 10, 0.2, seed=1)
    assert (again[2] != heldout).nnz == 0  # the same seed carves the same users and items


def _rows_back(train, foldin, heldout, keep):
    """The held-out entries placed back at their users' rows of the training matrix."""
    import numpy as np
    import scipy.sparse as sp

    removed = train - keep
    users = np.unique(removed.nonzero()[0])
    assert len(users) == heldout.shape[0] and (removed[users] != heldout).nnz == 0
    assert (keep[users] != foldin).nnz == 0
    return sp.csr_matrix(removed)


class _Snap:
    """What choice_data reads of a snapshot: its parts, its protocol, its id and its training matrix."""

    def __init__(self, train, protocol: str, parts: dict | None = None) -> None:
        self.train, self.manifest, self.parts, self.snapshot_id = train, {"protocol": protocol}, parts or {}, "snap-x"

    def has(self, part: str) -> bool:
        return part in self.parts

    def heldout(self, part: str):
        return self.parts[part]


def test_models_are_chosen_on_the_snapshots_validation_users_else_carved_ones_else_none() -> None:
    import scipy.sparse as sp

    from recvae.data.split import carve_validation, choice_data, default_n_heldout, has_choice_users

    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((200, 30)) < 0.3).astype(np.float32))
    own = (train[:5], train[5:10])
    got_train, got_val = choice_data(_Snap(train, "strong", {"validation": own}))
    assert got_train is train and got_val is own  # a split's own validation users, untouched
    lightgcn = _Snap(train, "lightgcn")
    keep, (foldin, heldout) = choice_data(lightgcn)
    expect = carve_validation(train, default_n_heldout(200), SplitConfig().test_prop, SplitConfig().seed)
    assert has_choice_users(lightgcn) and foldin.shape[0] == default_n_heldout(200)
    assert (keep != expect[0]).nnz == 0 and (heldout != expect[2]).nnz == 0  # the split config's own carve
    none = _Snap(train, "strong")
    assert not has_choice_users(none)
    with pytest.raises(ConfigError, match="snap-x has no validation users"):
        choice_data(none)

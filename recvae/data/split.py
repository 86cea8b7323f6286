"""Strong-generalization split (Liang et al.'s notebook) and a temporal split, each -> Snapshot.

Strong generalization, exactly as `VAE_ML20M_WWW2018.ipynb`:
1. users sorted by raw id (the notebook's `groupby` index), then `np.random.seed(seed)` +
   `np.random.permutation(n_users)`; the last 2N users of the permuted order are held out: the first N of
   them for validation, the last N for test (N = SplitConfig.n_heldout_users, see `default_n_heldout`);
2. training items are the items of the training users, in order of first appearance in the (filtered)
   data; held-out users' interactions with any other item are dropped;
3. per held-out part, the RNG is re-seeded with `seed` and each user, in increasing raw-id order, gets
   `np.random.choice(n, int(test_prop * n), replace=False)` of their rows (in data order) held out
   (`*_te`); the rest is fold-in (`*_tr`); users with fewer than 5 rows keep everything in fold-in.
Matrix rows follow the permuted order (the notebook's uid order), so `*_tr`/`*_te` rows are the same users.

With previous id maps (a retrain), users and items keep their indices and new ones are appended; items of
the previous map that are absent from this training set keep their (empty) column.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recvae.config import ConfigError, SplitConfig
from recvae.data.idmap import IdMap
from recvae.data.snapshot import HELDOUT, Snapshot, interactions_matrix
from recvae.data.validate import DataValidationError
from recvae.log import progress

logger = logging.getLogger(__name__)

ML20M_USERS = 136_677  # users of ML-20M after the notebook's preprocessing
ML20M_HELDOUT = 10_000  # the notebook's n_heldout_users
MIN_ITEMS_TO_SPLIT = 5  # the notebook's `if n_items_u >= 5`


def default_n_heldout(n_users: int) -> int:
    """Held-out users per part: round(10,000 * n_users / 136,677), at least 1 and at most n_users // 5."""
    if n_users < 5:
        raise ConfigError(f"a split needs at least 5 users; got {n_users}")
    return int(min(max(1, round(ML20M_HELDOUT * n_users / ML20M_USERS)), n_users // 5))


def fold_in_mask(user_codes: np.ndarray, test_prop: float, seed: int, min_items: int = MIN_ITEMS_TO_SPLIT
                 ) -> np.ndarray:
    """True for the rows held out for evaluation (`*_te`), as the notebook's `split_train_test_proportion`.

    `user_codes` gives each row's user; users are visited in increasing code order (pass codes that sort
    like the raw ids) and each user's rows in data order, with one RandomState seeded once.
    """
    user_codes = np.asarray(user_codes)
    mask = np.zeros(len(user_codes), dtype=bool)
    if len(user_codes) == 0:
        return mask
    order = np.argsort(user_codes, kind="stable")
    sorted_codes = user_codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], len(order)]
    rs = np.random.RandomState(seed)
    spans = zip(starts.tolist(), ends.tolist(), strict=True)
    for s, e in progress(spans, total=len(starts), desc="fold-in split", unit="user"):
        n = e - s
        if n >= min_items:
            pick = rs.choice(n, size=int(test_prop * n), replace=False)
            mask[order[s + pick]] = True
    return mask


def training_items(item_raw: np.ndarray, is_train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(item code per row, distinct raw items, whether each distinct item is in training, training items in
    order of first appearance among training rows: the notebook's `pd.unique(train_plays['movieId'])`)."""
    icodes, uniq = pd.factorize(item_raw)
    uniq = np.asarray(uniq)
    train_codes = pd.unique(icodes[is_train])  # first-appearance order
    seen = np.zeros(len(uniq), dtype=bool)
    seen[train_codes] = True
    return icodes.astype(np.int64), uniq, seen, uniq[train_codes]


def latest_rows(user_codes: np.ndarray, timestamps: np.ndarray, prop: float, min_items: int = MIN_ITEMS_TO_SPLIT
                ) -> np.ndarray:
    """True for each user's latest int(prop * n) of n rows by timestamp (ties keep data order); users with
    fewer than `min_items` rows have none. `user_codes` are 0..n_users-1."""
    n = len(user_codes)
    order = np.lexsort((np.arange(n), timestamps, user_codes))
    counts = np.bincount(user_codes)
    first_of_user = np.r_[0, np.cumsum(counts)[:-1]]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - first_of_user[user_codes[order]]
    n_u = counts[user_codes]
    k_u = np.where(n_u >= min_items, (prop * n_u).astype(np.int64), 0)
    return rank >= n_u - k_u


@dataclass
class _Users:
    """The users of a split in the notebook's permuted order."""

    codes: np.ndarray  # each row's user code; codes sort like the raw ids
    raw: np.ndarray  # the distinct raw user ids, sorted
    perm: np.ndarray  # the notebook's permutation of `raw`
    row_pos: np.ndarray  # each row's user's place in the permuted order

    @classmethod
    def of(cls, users: np.ndarray, seed: int) -> _Users:
        """Users sorted by raw id, then `np.random.seed(seed)` + `np.random.permutation`, as the notebook."""
        codes, uniq = pd.factorize(users, sort=True)
        perm = np.random.RandomState(seed).permutation(len(uniq))
        pos = np.empty(len(uniq), dtype=np.int64)
        pos[perm] = np.arange(len(uniq))
        codes = codes.astype(np.int64)
        return cls(codes=codes, raw=np.asarray(uniq), perm=perm, row_pos=pos[codes])

    @property
    def n(self) -> int:
        return len(self.raw)


@dataclass
class _Columns:
    """The id maps of a split and each row's item column: what the parts' matrices are built from."""

    users: IdMap
    items: IdMap
    item_codes: np.ndarray  # each row's item code
    seen: np.ndarray  # per item code: whether training rows have it
    col: np.ndarray  # per item code: its column in `items`
    user_index: np.ndarray  # per permuted place: the user's index in `users`
    n_train_items: int

    @classmethod
    def of(cls, item_raw: np.ndarray, is_train: np.ndarray, order: _Users, users: IdMap | None,
           items: IdMap | None) -> _Columns:
        """Training items in first-appearance order; with previous maps, known ids keep their index."""
        item_codes, uniq_items, seen, train_items = training_items(item_raw, is_train)
        check_compatible(users, order.raw, "user")
        check_compatible(items, train_items, "item")
        permuted = order.raw[order.perm]
        users_map = users.extend(permuted) if users is not None else IdMap(permuted)
        items_map = items.extend(train_items) if items is not None else IdMap(train_items)
        return cls(users=users_map, items=items_map, item_codes=item_codes, seen=seen,
                   col=items_map.to_index(np.asarray(uniq_items), strict=False),
                   user_index=users_map.to_index(permuted), n_train_items=int(len(train_items)))

    def seen_rows(self) -> np.ndarray:
        """Per row: whether its item is a training item (held-out rows on other items are dropped)."""
        return self.seen[self.item_codes]

    def matrix(self, matrix_rows: np.ndarray, sel: np.ndarray, n_rows: int) -> sp.csr_matrix:
        """The part matrix of rows `sel` (mask or indices), placed at `matrix_rows`."""
        return interactions_matrix(matrix_rows, self.col[self.item_codes[sel]], n_rows, len(self.items))


def _n_heldout(config: SplitConfig, n_users: int, parts: int) -> int:
    n = config.n_heldout_users if config.n_heldout_users is not None else default_n_heldout(n_users)
    if parts * n >= n_users:
        raise ConfigError(
            f"n_heldout_users={n} leaves no training users: {parts} x {n} >= {n_users} users; choose a smaller value"
        )
    return int(n)


def check_compatible(previous: IdMap | None, values: np.ndarray, what: str) -> None:
    """Refuse extending a map of integer ids with string ids or the reverse (every id would look new)."""
    if previous is None or len(previous) == 0 or len(values) == 0:
        return
    prev_int = np.asarray(previous.raw_ids).dtype.kind in "iu"
    new_int = np.asarray(values).dtype.kind in "iu"
    if prev_int != new_int:
        kinds = {True: "integer", False: "string"}
        raise DataValidationError(
            f"the previous snapshot has {kinds[prev_int]} {what} ids but this data has {kinds[new_int]} ids; "
            "read the ids with the same type (csv/parquet/sql: id_type / --id-type)"
        )


def strong_split(
    df: pd.DataFrame, config: SplitConfig, *, users: IdMap | None = None, items: IdMap | None = None
) -> Snapshot:
    """Held-out validation and test users with an 80/20 fold-in split (see the module docstring)."""
    config.validate()
    if len(df) == 0:
        raise DataValidationError("no interactions to split")
    order = _Users.of(df["user"].to_numpy(), config.seed)
    n_held = _n_heldout(config, order.n, 2)
    n_tr = order.n - 2 * n_held
    is_train = order.row_pos < n_tr
    cols = _Columns.of(df["item"].to_numpy(), is_train, order, users, items)
    matrices = {"train": cols.matrix(order.row_pos[is_train], is_train, n_tr)}
    rows = {"train": cols.user_index[:n_tr]}
    dropped = 0
    for k, part in enumerate(("validation", "test")):
        lo = n_tr + k * n_held
        in_part = (order.row_pos >= lo) & (order.row_pos < lo + n_held)
        keep = in_part & cols.seen_rows()
        dropped += int(in_part.sum() - keep.sum())
        sel = np.flatnonzero(keep)
        held = fold_in_mask(order.codes[sel], config.test_prop, config.seed)
        for name, m in zip(HELDOUT[part], (~held, held), strict=True):
            matrices[name] = cols.matrix(order.row_pos[sel[m]] - lo, sel[m], n_held)
            rows[name] = cols.user_index[lo : lo + n_held]
    info = {
        "kind": "strong",
        "seed": config.seed,
        "test_prop": config.test_prop,
        "n_users": order.n,
        "n_train_users": n_tr,
        "n_heldout_users": n_held,
        "n_train_items": cols.n_train_items,
        "heldout_rows_dropped_unseen_items": dropped,
    }
    logger.info(
        "strong split: %d train users, %d validation + %d test users, %d training items (%d columns); "
        "%d held-out rows with items unseen in training dropped",
        n_tr, n_held, n_held, cols.n_train_items, len(cols.items), dropped,
    )
    return Snapshot(matrices=matrices, rows=rows, users=cols.users, items=cols.items,
                    manifest={"protocol": "strong", "split": info})


def temporal_split(
    df: pd.DataFrame, config: SplitConfig, *, users: IdMap | None = None, items: IdMap | None = None
) -> Snapshot:
    """Hold out each user's latest interactions, for production retraining; parts:

    - `validation_tr` / `validation_te`: N users (seeded, as the strong split picks its validation users,
      N = SplitConfig.n_heldout_users or `default_n_heldout`) left out of training entirely; their earlier
      interactions are the fold-in and their latest `temporal_test_prop` share the held-out items;
    - `train`: every other user's earlier interactions;
    - `test_tr` / `test_te`: those training users that have held-out interactions: their earlier
      interactions (the same as their train rows) and their latest share.
    Per user with n >= 5 interactions, the latest int(temporal_test_prop * n) by timestamp are held out
    (ties keep data order); users with fewer keep everything. Held-out rows on items unseen in training
    are dropped, as in the strong split.
    """
    config.validate()
    if "timestamp" not in df.columns:
        raise DataValidationError("the temporal split needs a timestamp column; this source has none")
    if len(df) == 0:
        raise DataValidationError("no interactions to split")
    order = _Users.of(df["user"].to_numpy(), config.seed)
    n_held = _n_heldout(config, order.n, 1)
    n_main = order.n - n_held
    latest = latest_rows(order.codes, df["timestamp"].to_numpy(), config.temporal_test_prop)
    is_main = order.row_pos < n_main
    is_train = is_main & ~latest
    cols = _Columns.of(df["item"].to_numpy(), is_train, order, users, items)
    ok_item = cols.seen_rows()
    matrices = {"train": cols.matrix(order.row_pos[is_train], is_train, n_main)}
    rows = {"train": cols.user_index[:n_main]}
    test_sel = is_main & latest & ok_item
    test_pos = np.unique(order.row_pos[test_sel])  # permuted places of users with held-out items
    matrices["test_tr"] = matrices["train"][test_pos]
    matrices["test_te"] = cols.matrix(np.searchsorted(test_pos, order.row_pos[test_sel]), test_sel, len(test_pos))
    rows["test_tr"] = rows["test_te"] = cols.user_index[test_pos]
    val = ~is_main & ok_item
    for name, m in (("validation_tr", val & ~latest), ("validation_te", val & latest)):
        matrices[name] = cols.matrix(order.row_pos[m] - n_main, m, n_held)
        rows[name] = cols.user_index[n_main:]
    dropped = int(((~is_main) | latest).sum() - (val.sum() + test_sel.sum()))
    info = {
        "kind": "temporal",
        "seed": config.seed,
        "temporal_test_prop": config.temporal_test_prop,
        "n_users": order.n,
        "n_train_users": n_main,
        "n_validation_users": n_held,
        "n_test_users": int(len(test_pos)),
        "n_train_items": cols.n_train_items,
        "heldout_rows_dropped_unseen_items": dropped,
    }
    logger.info(
        "temporal split: %d train users (%d with held-out items), %d validation users, %d training items",
        n_main, len(test_pos), n_held, cols.n_train_items,
    )
    return Snapshot(matrices=matrices, rows=rows, users=cols.users, items=cols.items,
                    manifest={"protocol": "temporal", "split": info})


def split(df: pd.DataFrame, config: SplitConfig, *, users: IdMap | None = None, items: IdMap | None = None) -> Snapshot:
    """The split SplitConfig.kind names ("strong" or "temporal")."""
    config.validate()
    fn = strong_split if config.kind == "strong" else temporal_split
    return fn(df, config, users=users, items=items)


def reindex_snapshot(snap: Snapshot, users: IdMap | None, items: IdMap | None) -> Snapshot:
    """The same snapshot on id maps extended from previous ones (existing ids keep their index)."""
    if users is None and items is None:
        return snap
    check_compatible(users, snap.users.raw_ids, "user")
    check_compatible(items, snap.items.raw_ids, "item")
    new_users = users.extend(snap.users.raw_ids) if users is not None else snap.users
    new_items = items.extend(snap.items.raw_ids) if items is not None else snap.items
    user_of = new_users.to_index(snap.users.raw_ids)
    col_of = new_items.to_index(snap.items.raw_ids)
    matrices, rows = {}, {}
    for name, m in snap.matrices.items():
        m = m.tocsr()
        new = sp.csr_matrix((m.data, col_of[m.indices], m.indptr), shape=(m.shape[0], len(new_items)))
        new.sort_indices()
        matrices[name] = new
        rows[name] = user_of[np.asarray(snap.rows[name], dtype=np.int64)]
    return Snapshot(matrices=matrices, rows=rows, users=new_users, items=new_items, manifest=dict(snap.manifest))


def carve_validation(train: sp.csr_matrix, n_users: int, prop: float, seed: int
                     ) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    """Validation users carved out of a training matrix whose protocol has none (LightGCN's: every user trains):
    `n_users` users with at least MIN_ITEMS_TO_SPLIT items, and `prop` of each one's items held out as the strong
    split holds out its users' items (`fold_in_mask`).

    Returns (the training matrix without the held-out entries, the chosen users' remaining rows (fold-in), their
    held-out entries), the last two `n_users` x items. Nothing dense is built."""
    train = sp.csr_matrix(train)
    counts = np.diff(train.indptr)
    eligible = np.flatnonzero(counts >= MIN_ITEMS_TO_SPLIT)
    if len(eligible) == 0:
        raise ConfigError(f"no training user has {MIN_ITEMS_TO_SPLIT} items or more to hold some out for validation")
    users = np.sort(np.random.RandomState(seed).choice(eligible, size=min(n_users, len(eligible)), replace=False))
    rows = np.repeat(np.arange(train.shape[0]), counts)
    chosen = np.isin(rows, users)
    held = np.zeros(train.nnz, dtype=bool)
    held[chosen] = fold_in_mask(rows[chosen], prop, seed)
    keep = sp.csr_matrix((train.data[~held], (rows[~held], train.indices[~held])), shape=train.shape)
    out = sp.csr_matrix((train.data[held], (rows[held], train.indices[held])), shape=train.shape)
    return keep, keep[users], out[users]


def has_choice_users(snapshot: Snapshot) -> bool:
    """Whether models can be chosen on validation users of `snapshot`: its own, or users carved out of its training
    matrix (the LightGCN protocol, where every user trains and none is held out)."""
    return snapshot.has("validation") or snapshot.manifest.get("protocol") == "lightgcn"


def choice_data(snapshot: Snapshot) -> tuple[sp.csr_matrix, tuple[sp.csr_matrix, sp.csr_matrix]]:
    """(training matrix, (fold-in, held-out)) that models are chosen on, test users never among them: the snapshot's
    validation users, or for the LightGCN protocol validation users carved out of the training matrix (`test_prop`
    of the items of as many users as a strong split would hold out), the rest of the matrix training."""
    if snapshot.has("validation"):
        return snapshot.train, snapshot.heldout("validation")
    if not has_choice_users(snapshot):
        raise ConfigError(f"snapshot {snapshot.snapshot_id} has no validation users to choose a model on (prepare a "
                          "strong-generalization or temporal split)")
    config = SplitConfig()
    train, foldin, heldout = carve_validation(snapshot.train, default_n_heldout(snapshot.train.shape[0]),
                                              config.test_prop, config.seed)
    logger.info("LightGCN protocol: %d validation users carved out of the training users (%d held-out items)",
                foldin.shape[0], heldout.nnz)
    return train, (foldin, heldout)

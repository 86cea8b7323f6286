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

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recvae.config import ConfigError, SplitConfig
from recvae.data.idmap import IdMap
from recvae.data.readers import interactions_matrix
from recvae.data.snapshot import HELDOUT, Snapshot
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


def fold_in_mask(user_codes: np.ndarray, test_prop: float, seed: int, min_items: int = MIN_ITEMS_TO_SPLIT) -> np.ndarray:
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
    for s, e in progress(zip(starts.tolist(), ends.tolist()), total=len(starts), desc="fold-in split", unit="user"):
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


def _user_order(users: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row user codes, users sorted by raw id, permutation of them) with the notebook's seeding."""
    codes, uniq = pd.factorize(users, sort=True)
    perm = np.random.RandomState(seed).permutation(len(uniq))
    return codes.astype(np.int64), np.asarray(uniq), perm


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


def _maps(
    uniq_users: np.ndarray, perm: np.ndarray, train_items: np.ndarray, users: IdMap | None, items: IdMap | None
) -> tuple[IdMap, IdMap]:
    check_compatible(users, uniq_users, "user")
    check_compatible(items, train_items, "item")
    ordered = uniq_users[perm]
    users_map = users.extend(ordered) if users is not None else IdMap(ordered)
    items_map = items.extend(train_items) if items is not None else IdMap(train_items)
    return users_map, items_map


def strong_split(
    df: pd.DataFrame, config: SplitConfig, *, users: IdMap | None = None, items: IdMap | None = None
) -> Snapshot:
    """Held-out validation and test users with an 80/20 fold-in split (see the module docstring)."""
    config.validate()
    if len(df) == 0:
        raise DataValidationError("no interactions to split")
    ucodes, uniq_users, perm = _user_order(df["user"].to_numpy(), config.seed)
    n_users = len(uniq_users)
    n_held = _n_heldout(config, n_users, 2)
    n_tr = n_users - 2 * n_held
    pos = np.empty(n_users, dtype=np.int64)
    pos[perm] = np.arange(n_users)
    row_pos = pos[ucodes]
    is_train = row_pos < n_tr

    icodes, uniq_items, seen, train_items = training_items(df["item"].to_numpy(), is_train)

    users_map, items_map = _maps(uniq_users, perm, train_items, users, items)
    col_of_code = items_map.to_index(np.asarray(uniq_items), strict=False)
    user_index = users_map.to_index(uniq_users[perm])  # by permuted position

    matrices: dict[str, sp.csr_matrix] = {}
    rows: dict[str, np.ndarray] = {}
    n_items = len(items_map)
    matrices["train"] = interactions_matrix(row_pos[is_train], col_of_code[icodes[is_train]], n_tr, n_items)
    rows["train"] = user_index[:n_tr]
    dropped = 0
    for k, part in enumerate(("validation", "test")):
        lo = n_tr + k * n_held
        in_part = (row_pos >= lo) & (row_pos < lo + n_held)
        keep = in_part & seen[icodes]
        dropped += int(in_part.sum() - keep.sum())
        sel = np.flatnonzero(keep)
        held = fold_in_mask(ucodes[sel], config.test_prop, config.seed)
        tr, te = HELDOUT[part]
        for name, m in ((tr, ~held), (te, held)):
            r = sel[m]
            matrices[name] = interactions_matrix(row_pos[r] - lo, col_of_code[icodes[r]], n_held, n_items)
            rows[name] = user_index[lo : lo + n_held]
    info = {
        "kind": "strong",
        "seed": config.seed,
        "test_prop": config.test_prop,
        "n_users": n_users,
        "n_train_users": n_tr,
        "n_heldout_users": n_held,
        "n_train_items": int(len(train_items)),
        "heldout_rows_dropped_unseen_items": dropped,
    }
    logger.info(
        "strong split: %d train users, %d validation + %d test users, %d training items (%d columns); "
        "%d held-out rows with items unseen in training dropped",
        n_tr, n_held, n_held, len(train_items), n_items, dropped,
    )
    return Snapshot(matrices=matrices, rows=rows, users=users_map, items=items_map,
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
    ucodes, uniq_users, perm = _user_order(df["user"].to_numpy(), config.seed)
    n_users = len(uniq_users)
    n_held = _n_heldout(config, n_users, 1)
    n_main = n_users - n_held
    pos = np.empty(n_users, dtype=np.int64)
    pos[perm] = np.arange(n_users)
    row_pos = pos[ucodes]

    ts = df["timestamp"].to_numpy()
    order = np.lexsort((np.arange(len(df)), ts, ucodes))
    counts = np.bincount(ucodes, minlength=n_users)
    first_of_user = np.r_[0, np.cumsum(counts)[:-1]]
    rank = np.empty(len(df), dtype=np.int64)
    rank[order] = np.arange(len(df)) - first_of_user[ucodes[order]]
    n_u = counts[ucodes]
    k_u = np.where(n_u >= MIN_ITEMS_TO_SPLIT, (config.temporal_test_prop * n_u).astype(np.int64), 0)
    latest = rank >= n_u - k_u

    is_main = row_pos < n_main
    is_train = is_main & ~latest
    icodes, uniq_items, seen, train_items = training_items(df["item"].to_numpy(), is_train)

    users_map, items_map = _maps(uniq_users, perm, train_items, users, items)
    col_of_code = items_map.to_index(np.asarray(uniq_items), strict=False)
    user_index = users_map.to_index(uniq_users[perm])
    n_items = len(items_map)
    ok_item = seen[icodes]

    matrices: dict[str, sp.csr_matrix] = {}
    rows: dict[str, np.ndarray] = {}
    matrices["train"] = interactions_matrix(row_pos[is_train], col_of_code[icodes[is_train]], n_main, n_items)
    rows["train"] = user_index[:n_main]
    test_sel = is_main & latest & ok_item
    test_pos = np.unique(row_pos[test_sel])  # permuted positions of users with held-out items
    te_row = np.searchsorted(test_pos, row_pos[test_sel])
    matrices["test_tr"] = matrices["train"][test_pos]
    matrices["test_te"] = interactions_matrix(te_row, col_of_code[icodes[test_sel]], len(test_pos), n_items)
    rows["test_tr"] = rows["test_te"] = user_index[test_pos]
    val = ~is_main & ok_item
    for name, m in (("validation_tr", val & ~latest), ("validation_te", val & latest)):
        matrices[name] = interactions_matrix(row_pos[m] - n_main, col_of_code[icodes[m]], n_held, n_items)
        rows[name] = user_index[n_main:]
    dropped = int(((~is_main) | latest).sum() - (val.sum() + test_sel.sum()))
    info = {
        "kind": "temporal",
        "seed": config.seed,
        "temporal_test_prop": config.temporal_test_prop,
        "n_users": n_users,
        "n_train_users": n_main,
        "n_validation_users": n_held,
        "n_test_users": int(len(test_pos)),
        "n_train_items": int(len(train_items)),
        "heldout_rows_dropped_unseen_items": dropped,
    }
    logger.info(
        "temporal split: %d train users (%d with held-out items), %d validation users, %d training items",
        n_main, len(test_pos), n_held, len(train_items),
    )
    return Snapshot(matrices=matrices, rows=rows, users=users_map, items=items_map,
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

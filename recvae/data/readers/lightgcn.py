"""The NGCF/LightGCN split (train.txt, test.txt of `user item item ...` lines), read as a Snapshot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recvae.data.idmap import IdMap
from recvae.data.readers.common import own_validator, split_manifest
from recvae.data.snapshot import Snapshot, interactions_matrix
from recvae.data.validate import DataValidationError, Validator
from recvae.data.validate.arrays import INT64_MAX


def read_lightgcn(folder: str | Path, validator: Validator | None = None) -> Snapshot:
    """The NGCF/LightGCN split (train.txt, test.txt; each line `user item item ...`) as a Snapshot.

    Parts: `train` = every user's train items (all users, rows in user-id order); `test_tr` = the train items
    of the users that have test items (fold-in) and `test_te` = their test items. There is no validation part:
    LightGCN picks the epoch on the test set (manifest protocol "lightgcn"). Users and items keep the files'
    0-based ids (user_list.txt / item_list.txt map them to the original ids); the item columns are
    0..max item id over both files, so test items never seen in training keep their column as in LightGCN.
    """
    folder = Path(folder)
    own, validator = own_validator(validator, folder, "line")
    missing = [f for f in ("train.txt", "test.txt") if not (folder / f).exists()]
    if missing:
        raise DataValidationError(f"not a LightGCN folder: missing {', '.join(missing)}", source=folder)
    tr_u, tr_i, tr_users = _read_adjacency(folder / "train.txt", validator)
    te_u, te_i, te_users = _read_adjacency(folder / "test.txt", validator)
    report = validator.finish(len(tr_u) + len(te_u)) if own else None
    all_users = np.concatenate([tr_users, te_users])
    if len(all_users) == 0:
        raise DataValidationError("no users in train.txt or test.txt", source=folder)
    n_users = int(all_users.max()) + 1
    n_items = int(max(tr_i.max(initial=-1), te_i.max(initial=-1))) + 1
    users, items = IdMap(np.arange(n_users, dtype=np.int64)), IdMap(np.arange(n_items, dtype=np.int64))
    train = interactions_matrix(tr_u, tr_i, n_users, n_items)
    test_users = np.unique(te_u)
    te_rows = np.searchsorted(test_users, te_u)
    matrices = {
        "train": train,
        "test_tr": train[test_users],
        "test_te": interactions_matrix(te_rows, te_i, len(test_users), n_items),
    }
    rows = {"train": np.arange(n_users, dtype=np.int64), "test_tr": test_users, "test_te": test_users}
    return Snapshot(matrices=matrices, rows=rows, users=users, items=items,
                    manifest=split_manifest("lightgcn", "lightgcn", report))


def _read_adjacency(path: Path, validator: Validator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user per pair, item per pair, every user with a line) from a `user item item ...` file."""
    validator.start_file(path)
    users: list[int] = []
    pair_users: list[np.ndarray] = []
    pair_items: list[np.ndarray] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            ids = _line_ids(line.split(), lineno, validator)
            if ids is None:
                continue
            users.append(int(ids[0]))
            pair_users.append(np.full(len(ids) - 1, ids[0], dtype=np.int64))
            pair_items.append(ids[1:])
    return _concat(pair_users), _concat(pair_items), np.asarray(users, dtype=np.int64)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _line_ids(tokens: list[str], lineno: int, validator: Validator) -> np.ndarray | None:
    """The user then item ids of one line; bad items are flagged and dropped, a bad user drops the line (None)."""
    if not tokens:
        return None
    try:
        ids: np.ndarray | None = np.array([int(t) for t in tokens], dtype=np.int64)
    except (ValueError, OverflowError):
        ids = _checked_tokens(tokens, lineno, validator)
    if ids is None:
        return None
    if ids[0] < 0:
        validator.flag([lineno], "negative id", column="field 1 (user)", values=[ids[0]])
        return None
    neg = ids[1:] < 0
    if neg.any():
        for k in np.flatnonzero(neg):
            validator.flag([lineno], "negative id", column=f"field {k + 2} (item)", values=[ids[k + 1]])
        ids = np.concatenate([ids[:1], ids[1:][~neg]])
    return ids


def _checked_tokens(tokens: list[str], lineno: int, validator: Validator) -> np.ndarray | None:
    """Integer tokens of a line with some bad ones: bad items are flagged and dropped; a bad user drops the line."""
    out: list[int] = []
    for k, t in enumerate(tokens):
        try:
            value = int(t)
        except ValueError:
            reason: str | None = "non-numeric id"
        else:
            reason = "id beyond the int64 range" if abs(value) > INT64_MAX else None  # negatives: the caller
        if reason is None:
            out.append(value)
            continue
        validator.flag([lineno], reason, column="field 1 (user)" if k == 0 else f"field {k + 1} (item)", values=[t])
        if k == 0:
            return None
    return np.asarray(out, dtype=np.int64)

"""The pro_sg folder of Liang et al.'s preprocessing notebook: already split, read as a Snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recvae.data.idmap import IdMap
from recvae.data.readers.common import own_validator, split_manifest
from recvae.data.readers.tabular import read_csv
from recvae.data.snapshot import PARTS, Snapshot, interactions_matrix
from recvae.data.validate import DataValidationError, Validator

PRO_SG_PARTS = PARTS  # the notebook writes one <part>.csv per snapshot part


def read_pro_sg(folder: str | Path, validator: Validator | None = None) -> Snapshot:
    """The folder Liang et al.'s notebook writes (train/validation_tr/validation_te/test_tr/test_te.csv with
    header uid,sid; unique_sid.txt and unique_uid.txt give the original item and user id of each index) as a
    Snapshot: items are the original item ids in sid order, users the original user ids in uid order, and the
    rows of each part are its uids in increasing order (the notebook's `uid - start_idx`)."""
    folder = Path(folder)
    own, validator = own_validator(validator, folder, "line")
    missing = [f for f in [*(f"{p}.csv" for p in PRO_SG_PARTS), "unique_sid.txt"] if not (folder / f).exists()]
    if missing:
        raise DataValidationError(f"not a pro_sg folder: missing {', '.join(missing)}", source=folder)
    items = IdMap(_read_id_list(folder / "unique_sid.txt"))
    parts = {p: read_csv(folder / f"{p}.csv", user_col="uid", item_col="sid", rating_col=None, time_col=None,
                         id_type="int", validator=validator) for p in PRO_SG_PARTS}
    if (folder / "unique_uid.txt").exists():
        users = IdMap(_read_id_list(folder / "unique_uid.txt"))
    else:
        n_users = 1 + max(int(df["user"].max()) for df in parts.values() if len(df))
        users = IdMap(np.arange(n_users, dtype=np.int64))
    parts = {p: _in_range(df, folder / f"{p}.csv", len(users), len(items), validator) for p, df in parts.items()}
    report = validator.finish(sum(len(df) for df in parts.values())) if own else None
    matrices, rows = _part_matrices(parts, len(items))
    return Snapshot(matrices=matrices, rows=rows, users=users, items=items,
                    manifest=split_manifest("strong", "pro_sg", report))


def _in_range(df: pd.DataFrame, path: Path, n_users: int, n_items: int, validator: Validator) -> pd.DataFrame:
    """The rows of one part whose uid and sid index the id lists; the others are flagged."""
    validator.start_file(path)
    bad_u = df["user"].to_numpy() >= n_users
    bad_i = df["item"].to_numpy() >= n_items
    validator.flag(df.index[bad_u], f"uid out of range (unique_uid.txt has {n_users} ids)", column="uid",
                   values=df["user"].to_numpy()[bad_u])
    validator.flag(df.index[bad_i], f"sid out of range (unique_sid.txt has {n_items} ids)", column="sid",
                   values=df["item"].to_numpy()[bad_i])
    return df[~(bad_u | bad_i)]


def _part_matrices(
    parts: dict[str, pd.DataFrame], n_items: int
) -> tuple[dict[str, sp.csr_matrix], dict[str, np.ndarray]]:
    """Matrices and row users of each part; a held-out pair's `_tr` and `_te` rows are the same users."""
    matrices: dict[str, sp.csr_matrix] = {}
    rows: dict[str, np.ndarray] = {}
    for group in ("train", "validation", "test"):
        names = ["train"] if group == "train" else [f"{group}_tr", f"{group}_te"]
        uids = np.unique(np.concatenate([parts[n]["user"].to_numpy() for n in names]))
        for n in names:
            df = parts[n]
            r = np.searchsorted(uids, df["user"].to_numpy())
            matrices[n] = interactions_matrix(r, df["item"].to_numpy(), len(uids), n_items)
            rows[n] = uids.astype(np.int64)
    return matrices, rows


def _read_id_list(path: Path) -> np.ndarray:
    """One raw id per line (unique_sid.txt / unique_uid.txt); integers when every line is an integer."""
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for n, ln in enumerate(lines, 1):
        if not ln:
            raise DataValidationError("empty id", source=path, position=n)
    try:
        ids: np.ndarray = np.asarray([int(x) for x in lines], dtype=np.int64)
    except (ValueError, OverflowError):  # not all integers, or some beyond int64: the ids are text
        ids = np.asarray(lines, dtype=object)
    seen: dict[Any, int] = {}
    for n, x in enumerate(ids.tolist(), 1):
        if x in seen:
            raise DataValidationError(f"duplicate id {x!r} (first at line {seen[x]})", source=path, position=n)
        seen[x] = n
    return ids

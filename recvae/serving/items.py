"""Matching a model's item columns to other item ids (a snapshot's, a request's): the one place that decides
where each item sits among the model's columns and whether a model and a snapshot belong together."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recvae.data.idmap import IdMap

logger = logging.getLogger(__name__)


class ItemMismatchError(ValueError):
    """A model scored against items it was not trained on (another data set, or no item ids at all)."""


def item_positions(model_items: IdMap | None, n_model_items: int, values: Any) -> np.ndarray:
    """Model column of each raw item id in `values`, -1 where the model does not know it.

    Ids read from CSV/JSON may arrive as text for an integer-keyed model, or the other way round: both match.
    A model without an id map takes raw ids as its column numbers."""
    values = np.asarray(values)
    if model_items is None:
        idx = _as_integers(values)
        return np.where((idx >= 0) & (idx < n_model_items), idx, -1)
    raw_kind = model_items.raw_ids.dtype.kind
    if raw_kind in "iu" and values.dtype.kind not in "iu":
        idx = _as_integers(values)
        out = np.full(len(values), -1, dtype=np.int64)
        ok = idx >= 0
        out[ok] = model_items.to_index(idx[ok], strict=False)
        return out
    if raw_kind not in "iuf" and values.dtype.kind in "iu":
        values = values.astype(str).astype(object)
    return model_items.to_index(values, strict=False)


def _as_integers(values: np.ndarray) -> np.ndarray:
    """Integer value of each entry, -1 where it is not a non-negative integer."""
    num = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    ok = np.isfinite(num) & (num >= 0) & (num == np.round(num))
    return np.where(ok, num, -1).astype(np.int64)


MIN_SNAPSHOT_SHARE = 0.5
"""Least share of a snapshot's items a model must know to be evaluated or scored on it (unless asked): a weekly
snapshot built on the last adds a few items; below half, the model was trained on other data."""


@dataclass(frozen=True)
class ItemAlignment:
    """Where each snapshot item sits among a model's columns, and how far the two item sets agree."""

    positions: np.ndarray  # (snapshot items,) model column of each snapshot item; -1: the model does not know it
    n_model_items: int
    model: str = "the model"  # the model URI, for messages
    snapshot_id: str | None = None

    @property
    def n_items(self) -> int:
        """Items of the snapshot."""
        return len(self.positions)

    @property
    def n_known(self) -> int:
        """Snapshot items the model knows."""
        return int((self.positions >= 0).sum())

    @property
    def fraction(self) -> float:
        """Share of the snapshot's items the model knows."""
        return self.n_known / self.n_items if self.n_items else 1.0

    @property
    def model_fraction(self) -> float:
        """Share of the model's items the snapshot has."""
        return self.n_known / self.n_model_items if self.n_model_items else 1.0

    @property
    def identical(self) -> bool:
        """The same ids in the same columns: no mapping needed."""
        return self.n_items == self.n_model_items and bool(np.array_equal(self.positions, np.arange(self.n_items)))

    @property
    def compatible(self) -> bool:
        """Every model item is a snapshot item and the model knows most of the snapshot's: the snapshot is the model's
        own, or a later one built from it with stable ids (`--previous` appends new items, never drops one), so only
        the new items are unknown to the model. Integer ids of another data set can be a small subset of a
        snapshot's (50 of 500): such a model would rank a tenth of the catalogue for everyone."""
        return self.n_known == self.n_model_items and self.fraction >= MIN_SNAPSHOT_SHARE

    def overlap(self) -> str:
        """'knows K of the snapshot's N items (P%)', and the model's items the snapshot lacks, if any."""
        text = f"knows {self.n_known:,} of the snapshot's {self.n_items:,} items ({self.fraction:.1%})"
        if self.n_known < self.n_model_items:
            text += f", and {self.n_model_items - self.n_known:,} of its {self.n_model_items:,} items are not in it"
        return text

    def describe(self) -> str:
        """One line: the model, the snapshot and their overlap."""
        return f"{self.model} on snapshot {self.snapshot_id}: {self.overlap()}"


def align_items(
    model_items: IdMap | None,
    n_model_items: int,
    snapshot_items: IdMap,
    *,
    model: str = "the model",
    snapshot_id: str | None = None,
    allow_other: bool = False,
) -> ItemAlignment:
    """Align a model's items to a snapshot's; ItemMismatchError when the model has no item ids, or (unless
    `allow_other`) when some of its items are not the snapshot's, i.e. it was trained on other data."""
    if model_items is None:
        raise ItemMismatchError(
            f"{model}: the model carries no item ids; it cannot be matched to snapshot {snapshot_id}"
        )
    al = ItemAlignment(item_positions(model_items, n_model_items, snapshot_items.raw_ids), n_model_items, model,
                       snapshot_id)
    if not al.compatible and not allow_other:
        raise ItemMismatchError(f"{model} was trained on other items than snapshot {snapshot_id}: it {al.overlap()}; "
                                "use it with its own snapshot or a later one built from it (prepare --previous)")
    if not al.identical:
        (logger.info if al.compatible else logger.warning)("%s", al.describe())
    return al

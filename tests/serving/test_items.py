"""Item alignment: where a snapshot's (or a request's) items sit among a model's columns, and when to refuse."""

from __future__ import annotations

import numpy as np
import pytest

from recvae.data.idmap import IdMap
from recvae.serving.items import ItemMismatchError, align_items, item_positions


def test_same_items_are_identical():
    items = IdMap([10, 11, 12])
    al = align_items(items, 3, IdMap([10, 11, 12]), model="m", snapshot_id="s")
    assert al.identical and al.compatible and al.n_known == 3 and al.fraction == 1.0


def test_a_later_snapshot_with_new_items_is_compatible():
    """A snapshot built with --previous appends items: the model knows the old ones, in any order."""
    al = align_items(IdMap(["b", "a"]), 2, IdMap(["a", "b", "c", "d"]), model="m", snapshot_id="s")
    assert al.compatible and not al.identical
    assert al.positions.tolist() == [1, 0, -1, -1]
    assert al.overlap() == "knows 2 of the snapshot's 4 items (50.0%)"


def test_other_items_are_refused_with_the_overlap_unless_allowed():
    model, snap = IdMap(np.arange(0, 500)), IdMap(np.arange(300, 800))
    with pytest.raises(ItemMismatchError) as err:
        align_items(model, 500, snap, model="runs:/abc/model", snapshot_id="snap-b")
    message = str(err.value)
    assert message.startswith("runs:/abc/model was trained on other items than snapshot snap-b")
    assert "knows 200 of the snapshot's 500 items (40.0%), and 300 of its 500 items are not in it" in message
    al = align_items(model, 500, snap, model="runs:/abc/model", snapshot_id="snap-b", allow_other=True)
    assert (al.n_known, al.n_items, al.compatible) == (200, 500, False)
    assert al.positions[:3].tolist() == [300, 301, 302] and (al.positions[200:] == -1).all()


def test_a_model_without_item_ids_cannot_be_matched():
    with pytest.raises(ItemMismatchError, match="m: the model carries no item ids"):
        align_items(None, 3, IdMap([0, 1, 2]), model="m", snapshot_id="s", allow_other=True)


def test_ids_as_text_match_an_integer_keyed_model_and_back():
    assert item_positions(IdMap([5, 7]), 2, np.array(["7", "x", "5", "-1"], dtype=object)).tolist() == [1, -1, 0, -1]
    assert item_positions(IdMap(np.array(["5", "7"], dtype=object)), 2, np.array([7, 9])).tolist() == [1, -1]
    assert item_positions(None, 3, np.array([2, 3, "1"], dtype=object)).tolist() == [2, -1, 1]


def test_a_model_knowing_a_small_subset_of_the_snapshots_items_is_refused():
    """Integer ids of another data set can all exist in a snapshot (50 of its 500): the model would then rank a tenth
    of the catalogue for every user. Found by a new user, who published such lists with exit 0."""
    from recvae.data.idmap import IdMap
    from recvae.serving.items import MIN_SNAPSHOT_SHARE, ItemMismatchError, align_items

    snapshot = IdMap(np.arange(1, 501))
    small = IdMap(np.arange(1, 51))
    with pytest.raises(ItemMismatchError, match=r"knows 50 of the snapshot's 500 items \(10.0%\)"):
        align_items(small, 50, snapshot, model="models:/m/2", snapshot_id="snap-x")
    assert align_items(small, 50, snapshot, allow_other=True).fraction == 0.1 < MIN_SNAPSHOT_SHARE
    grown = IdMap(np.arange(1, 301))  # last week's model on a catalogue that grew by two thirds: still scored
    assert align_items(grown, 300, snapshot).compatible

"""IdMap: contiguous indices, stable `extend`, Parquet round trip."""

from __future__ import annotations

import numpy as np
import pytest

from recvae.data.idmap import IdMap


def test_extend_keeps_existing_indices_and_appends_new_ids_in_order():
    m = IdMap(np.array([30, 10, 20]))
    e = m.extend(np.array([20, 40, 10, 50, 40]))
    assert e.raw_ids.tolist() == [30, 10, 20, 40, 50]
    assert e.to_index([30, 10, 20]).tolist() == [0, 1, 2]
    assert e.raw_ids.dtype == np.int64
    assert m.raw_ids.tolist() == [30, 10, 20]  # the original is unchanged
    assert m.extend(np.array([10, 30])) is m  # nothing new: same map


def test_chained_extensions_are_stable():
    m = IdMap.from_values(np.array([5, 5, 3]))
    assert m.raw_ids.tolist() == [5, 3]
    m2 = m.extend([7, 3]).extend([1, 5, 9])
    assert m2.to_index([5, 3, 7, 1, 9]).tolist() == [0, 1, 2, 3, 4]


def test_to_index_strict_and_lenient_and_to_raw():
    m = IdMap(np.array(["a", "b", "c"], dtype=object))
    assert m.to_index(["c", "a"]).tolist() == [2, 0]
    with pytest.raises(KeyError, match="1 unknown id"):
        m.to_index(["a", "zz"])
    assert m.to_index(["a", "zz"], strict=False).tolist() == [0, -1]
    assert m.to_raw(np.array([1, 2])).tolist() == ["b", "c"]


def test_duplicates_rejected():
    with pytest.raises(ValueError, match="duplicate raw id 2"):
        IdMap(np.array([1, 2, 2]))


def test_parquet_round_trip_int_and_str(tmp_path):
    for ids in (np.array([9, 3, 7], dtype=np.int64), np.array(["x", "y", "é"], dtype=object)):
        m = IdMap(ids)
        m.save(tmp_path / "m.parquet")
        back = IdMap.load(tmp_path / "m.parquet")
        assert back == m and back.raw_ids.tolist() == ids.tolist()


def test_empty_map_extended_with_ints_stays_integer(tmp_path):
    """Regression: an empty map (numpy float64) used to turn integer ids into an object array."""
    m = IdMap([]).extend(np.array([3, 1]))
    assert m.raw_ids.dtype == np.int64
    assert m.to_index([1, 3]).tolist() == [1, 0]


def test_load_rejects_a_gap_in_indices(tmp_path):
    import pandas as pd

    pd.DataFrame({"index": [0, 2], "raw_id": [5, 6]}).to_parquet(tmp_path / "bad.parquet", index=False)
    with pytest.raises(ValueError, match="not contiguous"):
        IdMap.load(tmp_path / "bad.parquet")

"""Preprocessing: duplicates -> binarize (rating > threshold) -> item count -> user count, as the notebook."""

from __future__ import annotations

import pandas as pd
import pytest

from recvae.config import ConfigError, DataConfig
from recvae.data.preprocess import binarize, counts_of, filter_counts, preprocess
from recvae.data.validate import DataValidationError


def frame(rows):
    return pd.DataFrame(rows, columns=["user", "item", "rating"])


def test_binarize_keeps_strictly_above_threshold():
    df = frame([[1, 1, 3.5], [1, 2, 4.0], [1, 3, 5.0], [1, 4, 1.0]])
    assert binarize(df, 3.5)["item"].tolist() == [2, 3]
    assert len(binarize(df, None)) == 4


def test_counts_of():
    assert counts_of(pd.Series(["a", "b", "a", "c", "a"]).to_numpy()).tolist() == [3, 1, 3, 1, 3]


def test_filter_items_first_then_users_in_one_pass():
    rows = [[1, 1, 5.0], [1, 2, 5.0], [1, 3, 5.0], [1, 4, 5.0], [2, 1, 5.0], [2, 2, 5.0], [2, 9, 5.0],
            [3, 1, 5.0], [3, 3, 5.0]]
    df = frame(rows)
    out = filter_counts(df, min_user_count=3, min_item_count=2)
    # items 4 and 9 have one row each and go first; then users 2 and 3 have 2 rows < 3 and go
    assert out.values.tolist() == [[1, 1, 5.0], [1, 2, 5.0], [1, 3, 5.0]]
    # one pass only: item 3 is now rated once (< 2) but is kept, as in the notebook
    only_users = filter_counts(df, min_user_count=3, min_item_count=0)
    assert sorted(only_users["user"].unique()) == [1, 2]


def test_preprocess_keeps_order_and_index_and_reports_steps():
    rows = [[u, i, 5.0 if (u + i) % 3 else 2.0] for u in range(1, 6) for i in range(1, 12)] + [[1, 1, 4.0]]
    df = frame(rows)
    df.index = pd.RangeIndex(10, 10 + len(df), name="line")
    out, stats = preprocess(df, DataConfig(threshold=3.5, min_user_count=5))
    assert out.index.is_monotonic_increasing and out.index.name == "line"
    assert stats["rows_read"] == len(df) and stats["duplicates_removed"] == 1
    assert stats["after_binarize"] == int((out["rating"] > 3.5).sum()) == len(out)
    assert stats["users"] == out["user"].nunique()


def test_duplicates_resolved_before_binarizing():
    # a pair rated 2 then 5: with "max" it is a positive, with "first" it is not
    df = frame([[1, 1, 2.0], [1, 1, 5.0], [1, 2, 5.0]])
    cfg = dict(threshold=3.5, min_user_count=1)
    assert len(preprocess(df, DataConfig(duplicates="max", **cfg))[0]) == 2
    assert len(preprocess(df, DataConfig(duplicates="first", **cfg))[0]) == 1
    with pytest.raises(DataValidationError, match="duplicate"):
        preprocess(df, DataConfig(duplicates="error", **cfg))


def test_implicit_data_skips_the_threshold():
    df = frame([[u, i, 1.0] for u in range(3) for i in range(5)])
    out, stats = preprocess(df, DataConfig(threshold=3.5), implicit=True)
    assert len(out) == 15 and stats["threshold_applied"] is None


def test_empty_result_is_an_error_naming_the_source():
    df = frame([[1, 1, 1.0], [1, 2, 2.0]])
    with pytest.raises(DataValidationError, match=r"^my\.csv: no interactions left after keeping ratings > 3\.5"):
        preprocess(df, DataConfig(), source="my.csv")
    with pytest.raises(DataValidationError, match="min_user_count=5"):
        preprocess(frame([[1, 1, 5.0]]), DataConfig(), source="x")


def test_invalid_config_is_refused():
    with pytest.raises(ConfigError):
        preprocess(frame([[1, 1, 5.0]]), DataConfig(duplicates="sum"))

"""recvae.evaluation.segments and evaluate's item segments and top lists, on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae.evaluation.metrics import evaluate
from recvae.evaluation.segments import (
    beyond_table,
    head_items,
    history_segments,
    history_thresholds,
    item_segments,
    segment_table,
)


def test_history_thresholds_are_the_quantiles_and_segments_follow_them() -> None:
    counts = np.array([1, 2, 3, 4, 5, 6])
    # numpy's linear quantiles: position 5/3 -> 2 + 2/3, position 10/3 -> 4 + 1/3
    low, high = history_thresholds(counts)
    assert low == pytest.approx(8 / 3) and high == pytest.approx(13 / 3)
    assert history_segments(counts, (low, high)).tolist() == ["light", "light", "medium", "medium", "heavy", "heavy"]
    # given thresholds: bounds are inclusive
    assert history_segments(np.array([5, 6, 20, 21]), (5, 20)).tolist() == ["light", "medium", "medium", "heavy"]
    with pytest.raises(ValueError, match="increasing"):
        history_segments(counts, (5, 2))
    with pytest.raises(ValueError, match="quantiles"):
        history_thresholds(counts, (0.9, 0.1))


def test_head_is_the_most_popular_share_with_ties_to_the_lower_index() -> None:
    counts = np.array([5, 1, 9, 1, 0, 3, 3, 2, 7, 4])
    assert np.flatnonzero(head_items(counts, 0.2)).tolist() == [2, 8]
    assert np.flatnonzero(head_items(counts, 0.3)).tolist() == [0, 2, 8]
    assert np.flatnonzero(head_items(np.array([3, 3, 3, 1]), 0.5)).tolist() == [0, 1]
    segs = item_segments(counts, 0.2)
    assert segs["tail"].tolist() == (~segs["head"]).tolist()
    with pytest.raises(ValueError, match="head_share"):
        head_items(counts, 1.0)


def test_segment_table_means_stderr_and_counts() -> None:
    per_user = {"ndcg@2": np.array([1.0, 0.5, np.nan, 0.0])}
    seg = np.array(["light", "light", "heavy", "heavy"], dtype=object)
    by_items = {"tail": {"ndcg@2": np.array([np.nan, 1.0, np.nan, 0.0])}}
    table = segment_table(per_user, seg, by_items).set_index(["segment", "metric"])
    assert table.index.tolist() == [("all", "ndcg@2"), ("users_light", "ndcg@2"), ("users_heavy", "ndcg@2"),
                                    ("items_tail", "ndcg@2")]
    # all: 1, .5, 0 -> mean .5, sd .5, stderr .5 / sqrt(3); light: 1, .5 -> .75, sd sqrt(.125), stderr .25
    assert table.loc[("all", "ndcg@2")].tolist() == pytest.approx([0.5, 0.5 / math.sqrt(3), 3])
    assert table.loc[("users_light", "ndcg@2")].tolist() == pytest.approx([0.75, 0.25, 2])
    heavy = table.loc[("users_heavy", "ndcg@2")]
    assert heavy["mean"] == 0.0 and math.isnan(heavy["stderr"]) and heavy["n_users"] == 1
    assert table.loc[("items_tail", "ndcg@2")].tolist() == pytest.approx([0.5, 0.5, 2])
    assert "users_medium" not in table.index.get_level_values(0)  # no such users


def _fixed_scores(row_scores: list[list[float]]):
    scores = torch.tensor(row_scores, dtype=torch.float32)

    def score(x: sp.csr_matrix) -> torch.Tensor:
        return scores[: x.shape[0]].clone()

    return score


def test_evaluate_per_item_segment_and_top_lists() -> None:
    # one user, items ranked 0 1 2 3 4; item 0 is in the fold-in (masked), held out: items 2 and 4
    foldin = sp.csr_matrix(np.array([[1, 0, 0, 0, 0]], dtype=np.float32))
    heldout = sp.csr_matrix(np.array([[0, 0, 1, 0, 1]], dtype=np.float32))
    head = np.array([True, True, True, False, False])
    result = evaluate(_fixed_scores([[5, 4, 3, 2, 1]]), foldin, heldout, ["ndcg@2", "recall@2"],
                      item_segments={"head": head, "tail": ~head}, keep_top=3)
    # top-2 after masking: 1, 2 -> one hit at rank 2 of two held-out: dcg 1/log2(3), idcg 1 + 1/log2(3)
    d = 1 / math.log2(3)
    assert result.per_user["ndcg@2"].tolist() == pytest.approx([d / (1 + d)])
    assert result.per_user["recall@2"].tolist() == [0.5]
    # head's held-out item 2 is at rank 2: ndcg d / 1, recall 1; tail's item 4 is not in the top 2
    assert result.by_items["head"]["ndcg@2"].tolist() == pytest.approx([d])
    assert result.by_items["head"]["recall@2"].tolist() == [1.0]
    assert result.by_items["tail"]["recall@2"].tolist() == [0.0]
    assert result.top.tolist() == [[1, 2, 3]]


def test_top_lists_pad_past_the_unseen_items() -> None:
    foldin = sp.csr_matrix(np.array([[1, 1, 0]], dtype=np.float32))
    heldout = sp.csr_matrix(np.array([[0, 0, 1]], dtype=np.float32))
    result = evaluate(_fixed_scores([[3, 2, 1]]), foldin, heldout, ["recall@5"], keep_top=5)
    assert result.top.tolist() == [[2, -1, -1, -1, -1]]
    assert result.by_items == {} and evaluate(_fixed_scores([[3, 2, 1]]), foldin, heldout).top is None


def test_beyond_table_overall_and_per_user_segment() -> None:
    top = np.array([[0, 1], [0, 2], [3, -1]])
    counts = np.array([10, 5, 5, 0])  # percentiles: 87.5, 50, 50, 12.5
    seg = np.array(["light", "heavy", "heavy"], dtype=object)
    table = beyond_table(top, counts, [2], user_segment=seg).set_index(["segment", "metric"])["mean"]
    # all: items 0 1 2 3 -> coverage 1; exposure 2 1 1 1 -> sorted 1 1 1 2, gini (-3 -1 +1 +3*2) / (4 * 5) = 3/20
    assert table[("all", "coverage@2")] == 1.0 and table[("all", "gini@2")] == pytest.approx(0.15)
    # novelty: lists (87.5 + 50)/2, (87.5 + 50)/2, 12.5 -> mean 50
    assert table[("all", "novelty@2")] == pytest.approx(50.0)
    assert table[("users_light", "coverage@2")] == 0.5 and table[("users_heavy", "novelty@2")] == pytest.approx(
        (68.75 + 12.5) / 2)
    assert ("all", "ild@2") not in table.index
    genres = np.array([[1, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    with_ild = beyond_table(top, counts, [2], genres).set_index(["segment", "metric"])["mean"]
    # lists (0, 1): cos 0 -> 1; (0, 2): cos 1 -> 0; one-item list skipped -> 0.5
    assert with_ild[("all", "ild@2")] == pytest.approx(0.5)

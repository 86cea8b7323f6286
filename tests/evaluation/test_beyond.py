"""recvae.evaluation.beyond on hand-computed lists (the arithmetic is in the comments) and against brute-force loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recvae.evaluation.beyond import (
    PAD,
    beyond_accuracy,
    catalogue_coverage,
    gini_index,
    intra_list_diversity,
    mean_popularity_percentile,
    padded_lists,
    popularity_percentiles,
)

N_ITEMS = 8
RECS = [[0, 1, 2], [0, 1, 3], [0, 4, 5]]
# training interactions per item: 50 40 30 30 10 5 1 0
COUNTS = np.array([50, 40, 30, 30, 10, 5, 1, 0])
# 0/1 genres (action, comedy, drama); item 4 has none
GENRES = np.array(
    [[1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 0], [0, 1, 0], [1, 1, 1], [1, 1, 1]], dtype=np.float32
)


def test_catalogue_coverage() -> None:
    # top-3: items {0, 1, 2, 3, 4, 5} of 8 -> 6/8; top-1: {0} -> 1/8
    assert catalogue_coverage(RECS, N_ITEMS, 3) == 0.75
    assert catalogue_coverage(RECS, N_ITEMS, 1) == 1 / 8
    assert catalogue_coverage([], N_ITEMS, 3) == 0.0
    assert catalogue_coverage([[], []], N_ITEMS, 3) == 0.0


def test_gini_index() -> None:
    # exposure: item 0 three times, item 1 twice, items 2..5 once, 6 and 7 never; sorted 0 0 1 1 1 1 2 3, total 9;
    # Gini = sum_i (2i - n - 1) c_(i) / (n * total) with weights -7 -5 -3 -1 1 3 5 7:
    #   (-3 - 1 + 1 + 3 + 2*5 + 3*7) / (8 * 9) = 31/72
    assert gini_index(RECS, N_ITEMS, 3) == pytest.approx(31 / 72, abs=1e-15)
    # every item equally often -> 0; one item takes every slot -> (n - 1)/n = 3/4
    assert gini_index([[0], [1], [2], [3]], 4, 1) == 0.0
    assert gini_index([[0], [0]], 4, 1) == 0.75
    # a single one-item list: sorted 0 0 0 1, (3 * 1) / (4 * 1) = 3/4 as well
    assert gini_index([[2]], 4, 5) == 0.75
    assert math.isnan(gini_index([[], []], 4, 5))
    assert math.isnan(gini_index([], 4, 5))


def test_popularity_percentiles() -> None:
    # (items less popular + half the items equally popular) / 8 * 100:
    #   50: 7.5/8 = 93.75, 40: 6.5/8 = 81.25, the two 30s: (4 + 1)/8 = 62.5, 10: 3.5/8 = 43.75,
    #   5: 2.5/8 = 31.25, 1: 1.5/8 = 18.75, 0: 0.5/8 = 6.25; their mean is 50
    expected = [93.75, 81.25, 62.5, 62.5, 43.75, 31.25, 18.75, 6.25]
    assert popularity_percentiles(COUNTS).tolist() == expected
    assert popularity_percentiles(np.array([7, 7, 7])).tolist() == [50.0, 50.0, 50.0]


def test_mean_popularity_percentile_and_novelty() -> None:
    # [0, 1, 2]: (93.75 + 81.25 + 62.5)/3 = 237.5/3; [0, 1, 3]: the same; [0, 4, 5]: (93.75 + 43.75 + 31.25)/3 = 56.25
    got = mean_popularity_percentile(RECS, COUNTS, 3)
    assert got == pytest.approx([237.5 / 3, 237.5 / 3, 56.25], abs=1e-12)
    # novelty@3: mean over the lists = (237.5/3 * 2 + 56.25)/3 = 643.75/9
    assert beyond_accuracy(RECS, COUNTS, 3)["novelty@3"] == pytest.approx(643.75 / 9, abs=1e-12)
    # an empty list has no value and is left out of the mean; a one-item list is that item's percentile
    got = mean_popularity_percentile([[], [6], [7, 0]], COUNTS, 3)
    assert math.isnan(got[0]) and got[1] == 18.75 and got[2] == 50.0
    assert beyond_accuracy([[], [6]], COUNTS, 3)["novelty@3"] == 18.75


def test_intra_list_diversity() -> None:
    # cos(0,1) = 1/sqrt2, cos(0,2) = cos(1,2) = 0 -> distances 1 - 1/sqrt2, 1, 1 -> mean 1 - sqrt2/6
    # cos(0,1) = cos(1,3) = 1/sqrt2, cos(0,3) = 1 -> distances 1 - 1/sqrt2, 0, 1 - 1/sqrt2 -> mean (2 - sqrt2)/3
    # item 4 has no genre (similar to nothing), cos(0,5) = 0 -> all distances 1 -> 1
    r2 = math.sqrt(2)
    expected = [1 - r2 / 6, (2 - r2) / 3, 1.0]
    assert intra_list_diversity(RECS, GENRES, 3) == pytest.approx(expected, abs=1e-12)
    assert intra_list_diversity(RECS, sp.csr_matrix(GENRES), 3) == pytest.approx(expected, abs=1e-12)
    assert intra_list_diversity(RECS, sp.csr_array(GENRES), 3) == pytest.approx(expected, abs=1e-12)
    # top-2 only: pairs (0,1), (0,1), (0,4) -> 1 - 1/sqrt2, 1 - 1/sqrt2, 1
    assert intra_list_diversity(RECS, GENRES, 2) == pytest.approx([1 - 1 / r2, 1 - 1 / r2, 1.0], abs=1e-12)
    # ild@3 = mean of the three lists = (1 - sqrt2/6 + (2 - sqrt2)/3 + 1)/3
    ild = beyond_accuracy(RECS, COUNTS, 3, features=GENRES)["ild@3"]
    assert ild == pytest.approx(sum(expected) / 3, abs=1e-12)
    # fewer than two items: no pair, NaN; left out of the mean
    got = intra_list_diversity([[], [3], [0, 3]], GENRES, 3)
    assert math.isnan(got[0]) and math.isnan(got[1]) and got[2] == pytest.approx(0.0, abs=1e-15)
    assert beyond_accuracy([[], [3], [0, 2]], COUNTS, 3, features=GENRES)["ild@3"] == 1.0


def test_intra_list_diversity_matches_pairwise_loop(rng) -> None:
    """Real-valued item vectors (a model's representations), short lists among full ones, chunk boundaries."""
    n_items, k = 30, 6
    feats = rng.standard_normal((n_items, 5))
    recs = [rng.choice(n_items, size=rng.integers(0, k + 3), replace=False).tolist() for _ in range(25)]
    got = intra_list_diversity(recs, feats, k, chunk=4)
    for u, items in enumerate(recs):
        items = items[:k]
        if len(items) < 2:
            assert math.isnan(got[u])
            continue
        d = [
            1 - feats[i] @ feats[j] / (np.linalg.norm(feats[i]) * np.linalg.norm(feats[j]))
            for a, i in enumerate(items)
            for j in items[a + 1 :]
        ]
        assert got[u] == pytest.approx(np.mean(d), abs=1e-12)


def test_array_and_list_inputs_agree() -> None:
    arr = np.array([[0, 1, 2], [3, PAD, PAD], [PAD, PAD, PAD]])
    lists = [[0, 1, 2], [3], []]
    assert np.array_equal(padded_lists(arr, 3, N_ITEMS), padded_lists(lists, 3, N_ITEMS))
    # a wider array is cut to k; a narrower one is padded
    assert padded_lists(arr, 2, N_ITEMS).tolist() == [[0, 1], [3, PAD], [PAD, PAD]]
    assert padded_lists(arr, 4, N_ITEMS)[:, 3].tolist() == [PAD, PAD, PAD]
    assert beyond_accuracy(arr, COUNTS, 3, GENRES) == pytest.approx(beyond_accuracy(lists, COUNTS, 3, GENRES))


def test_bad_lists_are_refused_with_their_place() -> None:
    with pytest.raises(ValueError, match=r"list 1, rank 2: item 8 is outside the catalogue of 8 items"):
        catalogue_coverage([[0], [1, 8]], N_ITEMS, 3)
    with pytest.raises(ValueError, match="item -3"):
        gini_index(np.array([[0, -3]]), N_ITEMS, 3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        catalogue_coverage(RECS, N_ITEMS, 0)
    with pytest.raises(ValueError, match=r"\(users, k\) array"):
        catalogue_coverage(np.array([0, 1]), N_ITEMS, 3)

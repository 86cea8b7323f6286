"""recvae.evaluation.paired on hand-computed differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from recvae.evaluation.paired import one_sided_greater, paired_difference, paired_values


def test_a_small_noisy_difference_is_a_tie() -> None:
    cand = np.array([0.5, 0.7, 0.9, 0.6, np.nan])
    ref = np.array([0.4, 0.5, 0.6, 0.6, 0.3])  # the last user has no candidate value: dropped
    r = paired_difference(cand, ref, 0.95, "ndcg@100")
    # d = .1 .2 .3 0: mean .15, sum of squared deviations .05, sd sqrt(.05/3), stderr sd/2
    stderr = math.sqrt(0.05 / 3) / 2
    assert r.n_users == 4 and r.diff == pytest.approx(0.15) and r.stderr == pytest.approx(stderr)
    assert r.candidate == pytest.approx(0.675) and r.reference == pytest.approx(0.525)
    half = 3.182446305284263 * stderr  # t(0.975, 3 df)
    assert (r.ci_low, r.ci_high) == pytest.approx((0.15 - half, 0.15 + half))
    assert r.t_pvalue == pytest.approx(2 * stats.t.sf(0.15 / stderr, 3))
    # Wilcoxon drops the zero: ranks 1 2 3 all positive, exact two-sided p = 2 / 2^3
    assert r.wilcoxon_pvalue == pytest.approx(0.25)
    assert r.verdict == "tie" and r.metric == "ndcg@100" and r.to_dict()["confidence"] == 0.95


def test_a_consistent_difference_is_better_and_its_mirror_worse() -> None:
    ref = np.linspace(0.2, 0.6, 10)
    cand = ref + np.arange(1, 11) / 100  # d = .01 ... .10, all positive and distinct
    r = paired_difference(cand, ref)
    assert r.diff == pytest.approx(0.055) and r.verdict == "better" and r.ci_low > 0
    assert r.wilcoxon_pvalue == pytest.approx(2 / 2**10)  # exact: every rank positive
    w = paired_difference(ref, cand)
    assert w.verdict == "worse" and w.diff == pytest.approx(-0.055) and w.ci_high < 0
    # at a confidence so high the interval includes 0 it is a tie again
    assert paired_difference(cand, ref, confidence=1 - 1e-12).verdict == "tie"


def test_identical_and_too_few_users() -> None:
    same = paired_difference(np.ones(5), np.ones(5))
    assert same.diff == 0 and same.t_pvalue == 1.0 and same.wilcoxon_pvalue == 1.0 and same.verdict == "tie"
    one = paired_difference(np.array([1.0]), np.array([0.0]))
    assert one.n_users == 1 and math.isnan(one.stderr) and one.verdict == "tie"
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(np.ones(3), np.ones(3), confidence=1.0)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_values(np.ones(3), np.ones(2))


def test_one_sided_greater() -> None:
    ref = np.linspace(0.2, 0.6, 10)
    clear = one_sided_greater(ref + np.arange(1, 11) / 100, ref, 0.95)
    stderr = np.std(np.arange(1, 11) / 100, ddof=1) / math.sqrt(10)
    assert clear.significant and clear.diff == pytest.approx(0.055) and clear.stderr == pytest.approx(stderr)
    assert clear.p_value == pytest.approx(stats.t.sf(0.055 / stderr, 9))
    noise = one_sided_greater(np.array([0.5, 0.7, 0.9, 0.6]), np.array([0.4, 0.5, 0.6, 0.6]), 0.95)
    # t = .15 / (sqrt(.05/3)/2) = 2.32 on 3 df: one-sided p ~ 0.051, not below 0.05
    assert not noise.significant and noise.p_value == pytest.approx(stats.t.sf(2.32379000772445, 3))
    assert one_sided_greater(np.array([0.5, 0.7, 0.9, 0.6]), np.array([0.4, 0.5, 0.6, 0.6]), 0.9).significant
    assert not one_sided_greater(np.zeros(4), np.zeros(4), 0.95).significant

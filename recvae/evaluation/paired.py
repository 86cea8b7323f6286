"""Paired comparison of two models on the same users: the mean per-user difference, its standard error, a t-based
confidence interval, the paired t-test and the Wilcoxon signed-rank test, and a better / worse / tie verdict."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

VERDICTS = ("better", "worse", "tie")


@dataclass(frozen=True)
class PairedDifference:
    """`candidate - reference` on the users both have a value for (NaN: no held-out items there)."""

    metric: str
    n_users: int
    candidate: float
    reference: float
    diff: float
    stderr: float
    ci_low: float
    ci_high: float
    confidence: float
    t_pvalue: float
    wilcoxon_pvalue: float
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")


def paired_values(candidate: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs where both values are finite, as float64 arrays of equal length."""
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths; got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def _wilcoxon(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of differences `d` (1.0 when every difference is zero)."""
    if len(d) == 0 or not np.any(d != 0):
        return 1.0 if len(d) else math.nan
    return float(stats.wilcoxon(d, zero_method="wilcox").pvalue)


def paired_difference(
    candidate: np.ndarray, reference: np.ndarray, confidence: float = 0.95, metric: str = ""
) -> PairedDifference:
    """Mean of `candidate - reference` per user, its standard error, the t interval at `confidence`, the paired
    t-test's and the Wilcoxon test's two-sided p-values, and the verdict: 'better' / 'worse' when the t interval
    lies above / below 0, else 'tie' (too few users to tell is a tie as well)."""
    _check_confidence(confidence)
    a, b = paired_values(candidate, reference)
    n = len(a)
    d = a - b
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return PairedDifference(metric, n, _mean(a), _mean(b), mean, math.nan, math.nan, math.nan, confidence,
                                math.nan, math.nan, "tie")
    sd = float(d.std(ddof=1))
    stderr = sd / math.sqrt(n)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * stderr
    # identical pairs: no spread, the difference is exactly zero, nothing to test
    t_p = float(stats.ttest_rel(a, b).pvalue) if sd > 0 else (1.0 if mean == 0 else 0.0)
    verdict = "tie"
    if t_p < 1 - confidence:
        verdict = "better" if mean > 0 else "worse"
    return PairedDifference(metric, n, _mean(a), _mean(b), mean, stderr, mean - half, mean + half, confidence,
                            t_p, _wilcoxon(d), verdict)


def _mean(v: np.ndarray) -> float:
    return float(v.mean()) if len(v) else math.nan


@dataclass(frozen=True)
class OneSided:
    """Is `candidate` greater than `reference` on the same users: the one-sided paired t-test at a confidence."""

    n_users: int
    diff: float
    stderr: float
    p_value: float
    confidence: float
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def one_sided_greater(candidate: np.ndarray, reference: np.ndarray, confidence: float) -> OneSided:
    """The paired one-sided t-test of `candidate > reference`: significant when its p-value < 1 - confidence."""
    _check_confidence(confidence)
    a, b = paired_values(candidate, reference)
    n = len(a)
    d = a - b
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return OneSided(n, mean, math.nan, math.nan, confidence, False)
    sd = float(d.std(ddof=1))
    p = float(stats.ttest_rel(a, b, alternative="greater").pvalue) if sd > 0 else (0.0 if mean > 0 else 1.0)
    return OneSided(n, mean, sd / math.sqrt(n), p, confidence, p < 1 - confidence)

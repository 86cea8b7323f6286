"""Metrics per segment, as analysts slice them: users by history length (light / medium / heavy) and held-out items
by training popularity (head / tail), in one tidy table (segment, metric, mean, stderr, n_users)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recvae.evaluation.metrics import EvalResult

USER_SEGMENTS = ("light", "medium", "heavy")
ITEM_SEGMENTS = ("head", "tail")
HISTORY_QUANTILES = (1 / 3, 2 / 3)
HEAD_SHARE = 0.2  # the most popular fifth of the catalogue is the head
TABLE_COLUMNS = ["segment", "metric", "mean", "stderr", "n_users"]


def history_thresholds(counts: np.ndarray, quantiles: Sequence[float] = HISTORY_QUANTILES) -> tuple[float, float]:
    """(light's upper bound, medium's upper bound): the `quantiles` of users' history lengths `counts`."""
    if len(quantiles) != 2 or not 0 <= quantiles[0] <= quantiles[1] <= 1:
        raise ValueError(f"need two increasing quantiles in [0, 1]; got {list(quantiles)}")
    if len(counts) == 0:
        raise ValueError("no history lengths to take quantiles of")
    low, high = np.quantile(np.asarray(counts, dtype=np.float64), quantiles)
    return float(low), float(high)


def history_segments(counts: np.ndarray, thresholds: tuple[float, float]) -> np.ndarray:
    """Each user's segment: 'light' (count <= thresholds[0]), 'medium' (<= thresholds[1]) or 'heavy'."""
    low, high = thresholds
    if low > high:
        raise ValueError(f"history thresholds must be increasing; got {low}, {high}")
    c = np.asarray(counts, dtype=np.float64)
    return np.where(c <= low, "light", np.where(c <= high, "medium", "heavy")).astype(object)


def head_items(item_counts: np.ndarray, head_share: float = HEAD_SHARE) -> np.ndarray:
    """Boolean mask of the head: the ceil(head_share * n_items) most popular items by training count (ties go to
    the lower index, so the split is exact); the rest is the tail."""
    if not 0 < head_share < 1:
        raise ValueError(f"head_share must be in (0, 1); got {head_share}")
    counts = np.asarray(item_counts)
    n_head = math.ceil(head_share * len(counts))
    order = np.argsort(-counts, kind="stable")
    mask = np.zeros(len(counts), dtype=bool)
    mask[order[:n_head]] = True
    return mask


def item_segments(item_counts: np.ndarray, head_share: float = HEAD_SHARE) -> dict[str, np.ndarray]:
    """{'head': mask, 'tail': mask} over the catalogue (see `head_items`)."""
    head = head_items(item_counts, head_share)
    return {"head": head, "tail": ~head}


def _summary(values: np.ndarray) -> tuple[float, float, int]:
    """(mean, standard error, count) over the finite values (NaN: a user without held-out items in the segment)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    mean = float(v.mean()) if len(v) else math.nan
    stderr = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return mean, stderr, len(v)


def segment_table(
    per_user: Mapping[str, np.ndarray],
    user_segment: np.ndarray | None = None,
    by_items: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> pd.DataFrame:
    """Tidy table of each metric overall ('all'), per user segment ('users_light', ...: the rows of `per_user` whose
    `user_segment` it is) and per item segment ('items_tail', ...: `by_items[segment]`, the metric on those
    held-out items only); mean and stderr over the users with held-out items there, and their number."""
    rows = []
    segments = [] if user_segment is None else [s for s in USER_SEGMENTS if (np.asarray(user_segment) == s).any()]
    for metric, values in per_user.items():
        rows.append(("all", metric, *_summary(values)))
        for seg in segments:
            rows.append((f"users_{seg}", metric, *_summary(np.asarray(values)[np.asarray(user_segment) == seg])))
    for seg, metrics in (by_items or {}).items():
        for metric, values in metrics.items():
            rows.append((f"items_{seg}", metric, *_summary(values)))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def beyond_table(
    top: np.ndarray,
    item_counts: np.ndarray,
    ks: Sequence[int],
    features: np.ndarray | None = None,
    user_segment: np.ndarray | None = None,
) -> pd.DataFrame:
    """Beyond-accuracy metrics (coverage, gini, novelty, and ild given item `features`) of the top-k lists `top`
    at each k, overall ('all') and per user segment, in `segment_table`'s columns (stderr NaN: a set-level value)."""
    from recvae.evaluation.beyond import beyond_accuracy

    groups = [("all", np.ones(len(top), dtype=bool))]
    if user_segment is not None:
        groups += [(f"users_{s}", np.asarray(user_segment) == s) for s in USER_SEGMENTS
                   if (np.asarray(user_segment) == s).any()]
    rows = []
    for name, mask in groups:
        for k in ks:
            for metric, value in beyond_accuracy(top[mask], item_counts, k, features).items():
                rows.append((name, metric, value, math.nan, int(mask.sum())))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


@dataclass
class EvalReport:
    """One split's evaluation for analysts: the per-user values (`result`) of the users `users` (raw ids), their
    history lengths, held-out counts and segments, the thresholds used, the segment and beyond-accuracy `table`,
    and where the item features of intra-list diversity came from (None: not computed, `ild_note` says why)."""

    split: str
    result: EvalResult
    users: np.ndarray
    history: np.ndarray
    heldout: np.ndarray
    user_segment: np.ndarray
    thresholds: tuple[float, float]
    table: pd.DataFrame
    ild_source: str | None = None
    ild_note: str | None = None

    def per_user_frame(self) -> pd.DataFrame:
        """One row per evaluated user (raw id): history length, segment, held-out count, then each metric, and
        each metric on the held-out items of each item segment (`ndcg@100.items_tail`)."""
        cols: dict[str, np.ndarray] = {"user": self.users, "history": self.history, "heldout": self.heldout,
                                       "segment": np.asarray(self.user_segment, dtype=str)}
        cols.update(self.result.per_user)
        for seg, metrics in self.result.by_items.items():
            cols.update({f"{m}.items_{seg}": v for m, v in metrics.items()})
        return pd.DataFrame(cols)

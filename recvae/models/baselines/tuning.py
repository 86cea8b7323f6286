"""Grid search of a baseline's hyperparameters on the validation users."""

from __future__ import annotations

import itertools
import logging
import math
import time
from typing import Any

from recvae.data.snapshot import Snapshot
from recvae.evaluation.metrics import evaluate
from recvae.models.baselines.registry import fit_baseline, make_baseline

logger = logging.getLogger(__name__)


def param_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the grid's key order (one empty dict for an empty grid)."""
    keys = list(grid)
    for k in keys:
        if not isinstance(grid[k], (list, tuple)) or len(grid[k]) == 0:
            raise ValueError(f"grid[{k!r}] must be a non-empty list; got {grid[k]!r}")
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def tune(
    kind: str,
    snapshot: Snapshot,
    grid: dict[str, list[Any]],
    *,
    metric: str = "ndcg@100",
    batch_size: int = 2_000,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Choose the grid point with the best validation `metric` (fit on train, score validation users only; for the
    LightGCN protocol, users carved out of the training matrix, see `recvae.data.split.choice_data`).

    Parameters
    ----------
    kind : str
        'popularity', 'ease' or 'als'.
    snapshot : Snapshot
        Must hold validation users, or follow the LightGCN protocol; test users are never touched.
    grid : dict of str to list
        Candidate values per hyperparameter; every combination is tried.
    metric : str, optional
        Selection metric (recvae.evaluation.metrics name), default NDCG@100.

    Returns
    -------
    best_params : dict
        The winning grid point (the first one on ties).
    table : list of dict
        One row per grid point: the params, the metric's mean and standard error, users and fit seconds.
    """
    from recvae.data.split import choice_data  # here: loading a logged baseline must not need the data layer's imports

    train, (foldin, heldout) = choice_data(snapshot)
    points = param_grid(grid)
    for p in points:
        make_baseline(kind, **p)  # fail on a bad name or value before any fitting
    table: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any]] | None = None
    for point in points:
        start = time.perf_counter()
        model = fit_baseline(kind, train, **point)
        fit_s = time.perf_counter() - start
        res = evaluate(model.scores, foldin, heldout, metrics=(metric,), batch_size=batch_size)
        value = res.means[metric]
        table.append({**point, metric: value, f"{metric}_stderr": res.stderr[metric], "n_users": res.n_users,
                      "fit_seconds": round(fit_s, 3)})
        logger.info("tune %s %s: validation %s = %.4f (fit %.1fs)", kind, point, metric, value, fit_s)
        if not math.isnan(value) and (best is None or value > best[0]):
            best = (value, point)
    if best is None:
        raise ValueError(f"tune {kind}: validation {metric} is NaN for every grid point (no held-out items?)")
    return dict(best[1]), table

"""A table of runs and their metrics, best first, optionally on one snapshot."""

from __future__ import annotations

import logging

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from recvae.tracking.datasets import TAG_SNAPSHOT_ID
from recvae.tracking.models import TAG_MODEL_KIND
from recvae.tracking.registry import ModelNotFoundError
from recvae.tracking.runs import metric_key
from recvae.tracking.store import configure_if_needed

logger = logging.getLogger(__name__)


def compare_runs(
    experiment: str, metric: str = "val_ndcg_at_100", max_results: int = 1000, snapshot: str | None = None
) -> pd.DataFrame:
    """One row per (non-deleted) run of `experiment` (only those on `snapshot` when given): name, kind, status,
    snapshot, latest metrics and params; best first.

    Runs are ranked by `model_<metric>`: the metric of the model a run logged, which for a trained run is its best
    epoch's (`best_<metric>`), not the last epoch's, and for a baseline or an ensemble its only value. A run's
    snapshot is the digest of its training dataset (its `snapshot_id` tag for runs logged before datasets were)."""
    configure_if_needed()
    exp = MlflowClient().get_experiment_by_name(experiment)
    if exp is None:
        raise ModelNotFoundError(f"no experiment {experiment!r} in {mlflow.get_tracking_uri()}")
    df = mlflow.search_runs(experiment_ids=[exp.experiment_id], max_results=max_results, output_format="pandas")
    if not df.empty:
        trained_on = _training_snapshots(exp.experiment_id, max_results)
        col = f"tags.{TAG_SNAPSHOT_ID}"
        tags = df[col] if col in df.columns else pd.Series(None, index=df.index)
        df[col] = df["run_id"].map(trained_on).fillna(tags)
        if snapshot is not None:
            df = df[df[f"tags.{TAG_SNAPSHOT_ID}"] == snapshot].dropna(axis=1, how="all")
    if df.empty:
        return pd.DataFrame(columns=["run_id", "run_name", "model_kind", "snapshot_id", "status", "start_time"])

    def tag(key: str) -> pd.Series:
        col = f"tags.{key}"
        return df[col] if col in df.columns else pd.Series([None] * len(df), index=df.index, dtype=object)

    out = pd.DataFrame(
        {
            "run_id": df["run_id"],
            "run_name": tag("mlflow.runName"),
            "model_kind": tag(TAG_MODEL_KIND),
            "snapshot_id": tag(TAG_SNAPSHOT_ID),
            "status": df["status"],
            "start_time": df["start_time"],
        }
    )
    metrics = df[[c for c in df.columns if c.startswith("metrics.")]].rename(columns=lambda c: c[len("metrics.") :])
    params = df[[c for c in df.columns if c.startswith("params.") and not c.startswith("params.snapshot.sha256.")]]
    params = params.rename(columns=lambda c: c[len("params.") :])
    out = pd.concat(
        [out, metrics.reindex(sorted(metrics.columns), axis=1), params.reindex(sorted(params.columns), axis=1)], axis=1
    )
    key = metric_key(metric)
    if key in out.columns or f"best_{key}" in out.columns:
        latest = out[key] if key in out.columns else pd.Series(np.nan, index=out.index)
        best = out[f"best_{key}"] if f"best_{key}" in out.columns else pd.Series(np.nan, index=out.index)
        out.insert(len(out.columns) - len(params.columns), f"model_{key}", best.fillna(latest))
        out = out.sort_values(f"model_{key}", ascending=False, na_position="last", kind="stable")
    else:
        logger.warning("no run of experiment %r has metric %r; sorted by start time", experiment, key)
        out = out.sort_values("start_time", ascending=False, kind="stable")
    return out.reset_index(drop=True)


def _training_snapshots(experiment_id: str, max_results: int) -> dict[str, str]:
    """run id -> digest (snapshot id) of the run's training input dataset."""
    out = {}
    for run in mlflow.search_runs(experiment_ids=[experiment_id], max_results=max_results, output_format="list"):
        for inp in run.inputs.dataset_inputs if run.inputs else ():
            if any(t.key == MLFLOW_DATASET_CONTEXT and t.value == "training" for t in inp.tags):
                out[run.info.run_id] = inp.dataset.digest
    return out

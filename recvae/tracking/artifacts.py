"""Files logged after the fact: an analysis of a model (e.g. its users' anomaly scores) into the model's own run,
or into a new run when the model did not come from one."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import mlflow

from recvae.tracking.runs import metric_key, start_run
from recvae.tracking.store import configure_if_needed

logger = logging.getLogger(__name__)


def log_analysis(files: list[str | Path], artifact_path: str, *, run_id: str | None, experiment: str = "recvae",
                 run_name: str = "analysis", metrics: Mapping[str, float] | None = None) -> str:
    """Log `files` (under `artifact_path`) and `metrics` to run `run_id` (finished runs accept them), or to a new
    run of `experiment` when `run_id` is None; returns the run id used."""
    configure_if_needed()
    values = {metric_key(k): float(v) for k, v in (metrics or {}).items()}
    if run_id is not None:
        client = mlflow.MlflowClient()
        for f in files:
            client.log_artifact(run_id, str(f), artifact_path)
        for k, v in values.items():
            client.log_metric(run_id, k, v)
        logger.info("logged %s to the model's run %s", ", ".join(Path(f).name for f in files), run_id)
        return run_id
    with start_run(experiment, run_name=run_name) as run:
        for f in files:
            mlflow.log_artifact(str(f), artifact_path)
        if values:
            mlflow.log_metrics(values)
        return str(run.info.run_id)

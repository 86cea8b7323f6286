"""The training steps on snapshots of each protocol: what a baseline is chosen on."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from recvae import pipeline
from recvae.data.split import choice_data
from recvae.pipeline.common import DEFAULT_BASELINE_GRIDS


def test_a_baseline_on_a_lightgcn_snapshot_is_chosen_on_carved_validation_users(lightgcn_snapshot: str) -> None:
    # the protocol has no validation users: without carving some, the grid's first point was kept untried
    run = pipeline.baseline_step("ease", lightgcn_snapshot, experiment="carved")
    table = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run.run_id,
                                                                 artifact_path="tuning.json")).read_text())["grid"]
    carved_users = choice_data(pipeline.load_snapshot(lightgcn_snapshot))[1][0].shape[0]
    assert len(table) == len(DEFAULT_BASELINE_GRIDS["ease"]["lam"])
    assert {row["n_users"] for row in table} == {carved_users}
    best = max(table, key=lambda row: row["ndcg@100"])
    params = MlflowClient().get_run(run.run_id).data.params
    assert float(params["lam"]) == best["lam"]
    assert run.val_ndcg_at_100 == pytest.approx(best["ndcg@100"])
    assert run.test_ndcg_at_100 is not None  # then fitted on the whole training matrix, scored once on test users

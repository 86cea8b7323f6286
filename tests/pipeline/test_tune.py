"""`recvae tune` end to end on small synthetic data: trials as MLflow child runs of the study's run, the study's
plots and summary, the best retrained as challenger (test users scored once, on it only), resume, pruning, and two
worker processes on one study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow import MlflowClient

from recvae import pipeline
from recvae.tracking.runs import TAG_PARENT, TAG_ROLE, TAG_STUDY
from recvae.tuning import StudyError

pytestmark = pytest.mark.slow

SPACE = {"train.epochs": 6, "train.patience": 3, "model.hidden_width": [16, 32], "model.latent_dim": [8, 16],
         "model.n_pseudo_inputs": [4, 8], "train.batch_size": [256]}


@pytest.fixture
def snap(mlflow_store) -> str:
    return pipeline.prepare_step(dataset="synthetic").snapshot_dir


def _runs(filter_string: str) -> list:
    exp = MlflowClient().get_experiment_by_name("recvae")
    return MlflowClient().search_runs([exp.experiment_id], filter_string=filter_string)


def test_tune_logs_trials_under_one_parent_and_retrains_the_best(snap: str) -> None:
    out = pipeline.tune_step(snap, trials=3, space=SPACE, study="s1")
    trials = _runs(f"tags.`{TAG_ROLE}` = 'trial'")
    assert len(trials) == 3 and {r.data.tags[TAG_PARENT] for r in trials} == {out.parent_run_id}
    assert all(not any(k.startswith("test_") for k in r.data.metrics) for r in trials)  # test users never seen
    values = [r.data.metrics["best_val_ndcg_at_100"] for r in trials]
    assert out.best_val_ndcg_at_100 == pytest.approx(max(values))
    parent = MlflowClient().get_run(out.parent_run_id)
    assert parent.data.tags[TAG_ROLE] == "tune" and parent.data.tags[TAG_STUDY] == "s1"
    artifacts = {a.path for a in MlflowClient().list_artifacts(out.parent_run_id, "study")}
    assert artifacts == {"study/summary.json", "study/optimization_history.png", "study/param_importances.png",
                         "study/space.json"}
    summary = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=out.parent_run_id, artifact_path="study/summary.json")).read_text())
    assert summary["complete"] == 3 and summary["best_trial"] == out.best_trial
    assert parent.data.metrics["study_complete"] == 3
    # the challenger: retrained from the best trial's settings, nested under the study, scored once on test users
    challenger = MlflowClient().get_run(out.challenger["run_id"])
    assert challenger.data.tags[TAG_PARENT] == out.parent_run_id
    assert "test_ndcg_at_100" in challenger.data.metrics
    assert challenger.data.metrics["best_val_ndcg_at_100"] == pytest.approx(out.best_val_ndcg_at_100, abs=1e-6)
    assert challenger.data.params["model.latent_dim"] == str(out.best_overrides["model.latent_dim"])
    version = MlflowClient().get_model_version_by_alias("recvae", "challenger").version
    assert str(version) == out.challenger["model_version"]
    # the runs table lists models: the study's run and its trials logged none (recvae tune shows them)
    from recvae import tracking

    assert list(tracking.compare_runs("recvae")["run_id"]) == [out.challenger["run_id"]]
    assert tracking.resolve_run(out.challenger["run_id"][:8]).info.run_id == out.challenger["run_id"]


def test_a_study_resumes_and_is_not_started_twice(snap: str) -> None:
    first = pipeline.tune_step(snap, trials=2, space=SPACE, study="s2", finish=False)
    assert first == {"study": "s2", "ran": 2, "trials": 2}
    with pytest.raises(StudyError, match="already exists .* with 2 trial"):
        pipeline.tune_step(snap, trials=3, space=SPACE, study="s2")
    out = pipeline.tune_step(snap, trials=3, study="s2", resume=True)  # the study's own space, recorded
    assert out.trials == 3 and out.complete + out.pruned == 3
    # the resumed sampler is seeded apart: it does not replay the first start's proposals
    dropouts = [float(r.data.params["model.dropout"]) for r in _runs(f"tags.`{TAG_ROLE}` = 'trial'")]
    assert len(set(dropouts)) == 3
    assert len(_runs(f"tags.`{TAG_ROLE}` = 'tune'")) == 1  # one parent run for the whole study
    assert len({r.data.tags[TAG_PARENT] for r in _runs(f"tags.`{TAG_ROLE}` = 'trial'")}) == 1
    # a study of another model kind under the same name is refused
    with pytest.raises(StudyError, match="kind 'vae', not 'dae'"):
        pipeline.tune_step(snap, kind="dae", trials=4, study="s2", resume=True)


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_a_pruned_trial_is_marked_in_its_run(snap: str) -> None:
    from recvae.tuning import Objective, load_space

    setup = pipeline.tune_setup_step(snap, study="s3", space=SPACE)
    objective = Objective(pipeline.load_snapshot(snap), load_space("vae", SPACE), "recvae", setup["parent_run_id"],
                          "s3")
    study = optuna.create_study(direction="maximize", pruner=_AlwaysPrune())
    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.PRUNED
    (run,) = _runs(f"tags.`{TAG_ROLE}` = 'trial'")
    assert run.info.status == "KILLED" and run.data.tags["recvae.trial_state"] == "PRUNED"
    assert "best_val_ndcg_at_100" in run.data.metrics  # it still sorts among the others


def test_two_worker_processes_share_one_study(snap: str, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    cmd = [sys.executable, "-m", "recvae.cli", "--log-level", "WARNING", "tune", "--snapshot", snap, "--study", "s4",
           "--space", str(space), "--trials", "4", "--resume", "--no-finish", "--name", "none"]
    procs = [subprocess.Popen([*cmd, "--worker", str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    from recvae.tuning import counted_trials, open_study, study_ref

    study = open_study(study_ref("s4"), resume=True, snapshot_id=pipeline.load_snapshot(snap).snapshot_id, kind="vae",
                       space=None, seed=0)
    assert 4 <= counted_trials(study) <= 5  # each worker stops once the study has 4 (one may be finishing its own)
    assert len(_runs(f"tags.`{TAG_ROLE}` = 'tune'")) == 1  # the lock let one worker make the parent run
    trials = _runs(f"tags.`{TAG_ROLE}` = 'trial'")
    assert len(trials) == len(study.trials) and len({r.data.tags[TAG_PARENT] for r in trials}) == 1
    # then one worker finishes the study: the best of both workers' trials becomes the challenger
    out = pipeline.tune_step(snap, trials=4, study="s4", resume=True)
    assert out.best_val_ndcg_at_100 == pytest.approx(study.best_value)


def test_a_killed_tune_resumes_and_ends_its_orphaned_trial_run(snap: str, tmp_path: Path) -> None:
    import signal
    import sqlite3
    import time

    from mlflow.entities import RunStatus

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    space = tmp_path / "space.json"
    space.write_text(json.dumps({**SPACE, "train.epochs": 200, "train.patience": 200}))  # slow: killed mid-trial
    cmd = [sys.executable, "-m", "recvae.cli", "--log-level", "WARNING", "tune", "--snapshot", snap, "--study", "s5",
           "--space", str(space), "--trials", "2", "--name", "none"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = Path(os.environ["RECVAE_HOME"]) / "optuna.db"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # until a trial is running (its MLflow run recorded)
        time.sleep(1)
        try:
            with sqlite3.connect(db) as conn:
                if conn.execute("select count(*) from trial_user_attributes where key = 'mlflow_run_id'").fetchone()[0]:
                    break
        except sqlite3.Error:
            continue
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (orphan,) = _runs(f"tags.`{TAG_ROLE}` = 'trial'")
    assert orphan.info.status == "RUNNING"
    # the killed trial's heartbeat is stale once its grace passes: pretend it has (no minute-long wait in a test)
    from recvae.tuning import study as study_module

    study_module.GRACE_S = 1
    try:
        time.sleep(2)
        out = pipeline.tune_step(snap, trials=2, study="s5", resume=True,
                                 space={**SPACE, "train.epochs": 4, "train.patience": 4})
    finally:
        study_module.GRACE_S = 60
    assert out.trials >= 2 and out.complete + out.pruned == 2
    assert MlflowClient().get_run(orphan.info.run_id).info.status == RunStatus.to_string(RunStatus.KILLED)
    assert out.failed >= 1  # the killed trial, failed by its missing heartbeat


def test_a_lightgcn_snapshot_is_tuned_on_carved_validation_users_and_its_test_users_scored_once(
        lightgcn_snapshot: str) -> None:
    snap = lightgcn_snapshot
    out = pipeline.tune_step(snap, trials=2, space={**SPACE, "train.beta_schedule": ["anneal_to_1"]}, study="s6")
    challenger = MlflowClient().get_run(out.challenger["run_id"])
    # retrained for the best trial's epochs, the last one kept: no epoch chosen on the test users
    assert challenger.data.params["train.epochs"] == str(summary_epoch(out))
    assert challenger.data.params["train.beta_schedule"] == "anneal"  # the paper's second run, to the best beta
    history = MlflowClient().get_metric_history(out.challenger["run_id"], "val_ndcg_at_100")
    assert not any(m.value == m.value for m in history)  # nothing evaluated per epoch (NaN or absent)
    assert "test_ndcg_at_100" in challenger.data.metrics


def summary_epoch(out: pipeline.TuneResult) -> int:
    summary = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=out.parent_run_id, artifact_path="study/summary.json")).read_text())
    return int(summary["best_epoch"])

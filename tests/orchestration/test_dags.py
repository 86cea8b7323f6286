"""End to end: dag.test() of recvae_retrain then recvae_score, on real ML-100K and on the synthetic data."""

from __future__ import annotations

import os

import pytest
from airflow_env import run_dag_test

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

# Small but real: a model trained this briefly still beats popularity on validation users.
FAST = {"train.epochs": 15, "train.batch_size": 100, "train.total_anneal_steps": 2000, "split.n_heldout_users": 100}


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


@pytest.fixture
def stack(tmp_path, monkeypatch):
    """A fresh pipeline home, MLflow store and recommendations DB (an Airflow Connection) for one scenario."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    db = f"sqlite:///{tmp_path / 'recs.db'}"
    monkeypatch.setenv("RECVAE_HOME", str(tmp_path / "home"))
    # The Airflow Variable wins over the environment inside tasks.
    monkeypatch.setenv("AIRFLOW_VAR_RECVAE_HOME", str(tmp_path / "airflow-home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("AIRFLOW_CONN_RECVAE_DB", db)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    yield {"db": db, "tracking_uri": uri, "home": tmp_path / "airflow-home"}
    mlflow.set_tracking_uri(previous)


def _current(db: str):
    from recvae.serving.store import RecommendationStore

    with RecommendationStore(db) as store:
        batch = store.current_batch()
        rows = store.count_rows(batch.batch_id) if batch else 0
    return batch, rows


def _rows_per_user(db: str) -> dict[str, int]:
    import sqlalchemy as sa

    engine = sa.create_engine(db)
    with engine.connect() as conn:
        res = conn.execute(sa.text("select user_id, count(*) from recvae_current_recommendations group by user_id"))
        out = {str(u): int(n) for u, n in res}
    engine.dispose()
    return out


def _champion(name: str = "recvae") -> str | None:
    from recvae import tracking

    return tracking.get_alias(name, "champion")


def test_retrain_then_score_on_movielens(airflow_db, data_home, stack):
    retrain = run_dag_test(_dag("recvae_retrain"), dataset="ml-100k", config=FAST, baselines=["popularity"])
    assert retrain.state == "success", retrain.task_states
    decision = retrain.xcom("promote")
    assert decision["promoted"], decision["reason"]
    assert retrain.states("announce_champion") == ["success"]
    anomalies = retrain.xcom("flag_anomalies")  # the new champion's users, scored after the promotion
    assert anomalies["status"] == "published" and anomalies["users"] == retrain.xcom("build_snapshot")["n_users"]
    assert anomalies["model_version"] == decision["version"]
    version = _champion()
    assert version == decision["version"]

    score = run_dag_test(_dag("recvae_score"), top_n=10, n_shards=2)
    assert score.state == "success", score.task_states
    assert score.states("score_shard") == ["success", "success"]
    per_user = _rows_per_user(stack["db"])
    snapshot = retrain.xcom("build_snapshot")
    assert snapshot["snapshot_dir"].startswith(str(stack["home"]))  # configured by the Airflow Variable
    assert len(per_user) == snapshot["n_users"]  # every user of the snapshot got a list
    assert set(per_user.values()) == {10}

    # A worse challenger (barely trained; a RecVAE this time, through the DAG's `model` param) is evaluated but
    # does not replace the champion.
    worse = {**FAST, "train.epochs": 1, "train.lr": 1e-6}
    again = run_dag_test(_dag("recvae_retrain"), dataset="ml-100k", model="recvae", config=worse,
                         baselines=["popularity"])
    assert again.state == "success", again.task_states
    rejected = again.xcom("promote")
    assert not rejected["promoted"]
    assert "kept the champion" in rejected["reason"]
    assert again.states("announce_champion") == ["skipped"]
    assert again.states("flag_anomalies") == ["skipped"]  # no new champion, nothing to score
    assert _champion() == version

    import mlflow

    assert again.xcom("train_challenger")["kind"] == "recvae"
    run = mlflow.get_run(again.xcom("train_challenger")["run_id"])
    assert run.data.tags["recvae.promotion"] == "rejected"
    assert run.data.params["model.kind"] == "recvae"


def test_failed_shard_keeps_published_batch_and_retry_completes(airflow_db, stack, monkeypatch):
    retrain = run_dag_test(_dag("recvae_retrain"), dataset="synthetic", config=FAST, baselines=[])
    assert retrain.state == "success", retrain.task_states
    first = run_dag_test(_dag("recvae_score"), top_n=5, n_shards=2)
    assert first.state == "success", first.task_states
    published, rows = _current(stack["db"])

    from recvae import pipeline

    real = pipeline.score_shard_step

    def broken(batch, shard, **kwargs):
        if shard == 1:
            raise RuntimeError("injected failure in shard 1")
        return real(batch, shard, **kwargs)

    monkeypatch.setattr(pipeline, "score_shard_step", broken)
    failed = run_dag_test(_dag("recvae_score"), top_n=5, n_shards=2, batch_key="weekly-2026-48")
    assert failed.state == "failed"
    assert failed.task_states[("score_shard", 0)] == "success"
    assert failed.task_states[("score_shard", 1)] == "failed"
    assert failed.states("publish") == ["upstream_failed"]
    batch, rows_after = _current(stack["db"])
    assert batch.batch_id == published.batch_id and rows_after == rows  # readers still see the old batch

    monkeypatch.setattr(pipeline, "score_shard_step", real)
    retried = run_dag_test(_dag("recvae_score"), top_n=5, n_shards=2, batch_key="weekly-2026-48")
    assert retried.state == "success", retried.task_states
    batch, rows_new = _current(stack["db"])
    assert batch.batch_id != published.batch_id
    assert batch.batch_key == "weekly-2026-48"
    per_user = _rows_per_user(stack["db"])
    assert set(per_user.values()) == {5} and rows_new == 5 * len(per_user)  # no duplicates from the re-run shard


def test_shard_count_follows_users_per_shard(airflow_db, stack):
    """Without `n_shards` the DAG maps one task per `users_per_shard` users, and together they score everyone."""
    retrain = run_dag_test(_dag("recvae_retrain"), dataset="synthetic", config=FAST, baselines=[])
    assert retrain.state == "success", retrain.task_states
    n_users = retrain.xcom("build_snapshot")["n_users"]
    per_shard = -(-n_users // 3)  # three shards, the last one smaller

    score = run_dag_test(_dag("recvae_score"), top_n=5, users_per_shard=per_shard)
    assert score.state == "success", score.task_states
    assert score.xcom("begin_batch")["n_shards"] == 3
    assert score.states("score_shard") == ["success"] * 3
    per_user = _rows_per_user(stack["db"])
    assert len(per_user) == n_users and set(per_user.values()) == {5}


def test_transient_shard_failure_is_retried_by_airflow(airflow_db, stack, monkeypatch):
    from datetime import timedelta

    retrain = run_dag_test(_dag("recvae_retrain"), dataset="synthetic", config=FAST, baselines=[])
    assert retrain.state == "success", retrain.task_states

    from recvae import pipeline

    real = pipeline.score_shard_step
    calls: list[int] = []

    def flaky(batch, shard, **kwargs):
        calls.append(shard)
        if shard == 1 and calls.count(1) == 1:
            raise ConnectionError("database went away")
        return real(batch, shard, **kwargs)

    monkeypatch.setattr(pipeline, "score_shard_step", flaky)
    dag = _dag("recvae_score")
    for t in dag.tasks:
        t.retry_delay = timedelta(seconds=0)
        t.retry_exponential_backoff = 0
        t.retries = 1
    result = run_dag_test(dag, keep_retries=True, top_n=5, n_shards=2)
    assert result.state == "success", result.task_states
    assert calls.count(1) == 2
    assert set(_rows_per_user(stack["db"]).values()) == {5}


def test_two_seeds_promote_their_ensemble_and_score_it(airflow_db, stack):
    """`seeds=2`: the challenger is trained twice in parallel, their ensemble competes, wins, and is scored."""
    import mlflow

    retrain = run_dag_test(_dag("recvae_retrain"), dataset="synthetic", config=FAST, baselines=[], seeds=2)
    assert retrain.state == "success", retrain.task_states
    first, other = retrain.xcom("train_challenger"), retrain.xcom("train_seed", map_index=0)
    seeds = {mlflow.get_run(r["run_id"]).data.params["train.seed"] for r in (first, other)}
    assert seeds == {"98765", "98766"}
    combined = retrain.xcom("combine_seeds")
    assert combined["kind"] == "ensemble"
    assert combined["model_version"] not in (first["model_version"], other["model_version"])
    decision = retrain.xcom("promote")
    assert decision["promoted"] and _champion() == combined["model_version"] == decision["version"]
    members = mlflow.artifacts.load_dict(f"runs:/{combined['run_id']}/members.json")["members"]
    assert [m["run_id"] for m in members] == [first["run_id"], other["run_id"]]

    score = run_dag_test(_dag("recvae_score"), top_n=5, n_shards=2)
    assert score.state == "success", score.task_states
    per_user = _rows_per_user(stack["db"])
    assert per_user and set(per_user.values()) == {5}


def test_tune_trials_make_the_challenger_the_best_of_a_study(airflow_db, stack):
    """`tune_trials=3, tune_workers=2`: two mapped workers run the study's trials; the best is retrained, competes
    and wins; every trial is a child run of the study's parent run."""
    import mlflow
    from mlflow import MlflowClient

    space = {"train.epochs": 5, "train.patience": 3, "model.hidden_width": [16, 32], "model.latent_dim": [8],
             "model.n_pseudo_inputs": [4], "train.batch_size": [128]}
    retrain = run_dag_test(_dag("recvae_retrain"), dataset="synthetic", config={"split.n_heldout_users": 100},
                           baselines=["popularity"], tune_trials=3, tune_workers=2, tune_space=space, seeds=2)
    assert retrain.state == "success", retrain.task_states
    ran = [retrain.xcom("tune_worker", map_index=i) for i in range(2)]
    assert sum(r["ran"] for r in ran) >= 3 and max(r["trials"] for r in ran) >= 3
    challenger = retrain.xcom("train_challenger")
    run = mlflow.get_run(challenger["run_id"])
    parent = run.data.tags["mlflow.parentRunId"]
    assert MlflowClient().get_run(parent).data.tags["recvae.role"] == "tune"
    trials = MlflowClient().search_runs([run.info.experiment_id], filter_string="tags.`recvae.role` = 'trial'")
    assert len(trials) >= 3 and {t.data.tags["mlflow.parentRunId"] for t in trials} == {parent}
    assert run.data.params["model.latent_dim"] == "8"  # the space's, not the preset's 200
    assert retrain.xcom("combine_seeds")["run_id"] == challenger["run_id"]  # seeds are not trained after a tune
    assert retrain.xcom("promote")["promoted"]


# ------------------------------------------------------------------------------------------ failures


def _tries(run_id: str) -> dict[str, int]:
    """Each task instance's try number in a run (a retried one is above 1)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(select(TaskInstance).where(TaskInstance.run_id == run_id))
        return {ti.task_id: ti.try_number for ti in tis}


def test_a_user_error_fails_its_task_at_once(airflow_db, stack, caplog):
    """A misspelt config key cannot succeed on a retry: the task fails on its first try, not after 30 s + 60 s."""
    import logging
    import time

    caplog.set_level(logging.INFO)
    started = time.monotonic()
    result = run_dag_test(_dag("recvae_retrain"), keep_retries=True, config={"train.epoch": 1}, baselines=[])
    elapsed = time.monotonic() - started
    assert result.state == "failed"
    assert result.states("build_snapshot") == ["failed"] and result.states("extra_seeds") == ["failed"]
    assert result.states("train_challenger") == ["upstream_failed"]
    tries = _tries(result.run_id)
    assert tries["build_snapshot"] == 1 and tries["extra_seeds"] == 1  # never up_for_retry
    assert elapsed < 25, f"{elapsed:.0f} s: the failing tasks waited for retries"
    assert (f"recvae: task recvae_retrain.build_snapshot failed in run {result.run_id} (try 1, not retried): "
            "ConfigError: override 'train.epoch': no field 'epoch' in section train; "
            "did you mean train.epochs?") in caplog.text


def test_a_failure_is_summarised_in_the_log_and_mailed(airflow_db, stack, monkeypatch, caplog):
    import logging

    from smtpserver import SmtpServer

    from recvae import pipeline

    def broken(**kwargs):
        raise RuntimeError("injected failure reading postgresql://reader:hunter2@db.example/interactions\nline two")

    monkeypatch.setattr(pipeline, "prepare_step", broken)
    caplog.set_level(logging.INFO)
    with SmtpServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_RECVAE_SMTP", server.connection_json())
        result = run_dag_test(_dag("recvae_retrain"), baselines=[], notify_conn_id="recvae_smtp",
                              notify_to="ops@example.com")
    assert result.state == "failed" and result.states("build_snapshot") == ["failed"]
    task_line = (f"recvae: task recvae_retrain.build_snapshot failed in run {result.run_id} (try 1 of 1): "
                 "RuntimeError: injected failure reading postgresql://reader:***@db.example/interactions line two")
    assert task_line in caplog.text
    run_line = f"recvae: run {result.run_id} of recvae_retrain failed (task_failure); last failed task build_snapshot"
    assert run_line in caplog.text
    assert "hunter2" not in caplog.text
    texts = server.texts()
    assert any(task_line in t for t in texts) and any(run_line in t for t in texts)
    assert all("hunter2" not in t for t in texts)


# ------------------------------------------------------------------------------------------ champion events


def _champion_events() -> list:
    """The champion asset's events in the metadata DB, oldest first (detached)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = list(session.scalars(
            select(AssetEvent).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == "recvae_champion").order_by(AssetEvent.id)))
        for e in events:
            session.expunge(e)
    return events


def _triggered_by(monkeypatch, event_id: int) -> None:
    """Make the next dag.test() run consume AssetEvent `event_id`, as the scheduler does for an asset-triggered run
    (dag.test imports get_or_create_dagrun from airflow.models.dagrun when it is called)."""
    from airflow.models import dagrun as dagrun_module
    from airflow.models.asset import AssetEvent

    real = dagrun_module.get_or_create_dagrun

    def with_event(**kwargs):
        dr = real(**kwargs)
        session = kwargs["session"]
        dr.consumed_asset_events.append(session.get(AssetEvent, event_id))
        session.commit()
        return dr

    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", with_event)


def test_each_scoring_run_scores_the_version_its_promotion_announced(airflow_db, stack, monkeypatch, capfd):
    worse = {**FAST, "train.epochs": 1, "train.lr": 1e-6}
    first = run_dag_test(_dag("recvae_retrain"), dataset="synthetic", config=worse, baselines=[])
    second = run_dag_test(_dag("recvae_retrain"), dataset="synthetic", config=FAST, baselines=[])
    assert first.state == second.state == "success", (first.task_states, second.task_states)
    v1, v2 = first.xcom("promote")["version"], second.xcom("promote")["version"]
    assert second.xcom("promote")["promoted"] and _champion() == v2 != v1

    events = [e for e in _champion_events() if e.source_run_id in (first.run_id, second.run_id)]
    assert [e.source_run_id for e in events] == [first.run_id, second.run_id]
    snapshot = first.xcom("build_snapshot")
    for event, version, run in zip(events, (v1, v2), (first, second), strict=True):
        assert event.extra == {"model_name": "recvae", "version": version, "model_uri": f"models:/recvae/{version}",
                               "run_id": run.xcom("promote")["run_id"], "snapshot_id": snapshot["snapshot_id"],
                               "snapshot_dir": snapshot["snapshot_dir"],
                               "val_ndcg@100": run.xcom("promote")["val_ndcg@100"]}
        assert event.extra == run.xcom("announce_champion")

    # the alias now points at v2, yet the run of v1's event scores v1, and the run of v2's event v2
    for event, version in zip(events, (v1, v2), strict=True):
        with monkeypatch.context() as patch:
            _triggered_by(patch, event.id)
            score = run_dag_test(_dag("recvae_score"), top_n=5, n_shards=1)
        assert score.state == "success", score.task_states
        batch = score.xcom("begin_batch")
        assert batch["model_uri"] == f"models:/recvae/{version}" and batch["model_version"] == version
        assert batch["promotion"]["source_run_id"] == event.source_run_id
        published, _ = _current(stack["db"])
        assert published.model_version == version
    assert _champion() == v2
    # MLflow's "Created version '2' of model 'recvae'." went to the task log at INFO, not to stderr (which Airflow
    # logs as errors)
    err = capfd.readouterr().err
    assert "Created version '" not in err

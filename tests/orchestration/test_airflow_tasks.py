"""The task-side helpers of the DAGs (recvae.orchestration.tasks), without running a DAG: the task wrapper, failure
summaries and notices, the champion asset event and which model a scoring run scores."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from smtpserver import SmtpServer

from recvae.config import ConfigError
from recvae.orchestration import tasks as airflow_tasks
from recvae.orchestration.dag_defaults import CHAMPION

SECRET_URL = "postgresql://recvae:s3cret-pw@db.example:5432/recs"


@pytest.fixture
def mlflow_loggers():
    """MLflow's loggers as `import mlflow` leaves them (its own stderr handler, no propagation), restored after."""
    import mlflow  # noqa: F401  (configures its loggers on import)
    from mlflow.utils import logging_utils

    from recvae.tracking import MLFLOW_LOGGERS

    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate, logging.getLogger(n).level)
             for n in MLFLOW_LOGGERS}
    stream = logging_utils.MLFLOW_LOGGING_STREAM
    logging_utils.MLFLOW_LOGGING_STREAM = logging_utils.MlflowLoggingStream()
    logging_utils._configure_mlflow_loggers("mlflow")
    yield
    logging_utils.MLFLOW_LOGGING_STREAM = stream
    for name, (handlers, propagate, level) in saved.items():
        log = logging.getLogger(name)
        log.handlers[:] = handlers
        log.propagate = propagate
        log.setLevel(level)


@pytest.fixture
def tracking_store(tmp_path, monkeypatch, restore_tracking_uri):
    """A fresh MLflow SQLite store and recvae home for tasks that configure tracking; the URI restored after."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("RECVAE_HOME", str(tmp_path / "home"))
    return tmp_path


# ------------------------------------------------------------------------------------------ the task wrapper


def test_a_user_error_fails_the_task_at_once_with_one_masked_line():
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException) as info:
        with airflow_tasks.recvae_task(tracking=False):
            raise ConfigError(f"unknown config key 'train.epoch' (did you mean train.epochs?)\n  at {SECRET_URL}")
    message = str(info.value)
    assert "\n" not in message and "s3cret-pw" not in message
    assert message.startswith("ConfigError: unknown config key 'train.epoch'") and "recvae:***@db.example" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no traceback chain of the user's error


@pytest.mark.parametrize("fault", [ConnectionError("database went away"), RuntimeError("a bug")])
def test_other_errors_keep_their_retries(fault):
    with pytest.raises(type(fault)) as info:
        with airflow_tasks.recvae_task(tracking=False):
            raise fault
    assert info.value is fault


def test_the_wrapper_applies_the_airflow_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("RECVAE_HOME", str(tmp_path / "env-home"))
    monkeypatch.setenv("AIRFLOW_VAR_RECVAE_HOME", str(tmp_path / "variable-home"))
    with airflow_tasks.recvae_task(tracking=False):
        assert os.environ["RECVAE_HOME"] == str(tmp_path / "variable-home")


class _Collect(logging.Handler):
    """A root handler standing for the task log's (pytest's caplog also listens on non-propagating loggers)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_mlflow_info_reaches_the_task_log_at_info_not_stderr(mlflow_loggers, tracking_store, capsys):
    from mlflow.utils.logging_utils import eprint  # how MLflow prints "Created version '1' of model ..."

    task_log = _Collect()
    root = logging.getLogger()
    root.addHandler(task_log)
    store_log = logging.getLogger("mlflow.store.db.utils")
    try:
        eprint("Created version '1' of model 'before'.")  # to stderr, which Airflow logs as errors
        store_log.info("Creating initial MLflow database tables (before)")  # MLflow's own handler: stderr too
        err = capsys.readouterr().err
        assert "Created version '1' of model 'before'" in err and "tables (before)" in err
        assert not task_log.records

        with airflow_tasks.recvae_task():
            eprint("Created version '2' of model 'recvae'.")
            store_log.info("Creating initial MLflow database tables (inside)")
        assert capsys.readouterr().err == ""
        records = {r.getMessage(): r for r in task_log.records}
        for message in ("Created version '2' of model 'recvae'.", "Creating initial MLflow database tables (inside)"):
            assert records[message].levelno == logging.INFO and records[message].name.startswith("mlflow")
        logging.getLogger("mlflow").debug("below MLflow's level")  # MLFLOW_LOGGING_LEVEL (INFO) still applies
        assert "below MLflow's level" not in [r.getMessage() for r in task_log.records]
    finally:
        root.removeHandler(task_log)


# ------------------------------------------------------------------------------------------ failure reports


def _ti(**kw):
    base = dict(dag_id="recvae_retrain", task_id="build_snapshot", run_id="manual__1", map_index=-1, try_number=1,
                max_tries=2)
    return SimpleNamespace(**{**base, **kw})


def test_task_failure_line_names_dag_task_run_try_and_the_masked_error():
    context = {"ti": _ti(task_id="score_shard", map_index=3, try_number=3), "run_id": "manual__1",
               "exception": ConnectionError(f"cannot reach\n{SECRET_URL}")}
    line = airflow_tasks.task_failure_line(context)
    assert line == ("recvae: task recvae_retrain.score_shard[3] failed in run manual__1 (try 3 of 3): "
                    "ConnectionError: cannot reach postgresql://recvae:***@db.example:5432/recs")


def test_task_failure_line_of_a_user_error_is_its_own_line():
    from airflow.sdk.exceptions import AirflowFailException

    context = {"ti": _ti(), "run_id": "manual__1", "exception": AirflowFailException("ConfigError: bad key")}
    assert airflow_tasks.task_failure_line(context).endswith("(try 1, not retried): ConfigError: bad key")


def test_dag_failure_and_deadline_lines():
    dag = SimpleNamespace(dag_id="recvae_score")
    line = airflow_tasks.dag_failure_line({"dag": dag, "run_id": "r1", "reason": "task_failure",
                                           "ti": _ti(dag_id="recvae_score", task_id="publish", try_number=4)})
    assert line == "recvae: run r1 of recvae_score failed (task_failure); last failed task publish (try 4)"
    assert airflow_tasks.dag_failure_line({"dag": dag, "run_id": "r2"}) == "recvae: run r2 of recvae_score failed"
    deadline = airflow_tasks.deadline_line(
        {"dag_run": {"dag_id": "recvae_retrain", "dag_run_id": "scheduled__1", "queued_at": "2026-01-05T00:00:00Z",
                     "state": "running"}, "deadline": {"deadline_time": "2026-01-05T12:00:00Z"}})
    assert deadline == ("recvae: run scheduled__1 of recvae_retrain missed its deadline 2026-01-05T12:00:00Z "
                        "(queued at 2026-01-05T00:00:00Z, state running)")


def test_report_logs_the_line_and_mails_it_through_the_configured_connection(monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    context = {"ti": _ti(), "run_id": "manual__1", "exception": ValueError("boom {{ not a template }}"),
               "params": {"notify_conn_id": "recvae_smtp", "notify_to": "ops@example.com, ml@example.com"}}
    with SmtpServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_RECVAE_SMTP", server.connection_json())
        line = airflow_tasks.report_task_failure(context)
    assert line in [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    [mail] = server.messages
    assert set(mail["To"].split(", ")) == {"ops@example.com", "ml@example.com"}
    assert line in server.texts()[0]  # subject and body, the braces left as they are


def test_notice_settings_fall_back_to_variables_and_are_optional(monkeypatch, caplog):
    assert airflow_tasks.notify_settings({"params": {}}) == (None, [])
    assert airflow_tasks.notify({"params": {}}, "a line") is False  # nothing configured: the log line is enough
    monkeypatch.setenv("AIRFLOW_VAR_RECVAE_NOTIFY_CONN_ID", "recvae_smtp")
    assert airflow_tasks.notify({"params": {}}, "a line") is False
    assert "no recipients" in caplog.text
    monkeypatch.setenv("AIRFLOW_VAR_RECVAE_NOTIFY_TO", "a@example.com;b@example.com")
    assert airflow_tasks.notify_settings({"params": {}}) == ("recvae_smtp", ["a@example.com", "b@example.com"])
    # a deadline callback has the run's conf, not its params
    run = {"conf": {"notify_conn_id": "other", "notify_to": "c@example.com"}}
    assert airflow_tasks.notify_settings({"dag_run": run}) == ("other", ["c@example.com"])


def test_a_notice_that_cannot_be_sent_is_a_warning_not_an_error(monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW_CONN_RECVAE_SMTP", '{"conn_type": "smtp", "host": "127.0.0.1", "port": 9, '
                                                   '"extra": {"disable_ssl": true, "disable_tls": true, '
                                                   '"from_email": "a@example.com", "timeout": 2, "retry_limit": 0}}')
    context = {"ti": _ti(), "run_id": "r", "exception": ValueError("x"),
               "params": {"notify_conn_id": "recvae_smtp", "notify_to": "ops@example.com"}}
    airflow_tasks.report_task_failure(context)  # does not raise
    assert "could not send the failure notice" in caplog.text


# ------------------------------------------------------------------------------------------ champion event


def _event(version: str, minutes: int, **extra):
    extra = {"model_uri": f"models:/recvae/{version}", "version": version, "snapshot_dir": f"/snaps/{version}",
             **extra}
    when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return SimpleNamespace(extra=extra, timestamp=when, source_dag_id="recvae_retrain", source_run_id=f"run-{version}")


def test_the_champion_event_names_the_promoted_version():
    decision = {"promoted": True, "version": "7", "model_name": "recvae", "run_id": "abc", "val_ndcg@100": 0.41,
                "model_uri": "models:/recvae@champion"}
    snapshot = {"snapshot_id": "s1", "snapshot_dir": "/home/snapshots/s1", "n_users": 10}
    outlet = SimpleNamespace(extra={})
    extra = airflow_tasks.announce_champion({"outlet_events": {CHAMPION: outlet}}, CHAMPION, decision, snapshot)
    assert outlet.extra == extra == {"model_name": "recvae", "version": "7", "model_uri": "models:/recvae/7",
                                     "run_id": "abc", "snapshot_id": "s1", "snapshot_dir": "/home/snapshots/s1",
                                     "val_ndcg@100": 0.41}


def test_a_triggered_scoring_run_scores_the_version_its_event_names(caplog):
    params = {"model_uri": "models:/recvae@champion", "snapshot_dir": None}
    target = airflow_tasks.score_target({"params": params, "triggering_asset_events": {CHAMPION: [_event("3", 0)]}},
                                        CHAMPION)
    assert target["model_uri"] == "models:/recvae/3" and target["snapshot_dir"] == "/snaps/3"
    assert target["event"]["source_run_id"] == "run-3"
    # several promotions queued before the run: the latest wins, and the log says so
    both = {CHAMPION: [_event("4", 5), _event("3", 0)]}
    assert airflow_tasks.score_target({"params": params, "triggering_asset_events": both}, CHAMPION)["event"][
        "version"] == "4"
    assert "2 promotions triggered this run" in caplog.text
    # an explicit snapshot_dir param wins over the event's
    chosen = airflow_tasks.score_target({"params": {**params, "snapshot_dir": "/mine"},
                                         "triggering_asset_events": both}, CHAMPION)
    assert chosen["snapshot_dir"] == "/mine" and chosen["model_uri"] == "models:/recvae/4"


def test_a_manual_run_or_an_event_without_a_version_scores_the_param():
    params = {"model_uri": "models:/recvae/1", "snapshot_dir": "/s"}
    manual = airflow_tasks.score_target({"params": params, "triggering_asset_events": {}}, CHAMPION)
    assert manual == {"model_uri": "models:/recvae/1", "snapshot_dir": "/s", "event": None}
    bare = SimpleNamespace(extra={}, timestamp=datetime.now(UTC), source_dag_id=None, source_run_id=None)
    old = airflow_tasks.score_target({"params": params, "triggering_asset_events": {CHAMPION: [bare]}}, CHAMPION)
    assert old["model_uri"] == "models:/recvae/1" and old["event"] is None

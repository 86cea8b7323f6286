"""What both DAGs share (recvae.orchestration.dag_defaults): task timeouts, the retrain schedule and deadline, and the
deadline callback, called directly."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from smtpserver import SmtpServer

from recvae.orchestration import dag_defaults as airflow_common
from recvae.orchestration.dag_defaults import TaskTimeouts, parse_duration


def test_timeouts_have_a_default_per_task_kind():
    t = TaskTimeouts.from_env({})
    assert t.train == timedelta(hours=6) and t.score_shard == timedelta(hours=2)
    assert all(isinstance(v, timedelta) and v > timedelta(0) for v in vars(t).values())


def test_timeouts_are_overridden_by_the_environment():
    t = TaskTimeouts.from_env({"RECVAE_TASK_TIMEOUTS": "train=8h, score_shard=45m,publish=90"})
    assert (t.train, t.score_shard, t.publish) == (timedelta(hours=8), timedelta(minutes=45), timedelta(seconds=90))
    assert t.prepare == TaskTimeouts().prepare  # the others keep their defaults


@pytest.mark.parametrize("value, message", [
    ("training=8h", "'training=8h' is not KIND=DURATION"),
    ("train", "'train' is not KIND=DURATION"),
    ("train=8 hours", "$RECVAE_TASK_TIMEOUTS train: '8 hours' is not a positive duration"),
    ("train=0s", "is not a positive duration"),
])
def test_a_bad_timeout_setting_names_the_variable(value, message):
    with pytest.raises(ValueError, match="RECVAE_TASK_TIMEOUTS") as info:
        TaskTimeouts.from_env({"RECVAE_TASK_TIMEOUTS": value})
    assert message in str(info.value)


def test_durations():
    assert parse_duration("1d", "x") == timedelta(days=1)
    assert parse_duration(" 2.5H ", "x") == timedelta(hours=2.5)
    with pytest.raises(ValueError, match="^what: '-1m' is not"):
        parse_duration("-1m", "what")


def test_retrain_schedule_is_weekly_unless_configured():
    assert airflow_common.retrain_schedule({}) == "@weekly"
    assert airflow_common.retrain_schedule({"RECVAE_RETRAIN_SCHEDULE": "0 3 * * 1"}) == "0 3 * * 1"
    assert airflow_common.retrain_schedule({"RECVAE_RETRAIN_SCHEDULE": "none"}) is None


def test_retrain_deadline_counts_from_queueing_and_calls_a_top_level_async_function():
    from airflow.sdk import AsyncCallback, DeadlineReference

    alert = airflow_common.retrain_deadline({})
    assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert alert.interval == timedelta(hours=12)
    assert isinstance(alert.callback, AsyncCallback)
    assert alert.callback.path == "recvae.orchestration.dag_defaults.deadline_missed"
    assert airflow_common.retrain_deadline({"RECVAE_RETRAIN_DEADLINE": "3h"}).interval == timedelta(hours=3)
    assert airflow_common.retrain_deadline({"RECVAE_RETRAIN_DEADLINE": "none"}) is None
    with pytest.raises(ValueError, match="RECVAE_RETRAIN_DEADLINE: 'soon' is not a positive duration"):
        airflow_common.retrain_deadline({"RECVAE_RETRAIN_DEADLINE": "soon"})


def test_the_deadline_callback_logs_and_mails_a_summary(monkeypatch, caplog):
    """What the triggerer does when the deadline passes: await the callback with the run as the REST API shows it."""
    context = {"dag_run": {"dag_id": "recvae_retrain", "dag_run_id": "scheduled__2026-01-05", "state": "running",
                           "queued_at": "2026-01-05T00:00:01Z", "conf": {}},
               "deadline": {"id": "d1", "deadline_time": "2026-01-05T12:00:01Z"}}
    with SmtpServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_OPS_SMTP", server.connection_json())
        monkeypatch.setenv("AIRFLOW_VAR_RECVAE_NOTIFY_CONN_ID", "ops_smtp")
        monkeypatch.setenv("AIRFLOW_VAR_RECVAE_NOTIFY_TO", "ops@example.com")
        with caplog.at_level(logging.INFO):
            line = asyncio.run(airflow_common.deadline_missed(context=context))
    assert line == ("recvae: run scheduled__2026-01-05 of recvae_retrain missed its deadline 2026-01-05T12:00:01Z "
                    "(queued at 2026-01-05T00:00:01Z, state running)")
    assert line in caplog.text
    [text] = server.texts()
    assert line in text

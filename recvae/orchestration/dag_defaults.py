"""What both DAGs share: the assets that link them, the task defaults, the timeouts, the failure callbacks and the
retrain deadline. Light on purpose (imported at parse time): the callbacks import `recvae.orchestration.tasks` only when
they run.

Settings read when the DAG files are parsed (set them for every Airflow component: the DAG processor builds the
DAGs with them, and a worker parses the file again before it runs a task):

- `RECVAE_TASK_TIMEOUTS`: per-kind task timeouts overriding `TaskTimeouts`, e.g. `train=8h,score_shard=45m`;
- `RECVAE_RETRAIN_DEADLINE`: how long after being queued a `recvae_retrain` run may take before the deadline
  callback reports it (default 12h; `none` for no deadline);
- `RECVAE_RETRAIN_SCHEDULE`: the retrain schedule (default `@weekly`; `none` for manual runs only).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pendulum

# airflow.sdk exports AsyncCallback, DeadlineAlert and DeadlineReference, but its __init__.pyi does not list them
from airflow.sdk import (  # type: ignore[attr-defined]
    Asset,
    AsyncCallback,
    DeadlineAlert,
    DeadlineReference,
    Param,
)

from recvae.config import ConfigError, split_assignment

SNAPSHOT = Asset("recvae_snapshot", uri="file:///recvae/snapshot")
CHAMPION = Asset("recvae_champion", uri="file:///recvae/champion")  # updated on each promotion; schedules scoring
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")

TIMEOUTS_ENV = "RECVAE_TASK_TIMEOUTS"
DEADLINE_ENV = "RECVAE_RETRAIN_DEADLINE"
SCHEDULE_ENV = "RECVAE_RETRAIN_SCHEDULE"
DEFAULT_DEADLINE = timedelta(hours=12)
DEFAULT_SCHEDULE = "@weekly"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class TaskTimeouts:
    """Each task kind's `execution_timeout`: a task running longer is stopped and retried (a hung database or
    tracking server must not hold a worker slot forever). Generous for the full ML-20M on one GPU."""

    prepare: timedelta = timedelta(hours=1)  # ingest, validate and split (ML-20M: minutes)
    train: timedelta = timedelta(hours=6)  # one challenger or seed run, and the ensemble
    baseline: timedelta = timedelta(hours=2)  # a baseline with its hyperparameter grid (EASE on 20k items)
    promote: timedelta = timedelta(minutes=30)  # re-evaluates the champion on the validation users
    begin_score: timedelta = timedelta(minutes=30)  # loads the model and opens the staging batch
    score_shard: timedelta = timedelta(hours=2)  # one shard of users into staging
    publish: timedelta = timedelta(minutes=30)  # one transaction
    bookkeeping: timedelta = timedelta(minutes=10)  # the small tasks: seeds, kinds, shards, short-circuit, announce

    @classmethod
    def from_env(cls, environ: Any = os.environ) -> TaskTimeouts:
        """The defaults, overridden by $RECVAE_TASK_TIMEOUTS (`kind=duration,...`; durations like 90s, 30m, 6h, 1d)."""
        text = (environ.get(TIMEOUTS_ENV) or "").strip()
        if not text:
            return cls()
        kinds = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, timedelta] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            try:
                kind, value = split_assignment(item)
            except ConfigError:
                kind, value = "", ""
            if kind not in kinds:
                raise ValueError(f"${TIMEOUTS_ENV}: {item!r} is not KIND=DURATION with KIND one of {', '.join(kinds)}")
            values[kind] = parse_duration(value, f"${TIMEOUTS_ENV} {kind}")
        return cls(**values)


def parse_duration(text: str, what: str) -> timedelta:
    """A positive duration from '90', '90s', '30m', '6h' or '1d'; ValueError naming `what` otherwise."""
    m = _DURATION.match(str(text))
    seconds = float(m[1]) * _UNITS[m[2].lower()] if m else 0.0
    if seconds <= 0:
        raise ValueError(f"{what}: {text!r} is not a positive duration such as 90s, 30m, 6h or 1d")
    return timedelta(seconds=seconds)


def retrain_schedule(environ: Any = os.environ) -> str | None:
    """$RECVAE_RETRAIN_SCHEDULE (a cron expression or preset), None for 'none' (manual runs only), else @weekly."""
    value = (environ.get(SCHEDULE_ENV) or DEFAULT_SCHEDULE).strip()
    return None if value.lower() in ("none", "manual", "off") else value


def notify_params() -> dict[str, Param]:
    """The DAG params that say where failure notices go (unset: the Airflow Variables of the same purpose)."""
    return {
        "notify_conn_id": Param(None, type=["null", "string"],
                                description="SMTP Connection for failure notices (else the Variable "
                                            "recvae_notify_conn_id)"),
        "notify_to": Param(None, type=["null", "string"],
                           description="comma-separated recipients of failure notices (else the Variable "
                                       "recvae_notify_to)"),
    }


def task_failed(context: Any) -> None:
    """Task `on_failure_callback`: log a one-line summary and send it through the configured notifier."""
    from recvae.orchestration import tasks as airflow_tasks

    airflow_tasks.report_task_failure(context)


def dag_failed(context: Any) -> None:
    """DAG `on_failure_callback`: log a one-line summary of the failed run and send it through the notifier."""
    from recvae.orchestration import tasks as airflow_tasks

    airflow_tasks.report_dag_failure(context)


async def deadline_missed(context: dict[str, Any] | None = None, **kwargs: Any) -> str:
    """Deadline callback (run by the triggerer): log a one-line summary and send it through the notifier."""
    import asyncio

    from recvae.orchestration import tasks as airflow_tasks

    # Connection and Variable look-ups and SMTP block: off the triggerer's event loop
    return await asyncio.to_thread(airflow_tasks.report_deadline_missed, context or {})


def retrain_deadline(environ: Any = os.environ) -> DeadlineAlert | None:
    """`recvae_retrain`'s deadline: $RECVAE_RETRAIN_DEADLINE (default 12h) after the run was queued; 'none' for no
    deadline (Airflow 3.3.2's `airflow dags test` fails at the end of a successful run of a DAG with one)."""
    value = (environ.get(DEADLINE_ENV) or "").strip()
    if value.lower() in ("none", "off"):
        return None
    interval = parse_duration(value, f"${DEADLINE_ENV}") if value else DEFAULT_DEADLINE
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        callback=AsyncCallback(deadline_missed),
        name="recvae_retrain_deadline",
    )


TIMEOUTS = TaskTimeouts.from_env()
DEFAULT_ARGS = {
    "owner": "recvae",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,  # 30 s, 60 s, ...: database and MLflow hiccups pass (user errors fail at once)
    "execution_timeout": TIMEOUTS.bookkeeping,  # each heavier task sets its own kind's
    "on_failure_callback": task_failed,
}

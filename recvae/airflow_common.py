"""What both DAGs share: the assets that link them and the task defaults. Light on purpose (imported at parse time)."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset

SNAPSHOT = Asset("recvae_snapshot", uri="file:///recvae/snapshot")
CHAMPION = Asset("recvae_champion", uri="file:///recvae/champion")  # updated on each promotion; schedules scoring
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
DEFAULT_ARGS = {
    "owner": "recvae",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,  # 30 s, 60 s, ...: database and MLflow hiccups pass
}

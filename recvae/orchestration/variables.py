"""Inside Airflow tasks: Variables that override the environment, and the recommendations database from a Connection."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from recvae import paths

logger = logging.getLogger(__name__)

AIRFLOW_VARIABLES = {"recvae_home": paths.HOME_ENV, "recvae_mlflow_tracking_uri": paths.TRACKING_URI_ENV}


def use_airflow_variables(*, configure_tracking: bool = True) -> dict[str, str]:
    """Inside an Airflow task: Variables `recvae_home` and `recvae_mlflow_tracking_uri`, when set, override the
    environment for this task (unset Variables leave the environment's or the embedded defaults). Then URL
    passwords are masked in the task's log and, with `configure_tracking`, MLflow's log records go to the task log
    at their own level and MLflow is pointed at its store, creating a new SQLite store once under a file lock: the
    retrain DAG's first task does it before the parallel training tasks start."""
    from airflow.sdk import Variable

    from recvae.log import install_secret_masking

    install_secret_masking()
    applied = {}
    for name, env in AIRFLOW_VARIABLES.items():
        value = Variable.get(name, default=None)
        if value:
            os.environ[env] = str(value)
            applied[env] = str(value)
    if configure_tracking:
        from recvae import tracking

        tracking.route_mlflow_logs()
        tracking.configure()
    return applied


def db_url_from_connection(conn_id: str | None = "recvae_db",
                           fallback: Callable[[], str] = paths.default_db_url) -> str:
    """A database URL from an Airflow Connection, else `fallback()`: for the recommendations DB $RECVAE_DB_URL, else
    SQLite under the local home (a tune's study storage: paths.default_tuning_storage)."""
    if conn_id:
        try:
            from airflow.sdk import Connection

            conn = Connection.get(conn_id)
            url = conn.get_uri()
            if url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url[len("postgres://"):]
            return url
        except Exception as exc:  # no Airflow context or no such connection: fall back to the embedded default
            logger.info("connection %r not available (%s); using the default database", conn_id, type(exc).__name__)
    return fallback()

"""Shared fixtures. AIRFLOW_HOME and MLflow defaults point into a temporary folder before anything imports them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="recvae-tests-"))
os.environ.setdefault("AIRFLOW_HOME", str(_SESSION_TMP / "airflow"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("RECVAE_HOME", str(_SESSION_TMP / "recvae-home"))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_SESSION_TMP / 'mlflow.db'}")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["pgserver", "airflow_env"]  # throwaway PostgreSQL; Airflow metadata DB + run_dag_test


@pytest.fixture(scope="session")
def data_home() -> Path:
    """The real datasets folder (RECVAE_DATA_HOME); tests that need it are skipped when it is not set."""
    value = os.environ.get("RECVAE_DATA_HOME")
    if not value:
        pytest.skip("RECVAE_DATA_HOME is not set (the shared data folder)")
    if not Path(value).is_dir():
        pytest.skip(f"RECVAE_DATA_HOME={value} is not a folder (the shared data folder)")
    return Path(value)


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def restore_logging():
    """Root handlers as they were: a command's handler bound to one test's captured stream must not outlive it."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite database (creating the schema takes seconds; copying it does not)."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def restore_tracking_uri():
    """Leave MLflow's process-wide tracking URI (and active run) as they were, so later tests use their own store."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    previous = tracking_utils._tracking_uri
    yield
    if mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)  # (None also clears MLFLOW_TRACKING_URI; monkeypatch then restores it)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch, empty_mlflow_db, restore_tracking_uri) -> str:
    """A fresh SQLite tracking store (a copy of the migrated empty one) and recvae home, configured; its URI."""
    import shutil

    from recvae import tracking

    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(empty_mlflow_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("RECVAE_HOME", str(tmp_path / "home"))
    assert tracking.configure() == uri
    return uri

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
    if not value or not Path(value).is_dir():
        pytest.skip("RECVAE_DATA_HOME is not set to the shared data folder")
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

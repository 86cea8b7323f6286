"""Every local default path and URL: the home ($RECVAE_HOME, else ./.recvae) and what lives under it.

Each command, the DAGs and the docs take their defaults from here, so `recvae db status` in a new shell finds the
database that `recvae pipeline` wrote. Folders are created when a path is asked for, so a first run on an empty
machine never fails on a missing directory.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "RECVAE_HOME"
DB_URL_ENV = "RECVAE_DB_URL"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
TUNE_STORAGE_ENV = "RECVAE_TUNE_STORAGE"
DEFAULT_HOME = ".recvae"


def home(create: bool = True) -> Path:
    """The local home: $RECVAE_HOME, else ./.recvae (absolute; created unless `create` is false)."""
    path = Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def _under(name: str, create: bool) -> Path:
    path = home(create) / name
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def snapshots_dir(create: bool = True) -> Path:
    """Folder of the dataset snapshots, one sub-folder per snapshot id."""
    return _under("snapshots", create)


def runs_dir(create: bool = True) -> Path:
    """Folder of training work folders (checkpoints), one per run key."""
    return _under("runs", create)


def artifacts_dir(create: bool = True) -> Path:
    """Artifact root of the embedded MLflow store."""
    return _under("mlartifacts", create)


def mlflow_db(create: bool = True) -> Path:
    """The embedded MLflow store's SQLite file."""
    return home(create) / "mlflow.db"


def recommendations_db(create: bool = True) -> Path:
    """The embedded recommendations database's SQLite file."""
    return home(create) / "recommendations.db"


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the SQLite store under the home."""
    return os.environ.get(TRACKING_URI_ENV) or f"sqlite:///{mlflow_db()}"


def default_db_url() -> str:
    """$RECVAE_DB_URL, else the SQLite recommendations database under the home."""
    return os.environ.get(DB_URL_ENV) or f"sqlite:///{recommendations_db()}"


def tuning_db(create: bool = True) -> Path:
    """The embedded Optuna storage's SQLite file (`recvae tune`'s studies)."""
    return home(create) / "optuna.db"


def default_tuning_storage() -> str:
    """$RECVAE_TUNE_STORAGE, else the SQLite study storage under the home."""
    return os.environ.get(TUNE_STORAGE_ENV) or f"sqlite:///{tuning_db()}"

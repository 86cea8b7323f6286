"""The MLflow tracking store: where it is, created once, its experiments, and MLflow's own log lines routed through
logging."""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.utils.logging_utils import MlflowLoggingStream

from recvae import paths
from recvae.urls import sqlite_file

logger = logging.getLogger(__name__)


# SQLAlchemy 2.1 warns about a loader strategy inside MLflow's own store (message: "The ``noload`` loader ...").
warnings.filterwarnings("ignore", message=".*noload.*loader strategy")


def default_artifact_root(tracking_uri: str | None = None) -> Path:
    """Artifact directory next to a SQLite store (or under the local home for other stores)."""
    db = sqlite_file(tracking_uri or mlflow.get_tracking_uri())
    return db.resolve().parent / "mlartifacts" if db is not None else paths.artifacts_dir()


def configure(tracking_uri: str | None = None) -> str:
    """Point MLflow (tracking and registry) at `tracking_uri` or the default; returns the URI used."""
    uri = tracking_uri or paths.default_tracking_uri()
    if uri.startswith("file:") or (not re.match(r"^[a-z][a-z0-9+.-]*:", uri) and not uri.startswith("databricks")):
        raise ValueError(
            f"tracking URI {uri!r}: the file store is not supported by MLflow 3; "
            "use sqlite:///PATH/mlflow.db or a server URL"
        )
    db = sqlite_file(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in logs and CLI output
    mlflow.set_tracking_uri(uri)  # the model registry follows the tracking URI unless MLFLOW_REGISTRY_URI is set
    if db is not None and uri != "sqlite:///:memory:":
        init_sqlite_store(uri)
    return uri


MLFLOW_LOGGERS = ("mlflow", "sqlalchemy.engine", "alembic", "huey")  # those `import mlflow` configures


class _LinesToLog(MlflowLoggingStream):
    """A text stream whose lines become INFO records of a logger: what MLflow's `eprint` prints (e.g. "Created
    version '1' of model 'recvae'.") then reaches the log at INFO instead of stderr. A MlflowLoggingStream so that
    it keeps that stream's `enabled` switch (mlflow.utils.logging_utils.disable_logging() sets it)."""

    def __init__(self, log: logging.Logger) -> None:
        super().__init__()
        self.log = log
        self._pending = ""

    def write(self, text: str) -> int:
        if self.enabled:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in filter(str.strip, lines):
                self.log.info("%s", line)
        return len(text)

    def flush(self) -> None:
        if self._pending.strip() and self.enabled:
            self.log.info("%s", self._pending)
        self._pending = ""


def route_mlflow_logs() -> None:
    """Send MLflow's messages through the host's log handlers at their own level.

    Importing mlflow gives its loggers a handler writing to stderr and stops their propagation, and its `eprint`
    (registry messages such as "Created version '1'") writes to stderr too; a host that captures stderr as errors
    (an Airflow task) then shows them as errors. Here the handler goes, the loggers propagate to the root logger's
    handlers (the task log) and eprint's lines become INFO records of the `mlflow` logger; the levels MLflow set
    (MLFLOW_LOGGING_LEVEL) still apply. Idempotent."""
    from mlflow.utils import logging_utils

    stream = logging_utils.MLFLOW_LOGGING_STREAM
    for name in MLFLOW_LOGGERS:
        log = logging.getLogger(name)
        log.handlers = [h for h in log.handlers if getattr(h, "stream", None) is not stream]
        log.propagate = True
    if not isinstance(stream, _LinesToLog):  # eprint looks the stream up when it prints
        logging_utils.MLFLOW_LOGGING_STREAM = _LinesToLog(logging.getLogger("mlflow"))


_READY_STORES: set[str] = set()  # SQLite stores this process has created or checked


def init_sqlite_store(uri: str) -> None:
    """Create (or migrate) the SQLite store at `uri` once, under an inter-process lock on `<db>.lock`.

    MLflow creates a new store's tables on first use, and processes doing it at the same time (Airflow's parallel
    first tasks) collide: `table ... already exists`. Under the lock the first process builds the tables; the
    others then find them and only check the schema."""
    if uri in _READY_STORES:
        return
    db = sqlite_file(uri)
    assert db is not None, uri  # called for SQLite stores only
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        _flock(lock, exclusive=True)
        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_experiments(max_results=1)  # builds the tracking store: creates or migrates the tables
            client.search_registered_models(max_results=1)  # and the registry's view of them
        finally:
            _flock(lock, exclusive=False)
    _READY_STORES.add(uri)


def _flock(file: Any, *, exclusive: bool) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (parallel first runs are then not protected)
        return
    fcntl.flock(file, fcntl.LOCK_EX if exclusive else fcntl.LOCK_UN)


def get_or_create_experiment(name: str) -> str:
    """Experiment id of `name`, creating it with an explicit artifact location (never the current directory)."""
    configure_if_needed()
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None  # a tracking server keeps artifacts where it is configured to
    if not re.match(r"^(https?|databricks)", mlflow.get_tracking_uri()):
        root = default_artifact_root()
        root.mkdir(parents=True, exist_ok=True)
        location = (root / _safe_dirname(name)).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created concurrently (e.g. two Airflow tasks)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def configure_if_needed() -> None:
    """configure() unless a tracking URI was already set in this process (mlflow.set_tracking_uri / configure)."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    # MLflow's own default (when nothing was set in-process) is a store in the current directory.
    if not getattr(tracking_utils, "_tracking_uri", None):
        configure()


def _safe_dirname(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name) or "experiment"

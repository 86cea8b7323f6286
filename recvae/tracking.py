"""MLflow: tracking store, runs, params, metrics, plots, the pyfunc model, registry and aliases."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from recvae import paths
from recvae.evaluation.metrics import EvalResult
from recvae.log import mask_secrets
from recvae.models.base import META_FILE, Recommender, load_recommender, read_meta
from recvae.models.kinds import EXTRA_REQUIREMENTS
from recvae.serving.pyfunc import ARTIFACT_KEY, DEFAULT_TOP_N
from recvae.urls import mask_url

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"  # the champion before the last promote(), for rollback
TAG_MODEL_KIND = "model_kind"
TAG_SNAPSHOT_ID = "snapshot_id"
MODEL_FILE = Path(__file__).resolve().parent / "serving" / "pyfunc.py"
PACKAGE_DIR = Path(__file__).resolve().parent  # logged with every model (code_paths)
# What loading and scoring a model imports (recvae.serving.pyfunc, recvae.models.base and the kind's module);
# tests/test_serving.py checks the list against what a load really imports.
_BASE_REQUIREMENTS = ("mlflow", "torch", "numpy", "scipy", "pandas", "pyarrow", "threadpoolctl")
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
_PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch call
_NAME_BAD_CHARS = re.compile(r"[^\w./\- ]")

# SQLAlchemy 2.1 warns about a loader strategy inside MLflow's own store (message: "The ``noload`` loader ...").
warnings.filterwarnings("ignore", message=".*noload.*loader strategy")


class ModelNotFoundError(LookupError):
    """A model URI, registered model, version or alias does not exist."""


class RegistryInputError(ValueError):
    """A version number or alias name that the model registry would refuse."""


# ---------------------------------------------------------------------------------------------- store


def default_artifact_root(tracking_uri: str | None = None) -> Path:
    """Artifact directory next to a SQLite store (or under the local home for other stores)."""
    uri = tracking_uri or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :]).resolve().parent / "mlartifacts"
    return paths.artifacts_dir()


def configure(tracking_uri: str | None = None) -> str:
    """Point MLflow (tracking and registry) at `tracking_uri` or the default; returns the URI used."""
    uri = tracking_uri or paths.default_tracking_uri()
    if uri.startswith("file:") or (not re.match(r"^[a-z][a-z0-9+.-]*:", uri) and not uri.startswith("databricks")):
        raise ValueError(
            f"tracking URI {uri!r}: the file store is not supported by MLflow 3; use sqlite:///PATH/mlflow.db or a server URL"
        )
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in logs and CLI output
    mlflow.set_tracking_uri(uri)  # the model registry follows the tracking URI unless MLFLOW_REGISTRY_URI is set
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        init_sqlite_store(uri)
    return uri


MLFLOW_LOGGERS = ("mlflow", "sqlalchemy.engine", "alembic", "huey")  # those `import mlflow` configures


class _LinesToLog:
    """A text stream whose lines become INFO records of a logger: what MLflow's `eprint` prints (e.g. "Created
    version '1' of model 'recvae'.") then reaches the log at INFO instead of stderr."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.enabled = True  # mlflow.utils.logging_utils.disable_logging() sets it
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
    db = Path(uri[len("sqlite:///") :])
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


# ----------------------------------------------------------------------------------------------- runs


def code_version() -> dict[str, str]:
    """Git commit and dirty flag of the source checkout (when there is one) and the package version."""
    out = {"recvae_version": _package_version()}
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        # --no-optional-locks: a status check must never write the index.
        status = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(repo), "status", "--porcelain"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return out
    out["git_commit"] = commit
    out["git_dirty"] = "true" if status.strip() else "false"
    return out


def _package_version() -> str:
    try:
        return importlib.metadata.version("recvae")
    except importlib.metadata.PackageNotFoundError:
        import recvae

        return getattr(recvae, "__version__", "unknown")


@contextlib.contextmanager
def start_run(
    experiment: str,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    *,
    nested: bool = False,
    run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run in `experiment` tagged with the code version and `tags`; ended (FAILED on error) on exit.

    With `run_id` (see `resumable_run`) that run is reopened, RUNNING again, instead of a new one: a resumed training
    continues its own run."""
    exp_id = get_or_create_experiment(experiment)
    all_tags = {**code_version(), **{k: mask_secrets(str(v)) for k, v in (tags or {}).items()}}
    if run_id is not None:
        opened = mlflow.start_run(run_id=run_id, tags=all_tags, nested=nested)
    else:
        opened = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=all_tags, nested=nested)
    with opened as run:
        verb = "continuing" if run_id is not None else "started"
        logger.info("MLflow run %s (%s) %s in experiment %r", run.info.run_id, run.info.run_name, verb, experiment)
        yield run


def resumable_run(experiment: str, run_id: str | None) -> str | None:
    """`run_id` if it is a run of `experiment` in this tracking store that did not finish (killed, failed), else None."""
    if not run_id:
        return None
    configure_if_needed()
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        logger.warning("MLflow run %s is not in %s: a new run is started", run_id, mlflow.get_tracking_uri())
        return None
    exp = client.get_experiment_by_name(experiment)
    if exp is None or run.info.experiment_id != exp.experiment_id or run.info.lifecycle_stage == "deleted":
        return None
    return run_id if run.info.status != "FINISHED" else None


def unfinished_runs(experiment: str, tag: str, value: str) -> list[Run]:
    """Runs of `experiment` tagged `tag`=`value` that did not finish (RUNNING, FAILED, KILLED), newest first."""
    configure_if_needed()
    exp = MlflowClient().get_experiment_by_name(experiment)
    if exp is None:
        return []
    return MlflowClient().search_runs(
        [exp.experiment_id], filter_string=f"tags.`{tag}` = '{value}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )


def end_unfinished_runs(experiment: str, tag: str, value: str) -> list[str]:
    """Mark the RUNNING runs tagged `tag`=`value` KILLED (their process is gone); returns their ids."""
    ended = [r.info.run_id for r in unfinished_runs(experiment, tag, value) if r.info.status == "RUNNING"]
    for run_id in ended:
        MlflowClient().set_terminated(run_id, status="KILLED")
        logger.info("MLflow run %s was left RUNNING by a process that is gone: marked KILLED", run_id)
    return ended


def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested mappings (and dataclasses) flattened to `prefix` + dotted keys."""
    if dataclasses.is_dataclass(d) and not isinstance(d, type):
        d = dataclasses.asdict(d)
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def metric_key(name: str) -> str:
    """A name MLflow accepts for a metric/param/tag: '@' becomes '_at_' (ndcg@100 -> ndcg_at_100)."""
    return _NAME_BAD_CHARS.sub("_", name.replace("@", "_at_"))


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        text = json.dumps(list(value), default=str)
    elif isinstance(value, Mapping):
        text = json.dumps(value, default=str, sort_keys=True)
    else:
        text = str(value)
    if len(text) > MAX_PARAM_LENGTH:
        suffix = f"...[truncated from {len(text)} chars]"
        text = text[: MAX_PARAM_LENGTH - len(suffix)] + suffix
    return text


def log_params(params: Any, prefix: str = "", *, resumed: bool = False) -> dict[str, str]:
    """Log a config dataclass or (nested) dict as flat params `prefix.key.sub`; returns what was logged.

    `resumed`: the active run was reopened, so params it has are kept (MLflow refuses to change them); values that
    differ now (say, more epochs) are warned about and listed in the tag `recvae.resume.changed_params`."""
    flat = {metric_key(k): mask_secrets(_param_value(v)) for k, v in flatten(params, prefix).items()}
    for key in flat:
        if len(key) > 250:
            raise ValueError(f"param name {key!r} is longer than MLflow's 250 characters")
    if resumed:
        flat = _params_not_logged(flat)
    items = list(flat.items())
    for start in range(0, len(items), _PARAMS_PER_BATCH):
        mlflow.log_params(dict(items[start : start + _PARAMS_PER_BATCH]))
    return flat


def _params_not_logged(flat: dict[str, str]) -> dict[str, str]:
    """The params the active run does not have yet; differing values are reported and left as they were."""
    run = mlflow.active_run()
    if run is None:
        return flat
    logged = MlflowClient().get_run(run.info.run_id).data.params
    changed = [f"{k}: {logged[k]} -> {v}" for k, v in flat.items() if k in logged and logged[k] != v]
    if changed:
        logger.warning("resumed run %s keeps its params; now different: %s", run.info.run_id, "; ".join(changed))
        mlflow.set_tag("recvae.resume.changed_params", "; ".join(changed)[:5000])
    return {k: v for k, v in flat.items() if k not in logged}


def log_snapshot(snapshot: Any) -> dict[str, str]:
    """Log a Snapshot's id, counts and file hashes (params/tags), its splits as input datasets and its manifest.json."""
    manifest = dict(snapshot.manifest or {})
    sid = snapshot.snapshot_id
    params: dict[str, Any] = {"snapshot.id": sid, "snapshot.n_users": len(snapshot.users), "snapshot.n_items": snapshot.n_items,
                              "snapshot.source": _source_text(manifest.get("source"))}
    for part, counts in snapshot.summary().items():
        params[f"snapshot.{part}.users"] = counts["users"]
        params[f"snapshot.{part}.interactions"] = counts["interactions"]
    for fname, digest in sorted(manifest.get("files", {}).items()):
        params[f"snapshot.sha256.{fname}"] = digest
    logged = log_params(params)
    mlflow.set_tags({TAG_SNAPSHOT_ID: sid, **({"snapshot_path": mask_secrets(str(snapshot.path))} if snapshot.path else {})})
    log_datasets(snapshot)
    saved = Path(snapshot.path) / "manifest.json" if snapshot.path is not None else None
    if saved is not None and saved.exists():
        text = saved.read_text()
    else:
        text = json.dumps({**manifest, "snapshot_id": sid}, indent=2, sort_keys=True, default=str)
    mlflow.log_text(mask_secrets(text), "snapshot/manifest.json")  # a source URL's password never reaches MLflow
    return logged


def _source_text(source: Any) -> str:
    """One line naming a manifest's data source: the dataset name, else format and path (or URL), else '?'."""
    if not isinstance(source, Mapping):
        return str(source) if source else "?"
    parts = [str(source[k]) for k in ("dataset", "format", "path") if source.get(k)]
    return " ".join(dict.fromkeys(parts)) or "?"


class SnapshotDataset(MetaDataset):
    """One split of a snapshot as an MLflow dataset: metadata and counts only, never the interactions."""

    def __init__(self, source: DatasetSource, name: str, digest: str, schema: Schema, profile: dict[str, Any]) -> None:
        self._profile = profile
        super().__init__(source, name=name, digest=digest, schema=schema)

    @property
    def profile(self) -> dict[str, Any]:
        """Users and interaction counts of the split."""
        return self._profile

    def to_dict(self) -> dict[str, str]:
        """MetaDataset's fields plus the profile (MetaDataset itself logs none)."""
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def _dataset_source(snapshot: Any) -> DatasetSource:
    """Where the snapshot's data came from: its file, URL (password masked) or data set name, else its folder."""
    src = (snapshot.manifest or {}).get("source") or {}
    text = str(src.get("path") or src.get("dataset") or snapshot.path or "")
    if not text:
        return CodeDatasetSource(tags={})  # built in memory: MLflow's "made by code" source
    if "://" in text:
        text = mask_url(text)
    if re.match(r"^https?://", text):
        return HTTPDatasetSource(text)
    # MLflow has no SQL source type: a file, a folder, a dataset name or a database URL is a "local" uri.
    return get_dataset_source_from_json(json.dumps({"uri": text}), "local")


def _dataset_base_name(snapshot: Any) -> str:
    src = (snapshot.manifest or {}).get("source") or {}
    path = str(src.get("path") or "")
    if src.get("dataset"):
        return str(src["dataset"])
    if path and "://" not in path:
        return Path(path).name or path
    return str(src.get("format") or "snapshot")


def snapshot_datasets(snapshot: Any) -> list[tuple[SnapshotDataset, str]]:
    """(dataset, context) for each split the snapshot has: train ('training'), validation and test users."""
    sid = snapshot.snapshot_id
    source, base = _dataset_source(snapshot), _dataset_base_name(snapshot)
    schema = Schema([ColSpec(id_type(snapshot.users.raw_ids), "user"), ColSpec(id_type(snapshot.items.raw_ids), "item")])
    out = []
    if "train" in snapshot.matrices:
        m = snapshot.train
        profile = {"users": int(m.shape[0]), "items": int(snapshot.n_items), "interactions": int(m.nnz)}
        out.append((SnapshotDataset(source, f"{base}/train", sid, schema, profile), "training"))
    for split in ("validation", "test"):
        if snapshot.has(split):
            fold_in, held_out = snapshot.heldout(split)
            profile = {"users": int(fold_in.shape[0]), "items": int(snapshot.n_items),
                       "fold_in_interactions": int(fold_in.nnz), "held_out_interactions": int(held_out.nnz)}
            out.append((SnapshotDataset(source, f"{base}/{split}", sid, schema, profile), split))
    return out


def log_datasets(snapshot: Any) -> list[str]:
    """Log the snapshot's splits as the active run's input datasets (digest: the snapshot id); returns the contexts."""
    pairs = snapshot_datasets(snapshot)
    if pairs:
        mlflow.log_inputs([d for d, _ in pairs], contexts=[c for _, c in pairs], tags_list=[None] * len(pairs))
    return [c for _, c in pairs]


def _numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or value is None:
            continue
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy / torch scalars
            value = value.item()
        if isinstance(value, (int, float)):
            out[metric_key(key)] = float(value)
    return out


class EpochLogger:
    """Training callback `(epoch, metrics)`: logs each numeric metric with step=epoch and keeps the history."""

    def __init__(self, run_id: str | None = None) -> None:
        active = mlflow.active_run()
        self.run_id = run_id or (active.info.run_id if active else None)
        if self.run_id is None:
            raise RuntimeError("EpochLogger needs an active MLflow run or a run_id")
        self.client = MlflowClient()
        self.history: list[dict[str, float]] = []

    def __call__(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        values = _numeric_metrics(metrics)
        self.history.append({"epoch": int(epoch), **values})
        ts = int(time.time() * 1000)
        batch = [mlflow.entities.Metric(k, v, ts, int(epoch)) for k, v in values.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)

    on_epoch_end = __call__

    def log_missing(self, history: list[Mapping[str, Any]], key: str = "loss") -> int:
        """Log the epochs of `history` the run has no `key` for (one checkpointed just before a kill); returns how many."""
        logged = {m.step for m in self.client.get_metric_history(self.run_id, metric_key(key))}
        missing = [h for h in history if int(h["epoch"]) not in logged]
        for record in missing:
            self(int(record["epoch"]), record)
        return len(missing)


def log_test_metrics(result: EvalResult, prefix: str = "test_") -> dict[str, float]:
    """Log an EvalResult's means, standard errors (`_stderr`) and user count; returns what was logged."""
    values: dict[str, float] = {}
    for name, mean in result.means.items():
        values[metric_key(f"{prefix}{name}")] = mean
    for name, err in result.stderr.items():
        values[metric_key(f"{prefix}{name}_stderr")] = err
    values[metric_key(f"{prefix}n_users")] = float(result.n_users)
    mlflow.log_metrics(values)
    return values


def plot_history(history: list[Mapping[str, Any]], path: str | Path | None = None, *, log_artifact: bool = True) -> Path:
    """Training curves (loss/KL, beta, validation NDCG@100 and Recall) in one PNG; logged to the active run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path) if path is not None else Path(tempfile.mkdtemp(prefix="recvae-plot-")) / "training_curves.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{metric_key(k): v for k, v in h.items()} for h in history]
    epochs = [r.get("epoch", i) for i, r in enumerate(rows)]

    def series(key: str) -> list[float] | None:
        vals = [r.get(key) for r in rows]
        if all(v is None for v in vals):
            return None
        return [math.nan if v is None else float(v) for v in vals]

    panels = [
        ("training loss", ["loss", "neg_ll", "kl"]),
        ("beta", ["beta"]),
        ("validation", sorted({k for r in rows for k in r if k.startswith("val_")})),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (title, keys) in zip(axes, panels):
        drawn = False
        for key in keys:
            ys = series(key)
            if ys is not None:
                ax.plot(epochs, ys, marker="." if len(ys) < 50 else None, label=key)
                drawn = True
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if drawn:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    if log_artifact and mlflow.active_run() is not None:
        mlflow.log_artifact(str(path), artifact_path="plots")
    return path


# ---------------------------------------------------------------------------------------------- model


def id_type(values: Any) -> str:
    """MLflow column type of raw ids: 'long' for integers, 'double' for floats, else 'string'."""
    kind = np.asarray(values).dtype.kind
    return "long" if kind in "iu" else "double" if kind == "f" else "string"


def model_signature(rec: Recommender, user_type: str | None = None) -> ModelSignature:
    """Input (user: `user_type`, item: the model's raw item id type), output (user, rank, item, score), param top_n.

    `user_type` is the snapshot's user id type ('string' or 'long'); without it the user column is untyped, which
    JSON requests accept but CSV requests cannot be parsed by (the server needs a pandas type per column)."""
    item_type = id_type(rec.items.raw_ids) if rec.items is not None else "long"
    user: Any = user_type or AnyType()
    return ModelSignature(
        inputs=Schema([ColSpec(user, "user"), ColSpec(item_type, "item")]),
        outputs=Schema([ColSpec(user, "user"), ColSpec("long", "rank"), ColSpec(item_type, "item"), ColSpec("double", "score")]),
        params=ParamSchema([ParamSpec("top_n", "long", DEFAULT_TOP_N)]),
    )


def _input_example(rec: Recommender, user_type: str | None) -> pd.DataFrame:
    n = min(3, rec.n_items)
    raw = rec.items.raw_ids[:n] if rec.items is not None else np.arange(n, dtype=np.int64)
    user: Any = {"long": 0, "double": 0.0}.get(user_type or "string", "example-user")
    return pd.DataFrame({"user": [user] * n, "item": raw})


def _kinds(rec: Recommender) -> set[str]:
    """`rec`'s kind and, for an ensemble, its members' kinds."""
    out = {rec.kind}
    for member in getattr(rec, "members", ()):
        out |= _kinds(member)
    return out


def default_pip_requirements(rec: Recommender | None = None) -> list[str]:
    """Pinned requirements of the served pyfunc: what loading and scoring `rec` imports (recvae itself is logged
    with the model); implicit only for an ALS model (or an ensemble holding one)."""
    dists = list(_BASE_REQUIREMENTS)
    for kind in sorted(_kinds(rec)) if rec is not None else ():
        dists += [d for d in EXTRA_REQUIREMENTS.get(kind, ()) if d not in dists]
    reqs = []
    for dist in dists:
        try:
            version = importlib.metadata.version(dist).split("+")[0]  # drop local tags like +cpu
        except importlib.metadata.PackageNotFoundError:
            continue
        reqs.append(f"{dist}=={version}")
    return reqs


def log_recommender(
    rec: Recommender,
    *,
    name: str = "model",
    registered_model_name: str | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    pip_requirements: list[str] | None = None,
    input_example: bool = True,
    snapshot: Any | None = None,
) -> ModelInfo:
    """Log `rec` as a self-contained pyfunc model (models from code, the recvae package logged with it) in the
    active run, optionally registering it. `snapshot`, the data it was trained on, gives the model's snapshot id
    and the user id type of its signature."""
    run = mlflow.active_run()
    meta = {**(extra_meta or {})}
    user_type = None
    if snapshot is not None:
        meta.setdefault("snapshot_id", snapshot.snapshot_id)
        user_type = id_type(snapshot.users.raw_ids)
    if run is not None:
        meta.setdefault("run_id", run.info.run_id)
    with tempfile.TemporaryDirectory(prefix="recvae-model-") as tmp:
        rec_dir = rec.save(Path(tmp) / ARTIFACT_KEY, **meta)
        example = (_input_example(rec, user_type), {"top_n": 10}) if input_example and rec.n_items > 0 else None
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=MODEL_FILE,
            artifacts={ARTIFACT_KEY: str(rec_dir)},
            # The package travels with the model (MLflow puts code/ first on sys.path when loading), so the model
            # loads and serves where recvae is not installed, and always with the code it was logged with.
            code_paths=[str(PACKAGE_DIR)],
            signature=model_signature(rec, user_type),
            input_example=example,
            pip_requirements=pip_requirements if pip_requirements is not None else default_pip_requirements(rec),
            metadata={"recvae_kind": rec.kind, "recvae_version": _package_version(), **_json_safe(meta)},
            registered_model_name=registered_model_name,
        )
    if run is not None:
        mlflow.set_tag(TAG_MODEL_KIND, rec.kind)
    logger.info("logged %s model %s (%s)", rec.kind, info.model_uri, info.model_id)
    return info


def _json_safe(d: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(d), default=str))


@dataclass
class LoadedModelInfo:
    """Where a loaded recommender came from."""

    uri: str
    kind: str
    snapshot_id: str | None = None
    run_id: str | None = None
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # the recommender.json contents


_MODELS_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)/?$")
_MODELS_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)/?$")
_RUNS = re.compile(r"^runs:/(?P<run_id>[^/]+)(/.*)?$")


def _resolve_registry(uri: str) -> tuple[str | None, str | None, str | None, str | None]:
    """(name, version, alias, run_id) of a registry or runs URI; ModelNotFoundError if it does not exist."""
    client = MlflowClient()
    if m := _MODELS_ALIAS.match(uri):
        name, alias = m["name"], m["alias"]
        _require_registered_model(client, name, uri)
        try:
            mv = client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            known = sorted(client.get_registered_model(name).aliases)
            raise ModelNotFoundError(
                f"{uri}: model {name!r} has no alias {alias!r}; aliases: {', '.join(known) or 'none'}"
            ) from exc
        return name, str(mv.version), alias, mv.run_id
    if m := _MODELS_VERSION.match(uri):
        name, version = m["name"], m["version"]
        _require_registered_model(client, name, uri)
        try:
            mv = client.get_model_version(name, version)
        except MlflowException as exc:
            raise ModelNotFoundError(f"{uri}: model {name!r} has no version {version}") from exc
        return name, str(mv.version), None, mv.run_id
    if m := _RUNS.match(uri):
        try:
            client.get_run(m["run_id"])
        except MlflowException as exc:
            raise ModelNotFoundError(f"{uri}: no run {m['run_id']!r} in {mlflow.get_tracking_uri()}") from exc
        return None, None, None, m["run_id"]
    return None, None, None, None


def _require_registered_model(client: MlflowClient, name: str, uri: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        raise ModelNotFoundError(f"{uri}: no registered model {name!r} in {mlflow.get_registry_uri()}") from exc


def _find_recommender_dir(model_dir: Path) -> Path:
    """The saved recommender inside a downloaded MLflow model (or `model_dir` itself if it is one)."""
    if (model_dir / META_FILE).exists():
        return model_dir
    mlmodel = model_dir / "MLmodel"
    if mlmodel.exists():
        conf = mlflow.models.Model.load(str(mlmodel)).flavors.get("python_function", {})
        rel = conf.get("artifacts", {}).get(ARTIFACT_KEY, {}).get("path")
        if rel and (model_dir / rel / META_FILE).exists():
            return model_dir / rel
    found = sorted(model_dir.rglob(META_FILE))
    if not found:
        raise ModelNotFoundError(f"{model_dir}: neither a saved recommender nor an MLflow model holding one")
    return found[0].parent


def _load_model_dir(uri: str, model_dir: Path) -> tuple[Recommender, dict[str, Any]]:
    """The recommender in a model folder and its metadata; errors name `uri` and the file inside the model (a
    downloaded model's temporary folder means nothing to the user)."""
    from recvae.models.base import ModelLoadError

    def where(exc: BaseException) -> str:
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        return f"{uri}: {text.replace(str(model_dir) + os.sep, '').replace(str(model_dir), '.')}"

    try:
        rec_dir = _find_recommender_dir(model_dir)
        meta = read_meta(rec_dir)
        return load_recommender(rec_dir), meta
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(where(exc)) from exc
    except (ValueError, KeyError, OSError) as exc:  # ModelLoadError, bad JSON or Parquet, unreadable files
        raise ModelLoadError(where(exc)) from exc


def load_recommender_from_uri(uri: str | Path, dst_dir: str | Path | None = None) -> tuple[Recommender, LoadedModelInfo]:
    """Load a Recommender from models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model, an MLflow URI or a directory."""
    uri = str(uri)
    local = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
    name = version = alias = run_id = None
    tmp: str | None = None
    if "://" not in uri and ":/" not in uri:
        if not local.exists():
            raise ModelNotFoundError(f"{uri}: no such model directory")
        model_dir = local
    else:
        configure_if_needed()
        name, version, alias, run_id = _resolve_registry(uri)
        if dst_dir is None:
            tmp = tempfile.mkdtemp(prefix="recvae-download-")
        try:
            model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst_dir or tmp)))
        except MlflowException as exc:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            raise ModelNotFoundError(f"{uri}: cannot download the model ({exc.message})") from exc
    try:
        rec, meta = _load_model_dir(uri, model_dir)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    info = LoadedModelInfo(
        uri=uri,
        kind=meta.get("kind", "unknown"),
        snapshot_id=meta.get("snapshot_id"),
        run_id=run_id or meta.get("run_id"),
        name=name,
        version=version,
        alias=alias,
        meta=meta,
    )
    logger.info("loaded %s model from %s (snapshot %s)", info.kind, uri, info.snapshot_id)
    return rec, info


# ------------------------------------------------------------------------------------------- registry


def register(run_id: str, name: str, artifact: str = "model") -> str:
    """Register the model logged as `artifact` in run `run_id` under `name`; returns the new version."""
    configure_if_needed()
    mv = mlflow.register_model(logged_model_uri(run_id, artifact), name)
    logger.info("registered runs:/%s/%s as %s version %s", run_id, artifact, name, mv.version)
    return str(mv.version)


def logged_model_uri(run_id: str, artifact: str = "model") -> str:
    """models:/MODEL_ID of the latest model named `artifact` logged in run `run_id` (MLflow 3 logged models)."""
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ModelNotFoundError(f"no run {run_id!r} in {mlflow.get_tracking_uri()}") from exc
    found = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"name = '{artifact}' AND source_run_id = '{run_id}'"
    )
    models = [m for m in found if m.source_run_id == run_id]
    if not models:
        raise ModelNotFoundError(f"run {run_id} has no logged model named {artifact!r}")
    return f"models:/{max(models, key=lambda m: m.creation_timestamp).model_id}"


def set_alias(name: str, alias: str, version: str | int) -> None:
    """Point `alias` of registered model `name` at `version`."""
    configure_if_needed()
    MlflowClient().set_registered_model_alias(name, alias, str(version))


def get_alias(name: str, alias: str) -> str | None:
    """The version `alias` points to, or None when the model or the alias does not exist."""
    configure_if_needed()
    client = MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


_ALIAS = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


def check_alias(alias: str) -> str:
    """`alias` if the registry accepts it as an alias name, else RegistryInputError saying what is allowed."""
    if not _ALIAS.match(alias or ""):
        raise RegistryInputError(f"invalid alias {alias!r}: use 1 to 255 letters, digits, underscores (_) and "
                                 "dashes (-), e.g. champion")
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise RegistryInputError(f"alias {alias!r} is reserved by MLflow ('latest' and v<number> name versions)")
    return alias


def check_version(name: str, version: str | int) -> str:
    """The registered version `version` of model `name` as text; RegistryInputError when it is not a number,
    ModelNotFoundError (naming models:/NAME/VERSION and the versions there are) when it does not exist."""
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise RegistryInputError(f"version must be a registered version number (1, 2, ...); got {str(version)!r}")
    text = str(int(text))
    uri = f"models:/{name}/{text}"
    configure_if_needed()
    client = MlflowClient()
    _require_registered_model(client, name, uri)
    try:
        client.get_model_version(name, text)
    except MlflowException as exc:
        try:
            known = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        except MlflowException:
            known = []
        raise ModelNotFoundError(f"{uri}: model {name!r} has no version {text}; versions: "
                                 f"{', '.join(map(str, known)) or 'none'}") from exc
    return text


def promote(name: str, version: str | int, alias: str = CHAMPION) -> str | None:
    """Point `alias` (champion) at `version`, keeping the old target as `previous`; returns the old version.
    The alias and version are checked first (RegistryInputError, ModelNotFoundError), so nothing moves on bad input."""
    check_alias(alias)
    version = check_version(name, version)
    old = get_alias(name, alias)
    if old is not None and old != str(version):
        set_alias(name, PREVIOUS, old)
    set_alias(name, alias, version)
    logger.info("%s@%s: %s -> %s", name, alias, old, version)
    return old


def compare_runs(
    experiment: str, metric: str = "val_ndcg_at_100", max_results: int = 1000, snapshot: str | None = None
) -> pd.DataFrame:
    """One row per (non-deleted) run of `experiment` (only those on `snapshot` when given): name, kind, status,
    snapshot, latest metrics and params; best first.

    Runs are ranked by `model_<metric>`: the metric of the model a run logged, which for a trained run is its best
    epoch's (`best_<metric>`), not the last epoch's, and for a baseline or an ensemble its only value. A run's
    snapshot is the digest of its training dataset (its `snapshot_id` tag for runs logged before datasets were)."""
    configure_if_needed()
    exp = MlflowClient().get_experiment_by_name(experiment)
    if exp is None:
        raise ModelNotFoundError(f"no experiment {experiment!r} in {mlflow.get_tracking_uri()}")
    df = mlflow.search_runs(experiment_ids=[exp.experiment_id], max_results=max_results, output_format="pandas")
    if not df.empty:
        trained_on = _training_snapshots(exp.experiment_id, max_results)
        tags = df[f"tags.{TAG_SNAPSHOT_ID}"] if f"tags.{TAG_SNAPSHOT_ID}" in df.columns else pd.Series(None, index=df.index)
        df[f"tags.{TAG_SNAPSHOT_ID}"] = df["run_id"].map(trained_on).fillna(tags)
        if snapshot is not None:
            df = df[df[f"tags.{TAG_SNAPSHOT_ID}"] == snapshot].dropna(axis=1, how="all")
    if df.empty:
        return pd.DataFrame(columns=["run_id", "run_name", "model_kind", "snapshot_id", "status", "start_time"])

    def tag(key: str) -> pd.Series:
        col = f"tags.{key}"
        return df[col] if col in df.columns else pd.Series([None] * len(df), index=df.index, dtype=object)

    out = pd.DataFrame(
        {
            "run_id": df["run_id"],
            "run_name": tag("mlflow.runName"),
            "model_kind": tag(TAG_MODEL_KIND),
            "snapshot_id": tag(TAG_SNAPSHOT_ID),
            "status": df["status"],
            "start_time": df["start_time"],
        }
    )
    metrics = df[[c for c in df.columns if c.startswith("metrics.")]].rename(columns=lambda c: c[len("metrics.") :])
    params = df[[c for c in df.columns if c.startswith("params.") and not c.startswith("params.snapshot.sha256.")]]
    params = params.rename(columns=lambda c: c[len("params.") :])
    out = pd.concat([out, metrics.reindex(sorted(metrics.columns), axis=1), params.reindex(sorted(params.columns), axis=1)], axis=1)
    key = metric_key(metric)
    if key in out.columns or f"best_{key}" in out.columns:
        latest = out[key] if key in out.columns else pd.Series(np.nan, index=out.index)
        best = out[f"best_{key}"] if f"best_{key}" in out.columns else pd.Series(np.nan, index=out.index)
        out.insert(len(out.columns) - len(params.columns), f"model_{key}", best.fillna(latest))
        out = out.sort_values(f"model_{key}", ascending=False, na_position="last", kind="stable")
    else:
        logger.warning("no run of experiment %r has metric %r; sorted by start time", experiment, key)
        out = out.sort_values("start_time", ascending=False, kind="stable")
    return out.reset_index(drop=True)


def _training_snapshots(experiment_id: str, max_results: int) -> dict[str, str]:
    """run id -> digest (snapshot id) of the run's training input dataset."""
    out = {}
    for run in mlflow.search_runs(experiment_ids=[experiment_id], max_results=max_results, output_format="list"):
        for inp in run.inputs.dataset_inputs if run.inputs else ():
            if any(t.key == MLFLOW_DATASET_CONTEXT and t.value == "training" for t in inp.tags):
                out[run.info.run_id] = inp.dataset.digest
    return out

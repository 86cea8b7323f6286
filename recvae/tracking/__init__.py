"""MLflow for recvae, one module per job: the tracking store (`store`), runs and their params and curves (`runs`),
the snapshot as MLflow datasets (`datasets`), models logged and loaded by URI (`models`), the registry and its
aliases (`registry`), and the runs table (`compare`). The names below are the layer's public API."""

from __future__ import annotations

from recvae.tracking.compare import (
    NOT_COMPARABLE,
    Comparison,
    ComparisonError,
    compare_against,
    compare_runs,
    load_per_user,
    resolve_run,
    run_snapshot,
)
from recvae.tracking.datasets import TAG_SNAPSHOT_ID, SnapshotDataset, log_datasets, log_snapshot, snapshot_datasets
from recvae.tracking.models import (
    TAG_MODEL_KIND,
    LoadedModelInfo,
    default_pip_requirements,
    id_type,
    load_recommender_from_uri,
    log_recommender,
    model_signature,
)
from recvae.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    ModelNotFoundError,
    RegistryInputError,
    check_alias,
    check_version,
    get_alias,
    logged_model_uri,
    promote,
    register,
    set_alias,
)
from recvae.tracking.runs import (
    MAX_PARAM_LENGTH,
    EpochLogger,
    code_version,
    end_unfinished_runs,
    flatten,
    log_evaluation,
    log_params,
    log_test_metrics,
    metric_key,
    per_user_artifact,
    plot_history,
    resumable_run,
    start_run,
    unfinished_runs,
)
from recvae.tracking.store import (
    MLFLOW_LOGGERS,
    configure,
    configure_if_needed,
    default_artifact_root,
    get_or_create_experiment,
    init_sqlite_store,
    route_mlflow_logs,
)

__all__ = [
    "NOT_COMPARABLE", "Comparison", "ComparisonError", "compare_against", "load_per_user", "resolve_run",
    "run_snapshot",
    "CHALLENGER", "CHAMPION", "MAX_PARAM_LENGTH", "MLFLOW_LOGGERS", "PREVIOUS", "TAG_MODEL_KIND", "TAG_SNAPSHOT_ID",
    "EpochLogger", "LoadedModelInfo", "ModelNotFoundError", "RegistryInputError", "SnapshotDataset", "check_alias",
    "check_version", "code_version", "compare_runs", "configure", "configure_if_needed", "default_artifact_root",
    "default_pip_requirements", "end_unfinished_runs", "flatten", "get_alias", "get_or_create_experiment", "id_type",
    "init_sqlite_store", "load_recommender_from_uri", "log_datasets", "log_evaluation", "log_params", "log_recommender",
    "log_snapshot", "log_test_metrics", "logged_model_uri", "metric_key", "model_signature", "per_user_artifact",
    "plot_history",
    "promote", "register", "resumable_run", "route_mlflow_logs", "set_alias", "snapshot_datasets", "start_run",
    "unfinished_runs",
]

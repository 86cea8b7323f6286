"""MLflow runs: start or reopen one, its params, per-epoch metrics, test metrics and the training-curve plot."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import math
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from recvae.evaluation.metrics import EvalResult
from recvae.evaluation.segments import EvalReport
from recvae.log import mask_secrets
from recvae.tracking.store import configure_if_needed, get_or_create_experiment

logger = logging.getLogger(__name__)


MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


_PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch call


_NAME_BAD_CHARS = re.compile(r"[^\w./\- ]")


TAG_ROLE = "recvae.role"  # what a run is: challenger, baseline, trial, tune (a study's parent run)
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a run under its parent
TAG_STUDY = "recvae.study"  # the tune study a run belongs to


def code_version() -> dict[str, str]:
    """Git commit and dirty flag of the source checkout (when there is one) and the package version."""
    out = {"recvae_version": package_version()}
    repo = Path(__file__).resolve().parents[2]
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


def package_version() -> str:
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
    """`run_id` if it is a run of `experiment` in this tracking store that did not finish (killed, failed), or None."""
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
        run_id = run_id or (active.info.run_id if active else None)
        if run_id is None:
            raise RuntimeError("EpochLogger needs an active MLflow run or a run_id")
        self.run_id: str = run_id
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

    def log_missing(self, history: Sequence[Mapping[str, Any]], key: str = "loss") -> int:
        """Log the epochs of `history` the run has no `key` for (one checkpointed just before a kill); how many."""
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


def per_user_artifact(split: str) -> str:
    """Where a run keeps its per-user values on `split` ('test', 'validation')."""
    return f"eval/{split}_per_user.parquet"


def segment_metrics(report: EvalReport, prefix: str) -> dict[str, float]:
    """MLflow metrics of a report's table: `{prefix}{metric}.{segment}` (test_ndcg_at_100.users_light), and plain
    `{prefix}{metric}` for the beyond-accuracy metrics over all users (the accuracy ones are log_test_metrics')."""
    out = {}
    accuracy = set(report.result.per_user)
    for row in report.table.itertuples(index=False):
        if row.segment != "all":
            out[f"{metric_key(prefix + row.metric)}.{row.segment}"] = float(row.mean)
        elif row.metric not in accuracy:
            out[metric_key(prefix + row.metric)] = float(row.mean)
    return out


def log_evaluation(report: EvalReport, prefix: str = "test_") -> dict[str, float]:
    """Log a split's report to the active run: the means (log_test_metrics), the segment and beyond-accuracy
    metrics, the table (`eval/SPLIT_segments.csv`), the per-user values (`eval/SPLIT_per_user.parquet`, keyed by
    the snapshot's raw user ids) and, as tags, the history thresholds and the diversity's features; returns the
    metrics logged."""
    values = log_test_metrics(report.result, prefix)
    extra = segment_metrics(report, prefix)
    mlflow.log_metrics(extra)
    split = report.split
    # tags, not params: a run re-evaluated later may change them
    mlflow.set_tags({f"recvae.eval.{split}.history_thresholds": "light <= {:g} < medium <= {:g} < heavy".format(
                         *report.thresholds),
                     f"recvae.eval.{split}.ild_features": report.ild_source or "none"})
    if report.ild_note:
        mlflow.set_tag(f"recvae.eval.{split}.ild_skipped", report.ild_note[:5000])
    with tempfile.TemporaryDirectory(prefix="recvae-eval-") as tmp:
        table = Path(tmp) / f"{split}_segments.csv"
        report.table.to_csv(table, index=False)
        frame = report.per_user_frame()
        per_user = Path(tmp) / Path(per_user_artifact(split)).name
        frame.assign(user=frame["user"].astype(str) if frame["user"].dtype == object else frame["user"]).to_parquet(
            per_user, index=False)
        mlflow.log_artifact(str(table), artifact_path="eval")
        mlflow.log_artifact(str(per_user), artifact_path="eval")
    return {**values, **extra}


def plot_history(
    history: Sequence[Mapping[str, Any]], path: str | Path | None = None, *, log_artifact: bool = True
) -> Path:
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
    for ax, (title, keys) in zip(axes, panels, strict=True):
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

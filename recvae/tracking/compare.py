"""A table of runs and their metrics, best first, optionally on one snapshot; and the paired comparison of one run
with every other run on its snapshot from their kept per-user results (`compare_against`)."""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from recvae.evaluation.metrics import DEFAULT_METRICS
from recvae.evaluation.paired import paired_difference, paired_values
from recvae.tracking.datasets import TAG_SNAPSHOT_ID
from recvae.tracking.models import TAG_MODEL_KIND, _resolve_registry
from recvae.tracking.registry import ModelNotFoundError
from recvae.tracking.runs import TAG_ROLE, metric_key, per_user_artifact
from recvae.tracking.store import configure_if_needed

logger = logging.getLogger(__name__)

NO_MODEL_ROLES = ("tune", "trial")  # runs of `recvae tune` that log no model (its best is retrained as a run)


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
        col = f"tags.{TAG_SNAPSHOT_ID}"
        tags = df[col] if col in df.columns else pd.Series(None, index=df.index)
        df[col] = df["run_id"].map(trained_on).fillna(tags)
        if snapshot is not None:
            df = df[df[f"tags.{TAG_SNAPSHOT_ID}"] == snapshot].dropna(axis=1, how="all")
        role = f"tags.{TAG_ROLE}"
        if role in df.columns:  # a tune's study run and its trials kept no model: `recvae tune` shows them
            df = df[~df[role].isin(NO_MODEL_ROLES)]
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
    out = pd.concat(
        [out, metrics.reindex(sorted(metrics.columns), axis=1), params.reindex(sorted(params.columns), axis=1)], axis=1
    )
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


NOT_COMPARABLE = "not comparable (no per-user results; re-evaluate)"
_NOT_METRICS = ("user", "history", "heldout", "segment")


class ComparisonError(ValueError):
    """Runs that cannot be compared (other snapshots, no per-user results, unknown metrics): the user's to fix."""


@dataclass
class Comparison:
    """A reference run against the other runs of its snapshot: one row per (run, metric) of paired statistics
    (`candidate` is the other run, `diff` = other - reference), and the runs that could not be compared."""

    reference: dict[str, Any]
    split: str
    confidence: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    not_comparable: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "split": self.split, "confidence": self.confidence,
                "comparisons": self.rows, "not_comparable": self.not_comparable}


def resolve_run(ref: str) -> Run:
    """The run of a run id, `runs:/ID/...`, `models:/NAME/VERSION` or `models:/NAME@ALIAS`."""
    configure_if_needed()
    run_id = _resolve_registry(ref)[3] if ":/" in ref else ref
    try:
        return MlflowClient().get_run(run_id or ref)
    except MlflowException as exc:
        found = _by_prefix(ref) if ":/" not in ref else []
        if len(found) == 1:
            return found[0]
        many = f" ({len(found)} runs start with it: give more of the id)" if found else ""
        raise ModelNotFoundError(f"{ref}: no such run or model in {mlflow.get_tracking_uri()}{many}") from exc


def _by_prefix(prefix: str) -> list[Run]:
    """The runs whose id starts with `prefix` (the 8 characters `recvae compare` prints), in any experiment."""
    if len(prefix) < 6 or not all(c in "0123456789abcdef" for c in prefix):
        return []
    experiments = [e.experiment_id for e in MlflowClient().search_experiments()]
    runs = mlflow.search_runs(experiments, output_format="list", max_results=50000) if experiments else []
    return [r for r in runs if r.info.run_id.startswith(prefix)]


def run_snapshot(run: Run) -> str | None:
    """The snapshot a run was trained on: its training dataset's digest, else its snapshot_id tag."""
    for inp in run.inputs.dataset_inputs if run.inputs else ():
        if any(t.key == MLFLOW_DATASET_CONTEXT and t.value == "training" for t in inp.tags):
            return str(inp.dataset.digest)
    return run.data.tags.get(TAG_SNAPSHOT_ID)


def load_per_user(run_id: str, split: str) -> pd.DataFrame | None:
    """A run's kept per-user results on `split`, or None when it has none (evaluated before they were kept)."""
    path = per_user_artifact(split)
    folder, name = path.rsplit("/", 1)
    if not any(f.path == path for f in MlflowClient().list_artifacts(run_id, folder)):
        return None
    with tempfile.TemporaryDirectory(prefix="recvae-compare-") as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)
        return pd.read_parquet(local)


def _describe(run: Run) -> dict[str, Any]:
    return {"run_id": run.info.run_id, "run_name": run.info.run_name,
            "model_kind": run.data.tags.get(TAG_MODEL_KIND), "snapshot_id": run_snapshot(run)}


def _metrics(frames: Sequence[pd.DataFrame], wanted: Sequence[str] | None) -> list[str]:
    """The metric columns to compare: `wanted` (all must exist in the reference; 'all' for every one), else the
    default metrics the reference has."""
    columns = [c for c in frames[0].columns if c not in _NOT_METRICS]
    if wanted and list(wanted) != ["all"]:
        unknown = [m for m in wanted if m not in columns]
        if unknown:
            raise ComparisonError(f"unknown metric(s) {', '.join(unknown)}; the per-user results have: "
                                  f"{', '.join(columns)}")
        return list(wanted)
    return columns if wanted else [m for m in DEFAULT_METRICS if m in columns]


def _candidates(reference: Run, snapshot_id: str, runs: Sequence[str] | None) -> list[Run]:
    """The runs to compare with: `runs` (each on the same snapshot, else ComparisonError), else every other
    run of the reference's experiment on its snapshot, newest first."""
    if runs:
        chosen = [resolve_run(r) for r in runs]
        for ref, run in zip(runs, chosen, strict=True):
            other = run_snapshot(run)
            if other != snapshot_id:
                raise ComparisonError(f"{ref} is on snapshot {other}, the reference {reference.info.run_id} on "
                                      f"{snapshot_id}: runs on different snapshots are not compared")
        return [r for r in chosen if r.info.run_id != reference.info.run_id]
    found = mlflow.search_runs([reference.info.experiment_id], output_format="list", max_results=5000,
                               order_by=["attributes.start_time DESC"])
    return [r for r in found if r.info.run_id != reference.info.run_id and run_snapshot(r) == snapshot_id
            and _has_model(r)]


def _has_model(run: Run) -> bool:
    """A run that kept a model to compare: not a tune's study run or trial, not a failed training."""
    return run.data.tags.get(TAG_ROLE) not in NO_MODEL_ROLES and run.info.status != "FAILED"


def compare_against(
    reference: str,
    *,
    split: str = "test",
    confidence: float = 0.95,
    metrics: Sequence[str] | None = None,
    runs: Sequence[str] | None = None,
    snapshot: str | None = None,
    log: bool = True,
) -> Comparison:
    """Compare every other run on the reference's snapshot (or `runs`) with the reference, user by user, from
    their kept per-user results on `split` (see `paired_difference`); with `log`, the comparison (JSON) and a plot of
    the per-user differences (PNG) are logged into the reference run under `comparisons/`."""
    if not 0 < confidence < 1:
        raise ComparisonError(f"confidence must be between 0 and 1 (exclusive); got {confidence}")
    ref_run = resolve_run(reference)
    snapshot_id = run_snapshot(ref_run)
    if snapshot_id is None:
        raise ComparisonError(f"{reference}: run {ref_run.info.run_id} names no snapshot; nothing to compare it with")
    if snapshot is not None and snapshot != snapshot_id:
        raise ComparisonError(f"{reference} is on snapshot {snapshot_id}, not {snapshot}: runs on different "
                              "snapshots are not compared")
    ref_values = load_per_user(ref_run.info.run_id, split)
    if ref_values is None:
        raise ComparisonError(f"{reference}: run {ref_run.info.run_id} has no per-user {split} results "
                              f"({per_user_artifact(split)}); re-evaluate it: recvae evaluate --model "
                              f"runs:/{ref_run.info.run_id}/model --split {split} --log")
    names = _metrics([ref_values], metrics)
    out = Comparison(reference=_describe(ref_run), split=split, confidence=confidence)
    diffs: dict[str, np.ndarray] = {}
    for run in _candidates(ref_run, snapshot_id, runs):
        other = load_per_user(run.info.run_id, split)
        if other is None:
            out.not_comparable.append({**_describe(run), "reason": NOT_COMPARABLE})
            continue
        rows, d = _paired_rows(run, ref_values, other, names, confidence)
        out.rows += rows
        diffs[f"{run.info.run_name} ({run.info.run_id[:8]})"] = d
    if log:
        out.artifacts = _log_comparison(out, diffs, names[0] if names else "")
    return out


def _paired_rows(run: Run, ref: pd.DataFrame, other: pd.DataFrame, names: Sequence[str],
                 confidence: float) -> tuple[list[dict[str, Any]], np.ndarray]:
    """One row per metric of `run` against the reference on their common users, and the per-user differences
    of the first metric (for the plot)."""
    joined = ref.merge(other, on="user", suffixes=("_ref", "_run"))
    rows, first = [], np.zeros(0)
    for i, name in enumerate(names):
        if f"{name}_run" not in joined:
            continue
        cand, base = joined[f"{name}_run"].to_numpy(float), joined[f"{name}_ref"].to_numpy(float)
        result = paired_difference(cand, base, confidence, name)
        rows.append({**_describe(run), **result.to_dict()})
        if i == 0:
            a, b = paired_values(cand, base)
            first = a - b
    return rows, first


def _log_comparison(comparison: Comparison, diffs: dict[str, np.ndarray], metric: str) -> list[str]:
    """Log the comparison's JSON and its plot into the reference run; their artifact paths."""
    client = MlflowClient()
    run_id = comparison.reference["run_id"]
    base = f"comparisons/{comparison.split}"
    with tempfile.TemporaryDirectory(prefix="recvae-compare-") as tmp:
        doc = Path(tmp) / "comparison.json"
        doc.write_text(json.dumps(comparison.to_dict(), indent=2, default=_json_number))
        client.log_artifact(run_id, str(doc), base)
        plot = plot_differences(diffs, metric, Path(tmp) / "per_user_differences.png",
                                reference=comparison.reference["run_name"])
        client.log_artifact(run_id, str(plot), base)
    return [f"{base}/comparison.json", f"{base}/per_user_differences.png"]


def _json_number(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


def plot_differences(diffs: dict[str, np.ndarray], metric: str, path: Path, reference: str = "reference") -> Path:
    """Histograms of the per-user differences (other - reference) of `metric`, one panel per compared run, with
    the mean and zero marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(diffs), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.5), squeeze=False)
    for ax, (label, d) in zip(axes[0], diffs.items() or [("no comparable run", np.zeros(0))], strict=False):
        if len(d):
            ax.hist(d, bins=40, color="tab:blue", alpha=0.8)
            ax.axvline(float(np.mean(d)), color="tab:red", label=f"mean {np.mean(d):+.4f}")
            ax.legend(fontsize="small")
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_title(label, fontsize="small")
        ax.set_xlabel(f"{metric}: run - {reference} (per user)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

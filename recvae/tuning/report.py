"""What a study shows its users: a summary (trials by state, the best trial, its settings), the optimisation history
and the parameters' importance, as plots and JSON logged to the study's parent MLflow run."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

logger = logging.getLogger(__name__)


def summary(study: optuna.Study) -> dict[str, Any]:
    """Trials by state, and the best trial's number, value, parameters and MLflow run."""
    trials = study.get_trials(deepcopy=False)
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    out: dict[str, Any] = {"study": study.study_name, "trials": len(trials), **states}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        out.update({"best_trial": best.number, "best_val_ndcg@100": best.value, "best_params": best.params,
                    "best_overrides": best.user_attrs.get("overrides"), "best_epoch": best.user_attrs.get("best_epoch"),
                    "best_beta": best.user_attrs.get("best_beta"),
                    "best_trial_run_id": best.user_attrs.get("mlflow_run_id")})
    return out


def importances(study: optuna.Study) -> dict[str, float]:
    """Each parameter's importance to validation NDCG@100 (Optuna's default evaluator, PED-ANOVA in Optuna 5);
    empty when too few trials completed to say."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. every trial scored the same
        logger.info("parameter importances not computed: %s", exc)
        return {}


def plot_history(study: optuna.Study, path: Path) -> Path:
    """Each trial's validation NDCG@100 in order (pruned ones at their last reported value) and the best so far."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    best, best_so_far, xs = -math.inf, [], []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE and t.value is not None:
            ax.scatter(t.number, t.value, color="tab:blue", s=18, zorder=3)
            best = max(best, t.value)
        elif t.state == TrialState.PRUNED and t.intermediate_values:
            ax.scatter(t.number, max(t.intermediate_values.values()), color="tab:gray", marker="x", s=18, zorder=2)
        if best > -math.inf:
            xs.append(t.number)
            best_so_far.append(best)
    if xs:
        ax.step(xs, best_so_far, where="post", color="tab:red", label="best so far")
    ax.scatter([], [], color="tab:blue", s=18, label="complete")
    ax.scatter([], [], color="tab:gray", marker="x", s=18, label="pruned (best reported)")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation NDCG@100")
    ax.set_title(f"study {study.study_name}: optimisation history")
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_importances(values: dict[str, float], path: Path) -> Path:
    """A horizontal bar per parameter, most important on top."""
    plt = _pyplot()
    items = sorted(values.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(8, 0.4 * max(len(items), 2) + 1.2))
    if items:
        ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
        ax.set_xlabel("importance to validation NDCG@100 (normalised)")
    else:
        ax.text(0.5, 0.5, "too few complete trials to say", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("parameter importance")
    return _save(fig, path)


def log_to_parent(study: optuna.Study, work: Path, wall_s: float | None = None) -> dict[str, Any]:
    """The summary, importances and both plots into the active (parent) MLflow run; the summary returned."""
    import mlflow

    from recvae.tracking import metric_key

    out = summary(study)
    if wall_s is not None:
        out["wall_s"] = round(wall_s, 1)
    imp = importances(study)
    out["importances"] = imp
    mlflow.log_dict(out, "study/summary.json")
    mlflow.log_artifact(str(plot_history(study, work / "optimization_history.png")), "study")
    mlflow.log_artifact(str(plot_importances(imp, work / "param_importances.png")), "study")
    metrics = {f"study_{k}": float(out[k]) for k in ("trials", "complete", "pruned", "fail")}
    if "best_val_ndcg@100" in out:
        metrics[metric_key("best_val_ndcg@100")] = float(out["best_val_ndcg@100"])
        metrics["best_trial"] = float(out["best_trial"])
    mlflow.log_metrics(metrics)
    return out


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

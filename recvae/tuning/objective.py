"""One trial of a tune: a configuration sampled from the space, trained on the snapshot's training users and scored
on its validation users every epoch (what the pruner reads), logged as an MLflow child run of the study's parent.

Test users are never scored here: they are scored once, on the chosen configuration, after the study.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlflow
import optuna

from recvae import tracking
from recvae.data.snapshot import Snapshot
from recvae.data.split import choice_data
from recvae.tracking.runs import TAG_PARENT, TAG_ROLE, TAG_STUDY
from recvae.training import fit_model
from recvae.training.checks import NonFiniteLossError
from recvae.tuning.space import SearchSpace

logger = logging.getLogger(__name__)

TAG_TRIAL = "recvae.trial"
TAG_TRIAL_STATE = "recvae.trial_state"
VALUE_ATTR = "val_ndcg@100"
RUN_ATTR = "mlflow_run_id"
OVERRIDES_ATTR = "overrides"  # a trial's whole configuration as overrides: what retraining the best one needs


@dataclass
class Objective:
    """The study's objective: validation NDCG@100 of the best epoch of a configuration drawn from `space`."""

    snapshot: Snapshot
    space: SearchSpace
    experiment: str
    parent_run_id: str
    study_name: str
    base_overrides: Mapping[str, Any] | None = None
    data: tuple[Any, tuple[Any, Any]] | None = None  # choice_data(snapshot), computed once

    def __call__(self, trial: optuna.Trial) -> float:
        overrides = {**(self.base_overrides or {}), **self.space.suggest(trial)}
        config = self.space.config({}, overrides)
        trial.set_user_attr(OVERRIDES_ATTR, _plain(overrides))
        tags = {TAG_PARENT: self.parent_run_id, TAG_STUDY: self.study_name, TAG_TRIAL: str(trial.number),
                TAG_ROLE: "trial"}
        with tracking.start_run(self.experiment, run_name=f"trial-{trial.number}", tags=tags) as run:
            trial.set_user_attr(RUN_ATTR, run.info.run_id)  # now: a killed worker's run is found and ended later
            tracking.log_params(config.to_dict())
            mlflow.log_params({f"trial.{k}": v for k, v in trial.params.items()})
            epochs = tracking.EpochLogger(run.info.run_id)

            def on_epoch_end(epoch: int, record: dict[str, Any]) -> None:
                epochs(epoch, record)
                value = record.get("val_ndcg@100")
                if value is not None and math.isfinite(value):
                    trial.report(value, epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"validation NDCG@100 {value:.4f} at epoch {epoch} is below the "
                                                 "median of earlier trials")

            if self.data is None:
                self.data = choice_data(self.snapshot)
            train, validation = self.data
            try:
                result = fit_model(train, validation, config,
                                   snapshot_id=self.snapshot.snapshot_id, on_epoch_end=on_epoch_end)
            except optuna.TrialPruned:
                mlflow.set_tag(TAG_TRIAL_STATE, "PRUNED")
                _log_best(epochs.history)
                mlflow.end_run("KILLED")
                logger.info("trial %d pruned after %d epoch(s)", trial.number, len(epochs.history))
                raise
            except NonFiniteLossError as exc:
                mlflow.set_tag(TAG_TRIAL_STATE, "FAIL")
                mlflow.set_tag("recvae.failure", str(exc)[:500])
                logger.warning("trial %d diverged: %s", trial.number, exc)
                raise
            value = float(result.best_metrics["ndcg@100"])
            mlflow.log_metrics({"best_epoch": result.best_epoch,
                                **{tracking.metric_key(f"best_val_{k}"): v for k, v in result.best_metrics.items()}})
            mlflow.set_tag(TAG_TRIAL_STATE, "COMPLETE")
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("best_beta", result.best_beta)
        logger.info("trial %d: validation NDCG@100 %.4f at epoch %d", trial.number, value, result.best_epoch)
        return value


def _log_best(history: list[dict[str, float]]) -> None:
    """The best validation NDCG@100 a pruned trial reached, so that its run sorts among the others."""
    values = [h[k] for h in history for k in ("val_ndcg_at_100", "val_ndcg@100") if k in h]
    if values:
        mlflow.log_metric("best_val_ndcg_at_100", max(values))


def _plain(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-able overrides (Optuna stores user attributes as JSON)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}


def end_orphaned_runs(study: optuna.Study) -> list[str]:
    """Fail the trials whose worker stopped beating (Optuna's heartbeat grace passed), then mark KILLED the MLflow
    runs of failed trials still RUNNING (their worker died mid-trial); returns those run ids."""
    import warnings

    from mlflow import MlflowClient

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    client = MlflowClient()
    ended = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        run_id = t.user_attrs.get(RUN_ATTR)
        if run_id is None:
            continue
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status="KILLED")
            ended.append(run_id)
    if ended:
        logger.info("%d trial run(s) left RUNNING by a worker that is gone: marked KILLED", len(ended))
    return ended

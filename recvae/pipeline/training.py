"""Training steps: the challenger (resumable, reusing a finished run of the same key), its seeds and their
ensemble, and the baselines, each logged to MLflow."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recvae import paths
from recvae.config import Config, ConfigError, apply_overrides, preset
from recvae.data.split import has_choice_users
from recvae.models.kinds import RECOMMENDER_KINDS, RUN_NAMES
from recvae.pipeline.common import DEFAULT_BASELINE_GRIDS, RUN_FILE, TAG_ROLE, TAG_RUN_KEY, safe_name
from recvae.pipeline.data import load_snapshot
from recvae.pipeline.promotion import align_model, aligned_scorer
from recvae.pipeline.reports import log_evaluation
from recvae.pipeline.results import ModelRun
from recvae.tracking.registry import CHALLENGER
from recvae.tracking.runs import TAG_PARENT

logger = logging.getLogger(__name__)


def _finished_run(experiment: str, run_key: str | None) -> Any | None:
    """A finished MLflow run already made for `run_key` (Airflow retries reuse it instead of training again)."""
    if not run_key:
        return None
    import mlflow

    from recvae import tracking

    tracking.configure_if_needed()
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = mlflow.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{TAG_RUN_KEY}` = '{run_key}' and attributes.status = 'FINISHED'",
        output_format="list", max_results=1,
    )
    return runs[0] if runs else None


def _config_hash(config: Config) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:10]


def _select_on(snap: Any) -> str | None:
    """Validation users pick the epoch; the LightGCN protocol (no validation users) picks it on test as that paper
    does; with neither, the last epoch is kept."""
    if snap.has("validation"):
        return "validation"
    if snap.has("test") and snap.manifest.get("protocol") == "lightgcn":
        return "test"
    return None


def _run_summary(run: Any, kind: str) -> ModelRun:
    """The run's result: its kept model's validation score (a trained run's best epoch), test score and version."""
    m = run.data.metrics
    version = run.data.tags.get("recvae.model_version")
    name = run.data.tags.get("recvae.model_name")
    # a run registered before its name was tagged is still loaded by its own artifact
    uri = f"models:/{name}/{version}" if name and version else f"runs:/{run.info.run_id}/model"
    return ModelRun(run_id=run.info.run_id, kind=kind,
                    val_ndcg_at_100=m.get("best_val_ndcg_at_100", m.get("val_ndcg_at_100")),
                    test_ndcg_at_100=m.get("test_ndcg_at_100"), model_version=version, model_uri=uri)


def train_step(
    snapshot_dir: str | Path | None,
    *,
    overrides: dict[str, Any] | list[str] | None = None,
    kind: str = "vae",
    experiment: str = "recvae",
    model_name: str | None = "recvae",
    run_key: str | None = None,
    resume: bool = True,
    reuse_finished: bool = True,
    parent_run_id: str | None = None,
    select_on: str | None = "auto",
) -> ModelRun:
    """Train Mult-VAE (or Mult-DAE, or RecVAE) from its preset plus `overrides`, log everything to MLflow, register
    a version and point `challenger` at it.

    `run_key` names the work folder (checkpoints) and tags the run: with `resume` a killed run continues from its
    last checkpoint in the same MLflow run, and with `reuse_finished` a run already finished for the key is returned
    instead. `parent_run_id` nests the run under another (a tune's study run) in the MLflow UI. `select_on` picks the
    epoch ('auto': validation users, else the test users of the LightGCN protocol, as that paper does; None: the
    last epoch, so that test users are scored once, at the end).
    With `train.nproc` > 1 the step runs in that many processes started by torchrun; under torchrun every
    rank trains on its share of each batch, and rank 0 alone evaluates, logs, registers and returns the result."""
    from recvae.training import distributed, resolve_device

    config = apply_overrides(preset(kind), overrides or {}).validate()
    if config.train.nproc > 1 and not distributed.under_torchrun():
        distributed.check_devices(config.train.nproc, resolve_device(config.train))
        from recvae.pipeline.distributed import launch_train_step

        return launch_train_step(config.train.nproc, snapshot_dir=None if snapshot_dir is None else str(snapshot_dir),
                                 overrides=overrides, kind=kind, experiment=experiment, model_name=model_name,
                                 run_key=run_key, resume=resume, reuse_finished=reuse_finished,
                                 parent_run_id=parent_run_id, select_on=select_on)
    with distributed.session(resolve_device(config.train), config.train.dist_timeout_s) as where:
        return _train_on_ranks(config, snapshot_dir, where, kind=kind, experiment=experiment, model_name=model_name,
                               run_key=run_key, resume=resume, reuse_finished=reuse_finished,
                               parent_run_id=parent_run_id, select_on=select_on)


def _train_on_ranks(config: Config, snapshot_dir: str | Path | None, where: Any, *, kind: str, experiment: str,
                    model_name: str | None, run_key: str | None, resume: bool, reuse_finished: bool,
                    parent_run_id: str | None = None, select_on: str | None = "auto") -> ModelRun:
    """train_step in this process: alone, or as one rank (rank 0 logs and registers, its result goes to all)."""
    from recvae.training import LAST_FILE, check_memory, distributed, resolve_device, train

    snap = load_snapshot(snapshot_dir)
    key = run_key or f"{snap.snapshot_id}-{kind}-{_config_hash(config)}"

    def reused() -> ModelRun | None:
        done = _finished_run(experiment, key) if reuse_finished else None
        if done is None:
            return None
        logger.info("run key %s already trained as MLflow run %s; reusing it", key, done.info.run_id)
        return _run_summary(done, RECOMMENDER_KINDS[kind])

    summary = distributed.from_main(reused, where)
    if summary is not None:
        return summary
    check_memory(config, snap.n_items, len(snap.users), resolve_device(config.train))  # before a run is opened
    work = paths.runs_dir() / safe_name(key)
    resume = resume and (work / LAST_FILE).exists()
    if not where.main:  # trains its share, then takes rank 0's result (or its error)
        train(snap, config, work, resume=resume, select_on=_select_on(snap) if select_on == "auto" else select_on)
        return distributed.from_main(_rank0_only, where)
    return distributed.from_main(lambda: _train_and_log(config, snap, work, kind=kind, experiment=experiment,
                                                        model_name=model_name, run_key=key, resume=resume,
                                                        parent_run_id=parent_run_id, select_on=select_on), where)


def _rank0_only() -> ModelRun:
    raise AssertionError("only rank 0 runs this")


def _train_and_log(config: Config, snap: Any, work: Path, *, kind: str, experiment: str, model_name: str | None,
                   run_key: str, resume: bool, parent_run_id: str | None = None,
                   select_on: str | None = "auto") -> ModelRun:
    """Open (or reopen) the MLflow run, train, and log the metrics, curves and model; register the challenger."""
    import mlflow

    from recvae import tracking
    from recvae.pipeline.distributed import note_run
    from recvae.training import train

    resume_id = _run_to_resume(work, experiment, run_key) if resume else None
    if resume_id is None:  # the checkpoints start over: a run killed on them is over too
        tracking.end_unfinished_runs(experiment, TAG_RUN_KEY, run_key)
    tags = {TAG_RUN_KEY: run_key, TAG_ROLE: CHALLENGER, **({TAG_PARENT: parent_run_id} if parent_run_id else {})}
    with tracking.start_run(experiment, run_name=RUN_NAMES[kind], tags=tags, run_id=resume_id) as run:
        _remember_run(work, run.info.run_id)
        note_run(run.info.run_id)  # launched in N processes: the launching process ends it FAILED if they fail
        tracking.log_params(config.to_dict(), resumed=resume_id is not None)
        tracking.log_snapshot(snap)  # the same values on a resume: the checkpoint is bound to the snapshot id
        select_on = _select_on(snap) if select_on == "auto" else select_on
        epochs = tracking.EpochLogger()
        result = train(snap, config, work, resume=resume, select_on=select_on, on_epoch_end=epochs)
        epochs.log_missing(result.history)  # an epoch checkpointed by a killed process before it was logged
        rec = result.recommender
        mlflow.log_metric("best_epoch", result.best_epoch)
        for k, v in result.best_metrics.items():
            mlflow.log_metric(tracking.metric_key(f"best_{'val' if select_on == 'validation' else select_on}_{k}"), v)
        if result.best_beta is not None:
            mlflow.log_metric("best_beta", result.best_beta)
        if snap.has("test"):
            log_evaluation(rec.scores, snap, "test", rec=rec)
        tracking.plot_history(result.history, work / "training_curves.png")  # beside the checkpoints, not in /tmp
        version = _log_challenger(rec, snap, model_name)
        run_id = run.info.run_id
    return _challenger_summary(run_id, rec.kind, model_name, version)


def _remember_run(work: Path, run_id: str) -> None:
    """Write the run id beside the checkpoints (before any), so that resuming them reopens this run."""
    work.mkdir(parents=True, exist_ok=True)
    tmp = work / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps({"run_id": run_id}) + "\n")
    os.replace(tmp, work / RUN_FILE)


def _run_to_resume(work: Path, experiment: str, run_key: str) -> str | None:
    """The unfinished MLflow run the checkpoints in `work` belong to: the one recorded there, else (a folder written
    before runs were recorded) the latest unfinished run tagged with `run_key`; None starts a new run."""
    from recvae import tracking

    try:
        recorded = json.loads((work / RUN_FILE).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        unfinished = tracking.unfinished_runs(experiment, TAG_RUN_KEY, run_key)
        recorded = unfinished[0].info.run_id if unfinished else None
    return tracking.resumable_run(experiment, recorded)


def _log_challenger(rec: Any, snap: Any, model_name: str | None) -> str | None:
    """Log `rec` in the active run and, with a `model_name`, register it and point `challenger` at the version."""
    import mlflow

    from recvae import tracking

    info = tracking.log_recommender(rec, registered_model_name=model_name, snapshot=snap)
    version = str(info.registered_model_version) if model_name and info.registered_model_version else None
    if model_name and version:  # a version is only registered under a name
        mlflow.set_tags({"recvae.model_version": version, "recvae.model_name": model_name})
        tracking.set_alias(model_name, CHALLENGER, version)
    return version


def _challenger_summary(run_id: str, kind: str, model_name: str | None, version: str | None) -> ModelRun:
    """`_run_summary` plus the URI to load the model by: its registered version, or the run's artifact."""
    import mlflow

    out = _run_summary(mlflow.get_run(run_id), kind)
    return dataclasses.replace(out, model_uri=f"models:/{model_name}/{version}" if version else f"runs:/{run_id}/model")


def baseline_step(
    kind: str,
    snapshot_dir: str | Path | None,
    *,
    params: dict[str, Any] | None = None,
    experiment: str = "recvae",
    run_key: str | None = None,
) -> ModelRun:
    """Fit a baseline (hyperparameters tuned on validation users unless `params` fixes them) and log its run."""
    import mlflow

    from recvae import tracking
    from recvae.models import baselines

    done = _finished_run(experiment, run_key)
    if done is not None:
        logger.info("run key %s already fitted as MLflow run %s; reusing it", run_key, done.info.run_id)
        return _run_summary(done, kind)
    snap = load_snapshot(snapshot_dir)
    with tracking.start_run(experiment, run_name=kind, tags={TAG_RUN_KEY: run_key or "", TAG_ROLE: "baseline"}) as run:
        tracking.log_snapshot(snap)
        grid = {k: [v] for k, v in (params or {}).items()} or DEFAULT_BASELINE_GRIDS.get(kind, {})
        if has_choice_users(snap) and grid:
            best, table = baselines.tune(kind, snap, grid)
            mlflow.log_dict({"grid": table}, "tuning.json")
            if not snap.has("validation"):  # carved users: their score is the chosen point's, fitted without them
                chosen = next(row for row in table if all(row[k] == v for k, v in best.items()))
                mlflow.log_metric(tracking.metric_key("val_ndcg@100"), chosen["ndcg@100"])
        else:
            best = {k: v[0] for k, v in grid.items()}
        rec = baselines.fit_baseline(kind, snap.train, items=snap.items, **best)
        tracking.log_params(rec.params())
        if snap.has("validation"):
            log_evaluation(rec.scores, snap, "validation", rec=rec)
        if snap.has("test"):
            log_evaluation(rec.scores, snap, "test", rec=rec)
        tracking.log_recommender(rec, snapshot=snap)
        run_id = run.info.run_id
    return _run_summary(mlflow.get_run(run_id), kind)


def challenger_seeds(kind: str, overrides: dict[str, Any] | list[str] | None, n_runs: int, *,
                     tuned: bool = False) -> list[int]:
    """Seeds of the challenger's extra runs: the configured train.seed + 1, ..., + n_runs - 1 (none after a tune,
    whose challenger is its best trial's configuration, not the configured one)."""
    if n_runs < 1:
        raise ConfigError(f"seeds must be >= 1; got {n_runs}")
    if tuned:
        if n_runs > 1:
            logger.warning("seeds=%d ignored: a tuned challenger is its study's best trial, retrained once", n_runs)
        return []
    base = apply_overrides(preset(kind), overrides or {}).train.seed
    return [base + i for i in range(1, n_runs)]


def combine_challengers(
    first: Mapping[str, Any],
    extra: list[Mapping[str, Any]],
    snapshot_dir: str | Path | None,
    *,
    experiment: str = "recvae",
    model_name: str | None = "recvae",
    run_key: str | None = None,
) -> ModelRun:
    """The challenger to promote: the one trained run, or with `extra` runs (other seeds) the ensemble of all."""
    if not extra:
        return ModelRun.of(first)
    uris = [f"models:/{model_name}/{m['model_version']}" if model_name and m.get("model_version")
            else f"runs:/{m['run_id']}/model" for m in [first, *extra]]
    return ensemble_step(uris, snapshot_dir, experiment=experiment, model_name=model_name, run_key=run_key)


def ensemble_step(
    model_uris: list[str],
    snapshot_dir: str | Path | None,
    *,
    experiment: str = "recvae",
    model_name: str | None = "recvae",
    run_key: str | None = None,
) -> ModelRun:
    """Combine trained models (e.g. one config's seeds) into an `Ensemble`, evaluate it, log it as its own run,
    register a version and point `challenger` at it (a run already finished for `run_key` is returned instead)."""
    import mlflow

    from recvae import tracking
    from recvae.models.ensemble import Ensemble

    if len(model_uris) < 2:
        raise ConfigError(f"an ensemble needs at least 2 models; got {len(model_uris)}")
    done = _finished_run(experiment, run_key)
    if done is not None:
        logger.info("run key %s already combined as MLflow run %s; reusing it", run_key, done.info.run_id)
        return _run_summary(done, Ensemble.kind)
    snap = load_snapshot(snapshot_dir)
    members, described = [], []
    for uri in model_uris:
        rec, info = tracking.load_recommender_from_uri(uri)
        if info.snapshot_id not in (None, snap.snapshot_id):
            raise ConfigError(f"{uri} was trained on snapshot {info.snapshot_id}, not on {snap.snapshot_id}")
        members.append(rec)
        described.append({"uri": uri, "run_id": info.run_id, "kind": info.kind})
    try:
        ens = Ensemble(members)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    not_logits = sorted({m.kind for m in members} - set(RECOMMENDER_KINDS.values()))
    if not_logits:
        logger.warning("ensemble members of kind %s do not score with logits: the softmax of their scores is a ranking "
                       "device, not their distribution, and their scale weighs them", ", ".join(not_logits))
    scorer = aligned_scorer(ens, align_model(ens, snap, "the ensemble"))
    tags = {TAG_RUN_KEY: run_key or "", TAG_ROLE: CHALLENGER}
    with tracking.start_run(experiment, run_name="ensemble", tags=tags) as run:
        mlflow.log_params({"n_members": len(members), "members": ", ".join(model_uris)[:6000]})
        mlflow.log_dict({"members": described}, "members.json")
        tracking.log_snapshot(snap)
        if snap.has("validation"):
            log_evaluation(scorer, snap, "validation", rec=ens)
        if snap.has("test"):
            log_evaluation(scorer, snap, "test", rec=ens)
        version = _log_challenger(ens, snap, model_name)
        run_id = run.info.run_id
    return _challenger_summary(run_id, ens.kind, model_name, version)

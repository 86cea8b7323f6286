"""The pipeline's steps, shared by `recvae pipeline` and the Airflow tasks: each is idempotent for a run key and
passes small JSON-able references (paths, run ids, batch keys), never data."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from recvae import paths
from recvae.config import Config, ConfigError, apply_overrides, preset
from recvae.models.kinds import BASELINE_KINDS, RECOMMENDER_KINDS, RUN_NAMES

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_RUN_KEY = "recvae.run_key"
TAG_ROLE = "recvae.role"
TAG_PROMOTION = "recvae.promotion"
RUN_FILE = "mlflow_run.json"  # in a training's work folder: the MLflow run its checkpoints belong to
DEFAULT_BASELINE_GRIDS: dict[str, dict[str, list[Any]]] = {
    "popularity": {},
    "ease": {"lam": [250.0, 500.0, 1000.0]},
    "als": {"factors": [64], "regularization": [1.0, 10.0, 50.0], "alpha": [1.0, 10.0]},
}


def latest_snapshot() -> Path | None:
    """The most recently built snapshot (its id maps seed the next build so item indices stay stable)."""
    pointer = paths.snapshots_dir() / "LATEST"
    if pointer.exists():
        path = paths.snapshots_dir() / pointer.read_text().strip()
        if (path / "manifest.json").exists():
            return path
    return None


def _mark_latest(path: Path) -> None:
    tmp = paths.snapshots_dir() / ".LATEST.tmp"
    tmp.write_text(path.name)
    os.replace(tmp, paths.snapshots_dir() / "LATEST")


def _config(overrides: dict[str, Any] | list[str] | None) -> Config:
    return apply_overrides(Config(), overrides or {}).validate()


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:120]


# ------------------------------------------------------------------------------------------ data


def prepare_step(
    *,
    dataset: str | None = "synthetic",
    input_path: str | None = None,
    input_format: str | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    run_key: str | None = None,
) -> dict[str, Any]:
    """Ingest, validate and split into a snapshot under `paths.snapshots_dir()`; the same data gives the same snapshot."""
    from recvae.data.prepare import Source, prepare

    config = _config(overrides)
    source = Source(dataset=None if input_path else dataset, path=input_path, format=input_format)
    previous = latest_snapshot()
    snap = prepare(source, None, config, previous=previous)
    out = paths.snapshots_dir() / snap.snapshot_id
    snap.save(out)
    _mark_latest(out)
    logger.info("snapshot %s at %s (run %s)", snap.snapshot_id, out, run_key)
    return {"snapshot_dir": str(out), "snapshot_id": snap.snapshot_id, "n_users": len(snap.users), "n_items": snap.n_items}


def _load_snapshot(snapshot_dir: str | Path | None):
    from recvae.data.snapshot import Snapshot, SnapshotError

    path = Path(snapshot_dir) if snapshot_dir else latest_snapshot()
    if path is None:
        raise SnapshotError(f"no snapshot given and none built yet under {paths.snapshots_dir()}; run `recvae prepare` first")
    return Snapshot.load(path)


# ------------------------------------------------------------------------------------------ training


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


def _run_summary(run: Any, kind: str) -> dict[str, Any]:
    m = run.data.metrics
    return {
        "run_id": run.info.run_id,
        "kind": kind,
        "val_ndcg@100": m.get("best_val_ndcg_at_100", m.get("val_ndcg_at_100")),
        "test_ndcg@100": m.get("test_ndcg_at_100"),
        "model_version": run.data.tags.get("recvae.model_version"),
    }


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
) -> dict[str, Any]:
    """Train Mult-VAE (or Mult-DAE, or RecVAE) from its preset plus `overrides`, log everything to MLflow, register a version and point `challenger` at it.

    `run_key` names the work folder (checkpoints) and tags the run: with `resume` a killed run continues from its
    last checkpoint in the same MLflow run, and with `reuse_finished` a run already finished for the key is returned
    instead."""
    import mlflow

    from recvae import tracking
    from recvae.evaluation.metrics import evaluate
    from recvae.training import LAST_FILE, check_memory, resolve_device, train

    config = apply_overrides(preset(kind), overrides or {}).validate()
    snap = _load_snapshot(snapshot_dir)
    run_key = run_key or f"{snap.snapshot_id}-{kind}-{_config_hash(config)}"
    done = _finished_run(experiment, run_key) if reuse_finished else None
    if done is not None:
        logger.info("run key %s already trained as MLflow run %s; reusing it", run_key, done.info.run_id)
        return _run_summary(done, RECOMMENDER_KINDS[kind])
    check_memory(config, snap.n_items, len(snap.users), resolve_device(config.train))  # before a run is opened
    work = paths.runs_dir() / _safe(run_key)
    resume = resume and (work / LAST_FILE).exists()
    resume_id = _run_to_resume(work, experiment, run_key) if resume else None
    if resume_id is None:  # the checkpoints start over: a run killed on them is over too
        tracking.end_unfinished_runs(experiment, TAG_RUN_KEY, run_key)
    tags = {TAG_RUN_KEY: run_key, TAG_ROLE: CHALLENGER}
    with tracking.start_run(experiment, run_name=RUN_NAMES[kind], tags=tags, run_id=resume_id) as run:
        _remember_run(work, run.info.run_id)
        tracking.log_params(config.to_dict(), resumed=resume_id is not None)
        tracking.log_snapshot(snap)  # the same values on a resume: the checkpoint is bound to the snapshot id
        select_on = _select_on(snap)
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
            tracking.log_test_metrics(evaluate(rec.scores, *snap.heldout("test")))
        tracking.plot_history(result.history)
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
    if version:
        mlflow.set_tag("recvae.model_version", version)
        tracking.set_alias(model_name, CHALLENGER, version)
    return version


def _challenger_summary(run_id: str, kind: str, model_name: str | None, version: str | None) -> dict[str, Any]:
    """`_run_summary` plus the URI to load the model by: its registered version, or the run's artifact."""
    import mlflow

    out = _run_summary(mlflow.get_run(run_id), kind)
    out["model_uri"] = f"models:/{model_name}/{version}" if version else f"runs:/{run_id}/model"
    return out


def baseline_step(
    kind: str,
    snapshot_dir: str | Path | None,
    *,
    params: dict[str, Any] | None = None,
    experiment: str = "recvae",
    run_key: str | None = None,
) -> dict[str, Any]:
    """Fit a baseline (hyperparameters tuned on validation users unless `params` fixes them) and log its run."""
    import mlflow

    from recvae import tracking
    from recvae.evaluation.metrics import evaluate
    from recvae.models import baselines

    done = _finished_run(experiment, run_key)
    if done is not None:
        logger.info("run key %s already fitted as MLflow run %s; reusing it", run_key, done.info.run_id)
        return _run_summary(done, kind)
    snap = _load_snapshot(snapshot_dir)
    with tracking.start_run(experiment, run_name=kind, tags={TAG_RUN_KEY: run_key or "", TAG_ROLE: "baseline"}) as run:
        tracking.log_snapshot(snap)
        grid = {k: [v] for k, v in (params or {}).items()} or DEFAULT_BASELINE_GRIDS.get(kind, {})
        if snap.has("validation") and grid:
            best, table = baselines.tune(kind, snap, grid)
            mlflow.log_dict({"grid": table}, "tuning.json")
        else:
            best = {k: v[0] for k, v in grid.items()}
        rec = baselines.fit_baseline(kind, snap.train, items=snap.items, **best)
        tracking.log_params(rec.params())
        if snap.has("validation"):
            tracking.log_test_metrics(evaluate(rec.scores, *snap.heldout("validation")), prefix="val_")
        if snap.has("test"):
            tracking.log_test_metrics(evaluate(rec.scores, *snap.heldout("test")))
        tracking.log_recommender(rec, snapshot=snap)
        run_id = run.info.run_id
    return _run_summary(mlflow.get_run(run_id), kind)


def challenger_seeds(kind: str, overrides: dict[str, Any] | list[str] | None, n_runs: int) -> list[int]:
    """Seeds of the challenger's extra runs: the configured train.seed + 1, ..., + n_runs - 1."""
    if n_runs < 1:
        raise ConfigError(f"seeds must be >= 1; got {n_runs}")
    base = apply_overrides(preset(kind), overrides or {}).train.seed
    return [base + i for i in range(1, n_runs)]


def combine_challengers(
    first: dict[str, Any],
    extra: list[dict[str, Any]],
    snapshot_dir: str | Path | None,
    *,
    experiment: str = "recvae",
    model_name: str | None = "recvae",
    run_key: str | None = None,
) -> dict[str, Any]:
    """The challenger to promote: the one trained run, or with `extra` runs (other seeds) the ensemble of all."""
    if not extra:
        return first
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
) -> dict[str, Any]:
    """Combine trained models (e.g. one config's seeds) into an `Ensemble`, evaluate it, log it as its own run,
    register a version and point `challenger` at it (a run already finished for `run_key` is returned instead)."""
    import mlflow

    from recvae import tracking
    from recvae.evaluation.metrics import evaluate
    from recvae.models.ensemble import Ensemble

    if len(model_uris) < 2:
        raise ConfigError(f"an ensemble needs at least 2 models; got {len(model_uris)}")
    done = _finished_run(experiment, run_key)
    if done is not None:
        logger.info("run key %s already combined as MLflow run %s; reusing it", run_key, done.info.run_id)
        return _run_summary(done, Ensemble.kind)
    snap = _load_snapshot(snapshot_dir)
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
    with tracking.start_run(experiment, run_name="ensemble", tags={TAG_RUN_KEY: run_key or "", TAG_ROLE: CHALLENGER}) as run:
        mlflow.log_params({"n_members": len(members), "members": ", ".join(model_uris)[:6000]})
        mlflow.log_dict({"members": described}, "members.json")
        tracking.log_snapshot(snap)
        if snap.has("validation"):
            tracking.log_test_metrics(evaluate(scorer, *snap.heldout("validation")), prefix="val_")
        if snap.has("test"):
            tracking.log_test_metrics(evaluate(scorer, *snap.heldout("test")))
        version = _log_challenger(ens, snap, model_name)
        run_id = run.info.run_id
    return _challenger_summary(run_id, ens.kind, model_name, version)


# ------------------------------------------------------------------------------------------ promotion


def evaluate_model_uri(
    model_uri: str, snapshot_dir: str | Path | None, split: str = "validation", *, allow_other_items: bool = False
) -> dict[str, float]:
    """Metrics of a logged/registered model on a snapshot's held-out users (item columns aligned by raw id), with
    `n_items` and `n_items_known` (the snapshot's items, and those the model knows). A model trained on other
    items raises ItemMismatchError unless `allow_other_items`; items it does not know then score -inf."""
    from recvae import tracking
    from recvae.evaluation.metrics import evaluate

    snap = _load_snapshot(snapshot_dir)
    rec, _ = tracking.load_recommender_from_uri(model_uri)
    alignment = align_model(rec, snap, model_uri, allow_other=allow_other_items)
    result = evaluate(aligned_scorer(rec, alignment), *snap.heldout(split))
    return {**result.means, **{f"{k}_stderr": v for k, v in result.stderr.items()}, "n_users": result.n_users,
            "n_items": alignment.n_items, "n_items_known": alignment.n_known}


def align_model(rec: Any, snap: Any, model_uri: str, *, allow_other: bool = False) -> Any:
    """The `ItemAlignment` of a model's items to a snapshot's; ItemMismatchError (naming `model_uri`) when the model
    was trained on other items, unless `allow_other`."""
    from recvae.serving.items import align_items

    return align_items(rec.items, rec.n_items, snap.items, model=model_uri, snapshot_id=snap.snapshot_id,
                       allow_other=allow_other)


def aligned_scorer(rec: Any, alignment: Any) -> Any:
    """A score function over the snapshot's columns of `alignment` for a model trained on other (e.g. older) item
    ids; items the model does not know score -inf."""
    import numpy as np
    import torch

    if alignment.identical:
        return rec.scores
    pos = alignment.positions  # model column of each snapshot item
    known = np.flatnonzero(pos >= 0)
    src = torch.from_numpy(pos[known])
    dst = torch.from_numpy(known)

    def score(X):  # X has the snapshot's columns
        import scipy.sparse as sp

        Xk = X[:, known].tocsr()
        Xm = sp.csr_matrix((Xk.data, pos[known][Xk.indices], Xk.indptr), shape=(X.shape[0], rec.n_items))
        s = rec.scores(Xm)
        out = torch.full((X.shape[0], X.shape[1]), -torch.inf, dtype=s.dtype)
        out[:, dst] = s[:, src]
        return out

    return score


MIN_CHAMPION_ITEM_OVERLAP = 0.5
"""Least share of items the champion and the snapshot must have in common (of the champion's items, and of the
snapshot's) for a challenger to be compared with it. Below it the champion was trained on other data: on this
snapshot's validation users it ranks items it never saw or misses most of them, so its NDCG@100 measures the two
catalogs, not the two models (a champion of the other data set, synthetic vs ML-100K, scored 0.0674 and lost to
it). A weekly snapshot built on the previous one keeps every item and adds a few, so a true successor stays near
1.0 both ways."""


def champion_item_overlap(alignment: Any) -> dict[str, Any]:
    """How far a champion's items and a snapshot's agree (from their `ItemAlignment`), for the decision and logs."""
    share = min(alignment.model_fraction, alignment.fraction)
    return {"champion_items": alignment.n_model_items, "snapshot_items": alignment.n_items,
            "common_items": alignment.n_known, "of_champion": round(alignment.model_fraction, 4),
            "of_snapshot": round(alignment.fraction, 4), "share": round(share, 4),
            "comparable": share >= MIN_CHAMPION_ITEM_OVERLAP}


def _champion_on_snapshot(model_name: str, version: str, snapshot_dir: str | Path | None) -> tuple[float | None, dict]:
    """The champion's validation NDCG@100 on the snapshot (None when its items overlap the snapshot's too little
    to compare, see MIN_CHAMPION_ITEM_OVERLAP) and the overlap. Items it does not know score -inf (and cost it)."""
    from recvae import tracking
    from recvae.evaluation.metrics import evaluate

    uri = f"models:/{model_name}/{version}"
    snap = _load_snapshot(snapshot_dir)
    rec, _ = tracking.load_recommender_from_uri(uri)
    alignment = align_model(rec, snap, uri, allow_other=True)
    overlap = champion_item_overlap(alignment)
    logger.info("champion v%s on snapshot %s: %s of its %s items are in the snapshot, which has %s (overlap %.1f%%)",
                version, snap.snapshot_id, overlap["common_items"], overlap["champion_items"],
                overlap["snapshot_items"], 100 * overlap["share"])
    if not overlap["comparable"]:
        return None, overlap
    return float(evaluate(aligned_scorer(rec, alignment), *snap.heldout("validation")).means["ndcg@100"]), overlap


def _tag_decision(run_id: str, outcome: str, reason: str, overlap: dict[str, Any] | None) -> None:
    """Record the promotion decision (and the champion's item overlap) as tags of the challenger's MLflow run."""
    import mlflow

    from recvae import tracking

    tracking.configure_if_needed()
    tags = {TAG_PROMOTION: outcome, f"{TAG_PROMOTION}.reason": reason[:5000]}
    if overlap is not None:
        tags[f"{TAG_PROMOTION}.champion_item_overlap"] = f"{overlap['share']:.4f}"
        tags[f"{TAG_PROMOTION}.champion_items"] = (f"{overlap['common_items']} in common of the champion's "
                                                   f"{overlap['champion_items']} and the snapshot's "
                                                   f"{overlap['snapshot_items']}")
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def _refusal(model_name: str, version: str, current: str, overlap: dict[str, Any]) -> str:
    """Why a challenger is not compared with a champion of other items, and how to replace that champion."""
    return (f"refused to compare challenger v{version} with champion v{current} of {model_name}: the champion was "
            f"trained on other items ({overlap['common_items']} in common of its {overlap['champion_items']} and the "
            f"snapshot's {overlap['snapshot_items']}, {overlap['share']:.1%} < {MIN_CHAMPION_ITEM_OVERLAP:.0%}); to "
            "replace it, set replace_champion_of_other_items (recvae pipeline --replace-champion-of-other-items)")


def promote_step(
    challenger: dict[str, Any],
    baselines: list[dict[str, Any]],
    *,
    snapshot_dir: str | Path | None,
    model_name: str = "recvae",
    margin: float = 0.0,
    replace_champion_of_other_items: bool = False,
) -> dict[str, Any]:
    """Point `champion` at the challenger only if its validation NDCG@100 beats the current champion (re-evaluated
    on the same validation users) and every baseline by `margin`; the reason and the champion's item overlap are
    logged, tagged on the challenger's run and returned.

    A champion whose items overlap the snapshot's too little (MIN_CHAMPION_ITEM_OVERLAP) was trained on other data
    and is not compared: ItemMismatchError, unless `replace_champion_of_other_items`, when the challenger only has
    to beat the baselines."""
    from recvae import tracking
    from recvae.serving.items import ItemMismatchError

    score = challenger.get("val_ndcg@100")
    version = challenger.get("model_version")
    if score is None or version is None:
        raise ValueError(f"challenger {challenger.get('run_id')} has no validation NDCG@100 or registered version")
    rivals: list[tuple[str, float]] = [(f"baseline {b['kind']}", float(b["val_ndcg@100"])) for b in baselines
                                       if b.get("val_ndcg@100") is not None]
    current = tracking.get_alias(model_name, CHAMPION)
    overlap, replaced = None, None
    if current is not None and current != str(version):
        champion_score, overlap = _champion_on_snapshot(model_name, current, snapshot_dir)
        if champion_score is not None:
            rivals.append((f"champion v{current}", champion_score))
        elif replace_champion_of_other_items:
            replaced = current
        else:
            reason = _refusal(model_name, version, current, overlap)
            _tag_decision(challenger["run_id"], "refused", reason, overlap)
            raise ItemMismatchError(reason)
    losses = [f"{name} ({value:.4f})" for name, value in rivals if not score > value + margin]
    if losses:
        promoted = False
        reason = (f"kept the champion: challenger v{version} validation NDCG@100 {score:.4f} does not beat "
                  f"{', '.join(losses)} by the margin {margin}")
    else:
        promoted = True
        beaten = ", ".join(f"{n} ({v:.4f})" for n, v in rivals) or "nothing (first model)"
        reason = f"promoted challenger v{version}: validation NDCG@100 {score:.4f} beats {beaten} by > {margin}"
        if replaced:
            reason += (f", replacing champion v{replaced} of other items ({overlap['share']:.1%} in common) as "
                       "replace_champion_of_other_items asked")
        tracking.promote(model_name, version, CHAMPION)
    logger.info(reason)
    _tag_decision(challenger["run_id"], "promoted" if promoted else "rejected", reason, overlap)
    return {"promoted": promoted, "reason": reason, "version": str(version), "model_name": model_name,
            "run_id": challenger["run_id"], "val_ndcg@100": float(score),
            "model_uri": f"models:/{model_name}@{CHAMPION}", "champion_version": str(version) if promoted else current,
            "previous_champion": current, "champion_overlap": overlap, "replaced_champion_of_other_items": replaced}


# ------------------------------------------------------------------------------------------ scoring


AIRFLOW_VARIABLES = {"recvae_home": paths.HOME_ENV, "recvae_mlflow_tracking_uri": paths.TRACKING_URI_ENV}


def use_airflow_variables(*, configure_tracking: bool = True) -> dict[str, str]:
    """Inside an Airflow task: Variables `recvae_home` and `recvae_mlflow_tracking_uri`, when set, override the
    environment for this task (unset Variables leave the environment's or the embedded defaults). Then URL
    passwords are masked in the task's log and, with `configure_tracking`, MLflow's log records go to the task log
    at their own level and MLflow is pointed at its store, creating a new SQLite store once under a file lock: the
    retrain DAG's first task does it before the parallel training tasks start."""
    from airflow.sdk import Variable

    from recvae.log import install_secret_masking

    install_secret_masking()
    applied = {}
    for name, env in AIRFLOW_VARIABLES.items():
        value = Variable.get(name, default=None)
        if value:
            os.environ[env] = str(value)
            applied[env] = str(value)
    if configure_tracking:
        from recvae import tracking

        tracking.route_mlflow_logs()
        tracking.configure()
    return applied


def db_url_from_connection(conn_id: str | None = "recvae_db") -> str:
    """The recommendations DB URL: an Airflow Connection, else $RECVAE_DB_URL, else SQLite under the local home."""
    if conn_id:
        try:
            from airflow.sdk import Connection

            conn = Connection.get(conn_id)
            url = conn.get_uri()
            if url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url[len("postgres://"):]
            return url
        except Exception as exc:  # no Airflow context or no such connection: fall back to the embedded default
            logger.info("connection %r not available (%s); using the default database", conn_id, type(exc).__name__)
    return paths.default_db_url()


def check_db_step(db_url: str) -> dict[str, Any]:
    """Connect to the recommendations database and create or check its tables; StoreError (masked URL) if it
    cannot be used, so a job fails before its expensive steps rather than after them."""
    from recvae.serving.store import RecommendationStore

    with RecommendationStore(db_url) as store:
        store.check_connection()
        store.ensure_schema()
        logger.info("recommendations database %s is ready", store.url_masked)
        return {"db": store.url_masked}


def begin_score_step(
    *,
    model_uri: str,
    snapshot_dir: str | Path | None,
    top_n: int,
    n_shards: int,
    db_url: str,
    batch_key: str,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Check the model and snapshot belong together, then open (or reuse) the staging batch for `batch_key`.

    An alias (models:/NAME@champion) is resolved here once: the batch carries the version's own URI, so every shard
    scores that version even if a promotion moves the alias meanwhile."""
    from recvae import tracking
    from recvae.serving.store import RecommendationStore

    snap = _load_snapshot(snapshot_dir)
    rec, info = tracking.load_recommender_from_uri(model_uri)
    align_model(rec, snap, model_uri)
    if info.name and info.version:
        model_uri = f"models:/{info.name}/{info.version}"
    with RecommendationStore(db_url) as store:
        batch = store.begin_batch(
            batch_key, model_name=model_name or info.name or info.kind, top_n=top_n, n_items=rec.n_items,
            model_version=info.version, run_id=info.run_id, snapshot_id=snap.snapshot_id, n_shards=n_shards,
        )
        if not batch.done:  # a published batch's titles never change
            load_titles(store, snap, batch)
    return {"batch_key": batch_key, "batch_id": batch.batch_id, "done": batch.done, "model_uri": model_uri,
            "model_name": model_name or info.name or info.kind, "model_version": info.version, "run_id": info.run_id,
            "snapshot_dir": str(snap.path), "snapshot_id": snap.snapshot_id, "top_n": top_n, "n_shards": n_shards}


def item_metadata(snap: Any) -> Any:
    """Item titles (a DataFrame: item_id, title, genres) when the snapshot's source folder (or its parent) has
    MovieLens metadata (movies.dat, u.item), else None."""
    from recvae.serving.store import read_item_metadata

    path = (snap.manifest.get("source") or {}).get("path")
    if not path or "://" in str(path):
        return None
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    for candidate in (folder, folder.parent):
        if (candidate / "movies.dat").exists() or (candidate / "u.item").exists():
            return read_item_metadata(candidate)
    return None


def load_titles(store: Any, snap: Any, batch: Any) -> int:
    """Set the titles of staging `batch` from the snapshot's metadata (see `item_metadata`); titles written."""
    meta = item_metadata(snap)
    return 0 if meta is None else store.write_items(batch, meta)


def score_shard_step(batch: dict[str, Any], shard: int, *, db_url: str, chunk_size: int | None = None) -> dict[str, Any]:
    """Score shard `shard` of the batch's users into staging (a re-run replaces that shard's rows)."""
    from recvae import tracking
    from recvae.serving.recommend import default_chunk_size, recommend_to_store
    from recvae.serving.store import RecommendationStore

    if batch.get("done"):
        return {"shard": shard, "rows": 0, "skipped": "batch already published"}
    snap = _load_snapshot(batch["snapshot_dir"])
    rec, _ = tracking.load_recommender_from_uri(batch["model_uri"])
    with RecommendationStore(db_url) as store:
        summary = recommend_to_store(
            rec, snap, store, batch["top_n"], batch["batch_key"], batch["model_name"],
            model_version=batch["model_version"], run_id=batch["run_id"], snapshot_id=batch["snapshot_id"],
            chunk_size=chunk_size or default_chunk_size(rec.n_items), shard=shard, n_shards=batch["n_shards"],
            publish=False, items=snap.items,
        )
    return {"shard": shard, **summary.to_dict()}


def publish_step(batch: dict[str, Any], *, db_url: str, retention: int | None = None) -> dict[str, Any]:
    """Check the staging batch holds every shard's rows and make it current in one transaction."""
    from recvae.serving.store import RecommendationStore

    with RecommendationStore(db_url) as store:
        summary = store.publish(batch["batch_key"], n_shards=batch["n_shards"], keep=retention)
    logger.info("published batch %s", summary.to_dict())
    return summary.to_dict()


# ------------------------------------------------------------------------------------------ the main job


def run_pipeline(
    *,
    dataset: str | None = "synthetic",
    input_path: str | None = None,
    input_format: str | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    baselines: list[str] | tuple[str, ...] = BASELINE_KINDS,
    margin: float = 0.0,
    top_n: int = 100,
    db_url: str | None = None,
    experiment: str = "recvae",
    model_name: str = "recvae",
    kind: str = "vae",
    replace_champion_of_other_items: bool = False,
) -> dict[str, Any]:
    """prepare -> train the challenger (`kind`: vae, dae or recvae) and the baselines -> promote (see `promote_step`)
    -> score every user -> publish, in one process."""
    import uuid

    db_url = db_url or paths.default_db_url()
    check_db_step(db_url)  # an unreachable database fails in seconds, before anything is trained or promoted
    key = uuid.uuid4().hex[:12]
    snap = prepare_step(dataset=dataset, input_path=input_path, input_format=input_format, overrides=overrides)
    challenger = train_step(snap["snapshot_dir"], overrides=overrides, kind=kind, experiment=experiment,
                            model_name=model_name, run_key=f"pipeline-{key}-{kind}")
    fitted = [baseline_step(kind, snap["snapshot_dir"], experiment=experiment, run_key=f"pipeline-{key}-{kind}")
              for kind in baselines]
    decision = promote_step(challenger, fitted, snapshot_dir=snap["snapshot_dir"], model_name=model_name, margin=margin,
                            replace_champion_of_other_items=replace_champion_of_other_items)
    champion = decision["model_uri"] if decision["champion_version"] else None
    batch: dict[str, Any] = {"status": "no champion to score with"}
    if champion:
        b = begin_score_step(model_uri=champion, snapshot_dir=snap["snapshot_dir"], top_n=top_n, n_shards=1,
                             db_url=db_url, batch_key=f"pipeline-{key}", model_name=model_name)
        score_shard_step(b, 0, db_url=db_url)
        batch = publish_step(b, db_url=db_url)
    return {"snapshot": snap, "models": [challenger, *fitted], "decision": decision, "batch": batch}

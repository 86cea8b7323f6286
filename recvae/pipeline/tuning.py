"""The tune steps: set up a study and its parent MLflow run, run trials (any number of workers at once), then log
the study and retrain its best configuration as the challenger (test users scored once, on that model only).

`tune_step` runs the three in one process (`recvae tune`); the DAG runs `tune_setup_step`, mapped
`tune_trials_step`s and `tune_finish_step`. The storage URL is passed to each step, never returned: it may hold a
password, and step results travel as Airflow XComs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recvae import paths
from recvae.config import ConfigError, apply_overrides, preset
from recvae.data.split import has_choice_users
from recvae.pipeline.common import safe_name
from recvae.pipeline.data import load_snapshot
from recvae.pipeline.results import ModelRun, TuneResult
from recvae.pipeline.training import train_step
from recvae.tracking.runs import TAG_ROLE, TAG_STUDY

logger = logging.getLogger(__name__)

SpaceArg = str | Path | Mapping[str, Any] | None


def default_study_name(snapshot_id: str, kind: str) -> str:
    """One study per snapshot and model kind unless named."""
    return f"{snapshot_id}-{kind}"


def _space(kind: str, space: SpaceArg, study: Any = None) -> Any:
    """The search space: the user's narrowing of the kind's defaults, else the one a resumed study recorded."""
    from recvae.tuning import ATTR_SPACE, load_space, space_from_dict

    if space is None and study is not None and study.user_attrs.get(ATTR_SPACE):
        return space_from_dict(kind, study.user_attrs[ATTR_SPACE])
    return load_space(kind, space)


def _base(kind: str, overrides: Mapping[str, Any] | list[str] | None) -> dict[str, Any]:
    """Overrides every trial shares (`--set`), checked now: the device, threads, a seed."""
    if not overrides:
        return {}
    apply_overrides(preset(kind), dict(overrides) if isinstance(overrides, Mapping) else list(overrides)).validate()
    if isinstance(overrides, Mapping):
        return dict(overrides)
    from recvae.config import split_assignment

    return dict(split_assignment(o, "SECTION.FIELD=VALUE") for o in overrides)


def tune_setup_step(snapshot_dir: str | Path | None, *, kind: str = "vae", study: str | None = None,
                    storage: str | None = None, space: SpaceArg = None, resume: bool = False,
                    overrides: Mapping[str, Any] | list[str] | None = None, experiment: str = "recvae",
                    seed: int = 0) -> dict[str, Any]:
    """Create (or with `resume` reopen) the study and its parent MLflow run; returns the study's name, parent run id
    and snapshot folder. Refuses a snapshot without validation users: trials are chosen on them."""
    from recvae import tracking
    from recvae.tuning import ATTR_EXPERIMENT, ATTR_PARENT, open_study, study_lock, study_ref

    snap = load_snapshot(snapshot_dir)
    if not has_choice_users(snap):
        raise ConfigError(f"snapshot {snap.snapshot_id} has no validation users: a tune chooses on them (prepare a "
                          "strong-generalization or temporal split)")
    base = _base(kind, overrides)
    ref = study_ref(study or default_study_name(snap.snapshot_id, kind), storage)
    chosen = _space(kind, space) if space is not None or not resume else None
    if chosen is not None:
        chosen.check(base)
    with study_lock(ref):
        st = open_study(ref, resume=resume, snapshot_id=snap.snapshot_id, kind=kind,
                        space=chosen.to_dict() if chosen is not None else None, seed=seed)
        parent = st.user_attrs.get(ATTR_PARENT)
        if parent is None:
            tags = {TAG_ROLE: "tune", TAG_STUDY: ref.name}
            with tracking.start_run(experiment, run_name=f"tune-{kind}", tags=tags) as run:
                tracking.log_snapshot(snap)
                tracking.log_params({"study": ref.name, "storage": ref.shown, "kind": kind, "base": base})
                import mlflow

                mlflow.log_dict(_space(kind, None, st).to_dict(), "study/space.json")
                parent = run.info.run_id
            st.set_user_attr(ATTR_PARENT, parent)
            st.set_user_attr(ATTR_EXPERIMENT, experiment)
    return {"study": ref.name, "parent_run_id": parent, "snapshot_dir": str(snap.path), "kind": kind}


def tune_trials_step(snapshot_dir: str | Path | None, study: str, *, trials: int, kind: str = "vae",
                     storage: str | None = None, timeout: float | None = None, worker: int = 0,
                     overrides: Mapping[str, Any] | list[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Run trials of a set-up study until it has `trials` complete or pruned ones in all (across workers and
    resumes) or `timeout` seconds pass; returns how many this worker ran and the study's count."""
    import optuna

    from recvae.training.checks import NonFiniteLossError
    from recvae.tuning import (
        ATTR_EXPERIMENT,
        ATTR_PARENT,
        COUNTED,
        Objective,
        counted_trials,
        open_study,
        study_ref,
    )

    if trials < 1:
        raise ConfigError(f"trials must be >= 1; got {trials}")
    snap = load_snapshot(snapshot_dir)
    ref = study_ref(study, storage)
    st = open_study(ref, resume=True, snapshot_id=snap.snapshot_id, kind=kind, space=None, seed=seed,
                    worker=worker)
    parent = st.user_attrs.get(ATTR_PARENT)
    if parent is None:
        raise ConfigError(f"study {ref.name!r} in {ref.shown} has no parent run: set it up first (recvae tune)")
    objective = Objective(snap, _space(kind, None, st), st.user_attrs.get(ATTR_EXPERIMENT, "recvae"), parent, ref.name,
                          _base(kind, overrides))
    before = counted_trials(st)
    if before >= trials:
        logger.info("study %r already has %d of %d trials", ref.name, before, trials)
        return {"study": ref.name, "ran": 0, "trials": before}
    mine: list[int] = []  # this worker's trials (the study's count includes the other workers')
    st.optimize(objective, n_trials=trials - before, timeout=timeout, catch=(NonFiniteLossError,),
                callbacks=[optuna.study.MaxTrialsCallback(trials, states=COUNTED),
                           lambda study, trial: mine.append(trial.number)])
    after = counted_trials(st)
    if after < trials:
        logger.warning("study %r stopped at %d of %d trials: --timeout reached", ref.name, after, trials)
    return {"study": ref.name, "ran": len(mine), "trials": after}


def tune_finish_step(snapshot_dir: str | Path | None, study: str, *, kind: str = "vae", storage: str | None = None,
                     model_name: str | None = "recvae", wall_s: float | None = None) -> TuneResult:
    """Log the study (summary, history and importance plots) to its parent run, then retrain the best trial's
    configuration as the challenger: scored once on test users, registered, alias `challenger`."""
    import mlflow

    from recvae import tracking
    from recvae.tuning import (
        ATTR_EXPERIMENT,
        ATTR_PARENT,
        end_orphaned_runs,
        log_to_parent,
        open_study,
        study_ref,
        wait_for_running,
    )

    snap = load_snapshot(snapshot_dir)
    ref = study_ref(study, storage)
    st = open_study(ref, resume=True, snapshot_id=snap.snapshot_id, kind=kind, space=None, seed=0)
    parent, experiment = st.user_attrs.get(ATTR_PARENT), st.user_attrs.get(ATTR_EXPERIMENT, "recvae")
    work = paths.runs_dir() / safe_name(f"tune-{ref.name}")
    wait_for_running(st)  # another worker's trial may still become the best
    end_orphaned_runs(st)
    with tracking.start_run(experiment, run_id=parent):
        info = log_to_parent(st, work, wall_s)
    if "best_trial" not in info:
        raise ConfigError(f"study {ref.name!r}: no trial completed ({info.get('pruned', 0)} pruned, "
                          f"{info.get('fail', 0)} failed); nothing to retrain")
    logger.info("study %r: best trial %d, validation NDCG@100 %.4f; retraining it as the challenger", ref.name,
                info["best_trial"], info["best_val_ndcg@100"])
    overrides: dict[str, Any] = dict(info["best_overrides"])
    select_on: str | None = "auto"
    if not snap.has("validation"):  # carved validation users (LightGCN): the best trial's epochs, no test peeking
        overrides.update({"train.epochs": int(info["best_epoch"]), "train.patience": None})
        if overrides.get("train.beta_schedule") == "anneal_to_1":  # the paper's second run: anneal to the best beta
            overrides.update({"train.beta_schedule": "anneal", "train.anneal_cap": float(info["best_beta"])})
        select_on = None
    challenger = train_step(snap.path, overrides=overrides, kind=kind, experiment=experiment,
                            model_name=model_name, run_key=f"{ref.name}-trial-{info['best_trial']}",
                            parent_run_id=parent, select_on=select_on)
    with tracking.start_run(experiment, run_id=parent):
        mlflow.set_tag("recvae.challenger_run_id", challenger.run_id)
        if challenger.test_ndcg_at_100 is not None:
            mlflow.log_metric("challenger_test_ndcg_at_100", challenger.test_ndcg_at_100)
    return TuneResult(study=ref.name, parent_run_id=str(parent), trials=int(info["trials"]),
                      complete=int(info.get("complete", 0)), pruned=int(info.get("pruned", 0)),
                      failed=int(info.get("fail", 0)), best_trial=int(info["best_trial"]),
                      best_val_ndcg_at_100=float(info["best_val_ndcg@100"]), best_overrides=info["best_overrides"],
                      challenger=ModelRun.of(challenger).to_dict())


def tune_step(snapshot_dir: str | Path | None, *, kind: str = "vae", trials: int = 20, timeout: float | None = None,
              study: str | None = None, storage: str | None = None, space: SpaceArg = None, resume: bool = False,
              overrides: Mapping[str, Any] | list[str] | None = None, experiment: str = "recvae",
              model_name: str | None = "recvae", worker: int = 0, seed: int = 0, finish: bool = True
              ) -> TuneResult | dict[str, Any]:
    """`recvae tune`: set up (or resume) the study, run its trials, then (unless `finish` is false: an extra
    worker) log it and retrain the best configuration as the challenger."""
    t0 = time.perf_counter()
    setup = tune_setup_step(snapshot_dir, kind=kind, study=study, storage=storage, space=space, resume=resume,
                            overrides=overrides, experiment=experiment, seed=seed)
    ran = tune_trials_step(setup["snapshot_dir"], setup["study"], trials=trials, kind=kind, storage=storage,
                           timeout=timeout, worker=worker, overrides=overrides, seed=seed)
    if not finish:
        return ran
    return tune_finish_step(setup["snapshot_dir"], setup["study"], kind=kind, storage=storage, model_name=model_name,
                            wall_s=time.perf_counter() - t0)

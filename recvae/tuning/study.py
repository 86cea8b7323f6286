"""The Optuna study of a tune: its storage (SQLite under the home, or the user's PostgreSQL), created or resumed,
its sampler and pruner, what it records of itself, and the lock under which the first worker makes its parent run.

A study lives in a real database, so a killed `recvae tune --resume` continues it and several workers (processes,
machines, Airflow's mapped tasks) run trials of it at once. A trial whose worker died is failed by its missing
heartbeat and run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy.exc import ArgumentError

from recvae import paths
from recvae.config import ConfigError
from recvae.urls import mask_secrets, mask_url, sqlite_file

logger = logging.getLogger(__name__)

HEARTBEAT_S = 10  # a RUNNING trial's worker writes this often; after GRACE_S without it, the trial is failed
GRACE_S = 60
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)  # what `--trials N` counts: trials that ran to a verdict

# what the study records of itself (user attributes): a resume on another snapshot or kind is refused
ATTR_SNAPSHOT, ATTR_KIND, ATTR_SPACE, ATTR_PARENT, ATTR_EXPERIMENT = (
    "snapshot_id", "kind", "space", "mlflow_parent_run_id", "experiment")


class StudyError(ConfigError):
    """A study cannot be created or resumed as asked (exists already, missing, other snapshot or kind)."""


@dataclass(frozen=True)
class StudyRef:
    """Where a study is: its name and storage URL."""

    name: str
    storage: str

    @property
    def shown(self) -> str:
        """The storage URL with its password masked, for messages and logs."""
        return mask_url(self.storage)


def study_ref(name: str, storage: str | None = None) -> StudyRef:
    """The study `name` in `storage` (default: $RECVAE_TUNE_STORAGE, else SQLite under the home)."""
    if not name or not name.strip():
        raise StudyError("a study needs a name")
    return StudyRef(name.strip(), storage or paths.default_tuning_storage())


def _storage(ref: StudyRef) -> optuna.storages.RDBStorage:
    """The RDB storage with heartbeats: a dead worker's trial is failed and retried once."""
    engine: dict[str, Any] = {}
    if ref.storage.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 60}}  # several workers write one SQLite file: wait for its lock
    db = sqlite_file(ref.storage)
    if db is not None and not db.parent.is_dir():
        raise StudyError(f"study storage {ref.shown}: folder {db.parent} does not exist")
    _route_optuna_logs()
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5, and what a shared study needs
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                ref.storage, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
    except (ValueError, ImportError, ArgumentError) as exc:
        raise StudyError(f"study storage {ref.shown}: {mask_secrets(str(exc))}") from exc


class _NoTraceback(logging.Filter):
    """Optuna logs a failed trial's traceback (a Ctrl-C's too): the one line is enough, and a bug is raised again
    (and reported with its traceback) by the command itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


def _route_optuna_logs() -> None:
    """Optuna's lines through the logging setup of the process (masked, leveled), not its own stderr handler."""
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "study created/reused": our own lines say it once
    log = logging.getLogger("optuna")
    if not any(isinstance(f, _NoTraceback) for f in log.filters):
        log.addFilter(_NoTraceback())


def sampler(seed: int) -> optuna.samplers.TPESampler:
    """TPE (multivariate, constant liar: Optuna 5's defaults) after 8 random trials."""
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8)


def pruner() -> optuna.pruners.BasePruner:
    """Stop a trial whose validation NDCG@100 is below the median of earlier trials at the same epoch, once five
    trials have finished and after its first ten epochs (beta annealing makes early epochs unrepresentative)."""
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10, interval_steps=1)


def open_study(ref: StudyRef, *, resume: bool, snapshot_id: str, kind: str, space: dict[str, Any] | None, seed: int,
               worker: int = 0) -> optuna.Study:
    """Create the study, or with `resume` load it (creating it when absent); refuse a study of another snapshot or
    model kind, and a new study under a name already taken. `space` (None: not checked) is recorded by a new
    study; a resumed one of another space says so."""
    storage = _storage(ref)
    exists = ref.name in optuna.get_all_study_names(storage)
    if exists and not resume:
        n = len(optuna.load_study(study_name=ref.name, storage=storage).trials)
        raise StudyError(f"study {ref.name!r} already exists in {ref.shown} with {n} trial(s): pass --resume to "
                         f"continue it, or --study NAME for a new one")
    if resume and not exists:
        logger.warning("no study %r in %s yet: starting it", ref.name, ref.shown)
    study = optuna.create_study(study_name=ref.name, storage=storage, direction="maximize",
                                sampler=sampler(seed), pruner=pruner(), load_if_exists=True)
    # seeded apart per worker and per start: a resumed study or a second worker does not replay the same proposals
    study.sampler = sampler(seed + 1000 * worker + len(study.trials))
    attrs = study.user_attrs
    if ATTR_SNAPSHOT not in attrs:
        study.set_user_attr(ATTR_SNAPSHOT, snapshot_id)
        study.set_user_attr(ATTR_KIND, kind)
        if space is not None:
            study.set_user_attr(ATTR_SPACE, space)
    else:
        for key, want in ((ATTR_SNAPSHOT, snapshot_id), (ATTR_KIND, kind)):
            if attrs[key] != want:
                raise StudyError(f"study {ref.name!r} in {ref.shown} tunes {key.replace('_', ' ')} {attrs[key]!r}, "
                                 f"not {want!r}: pass --study NAME for a new study")
        if space is not None and attrs.get(ATTR_SPACE) != space:
            logger.warning("study %r: a new search space; its trials so far stay as they were, new trials use it",
                           ref.name)
            study.set_user_attr(ATTR_SPACE, space)
    logger.debug("study %r %s in %s (%d trial(s) so far)", ref.name, "resumed" if exists else "created", ref.shown,
                 len(study.trials))
    return study


def counted_trials(study: optuna.Study) -> int:
    """Trials that ran to a verdict (complete or pruned): what `--trials N` asks for in all."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


@contextlib.contextmanager
def study_lock(ref: StudyRef) -> Iterator[None]:
    """An inter-process lock for the study's one-time setup (its parent MLflow run): a file lock beside a SQLite
    storage, a PostgreSQL advisory lock on a server; other storages go unlocked (a warning says so)."""
    db = sqlite_file(ref.storage)
    if db is not None:
        with open(db.with_name(db.name + ".lock"), "a") as handle:  # one lock file for the storage's studies
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if ref.storage.startswith("postgresql"):
        import sqlalchemy as sa

        engine = sa.create_engine(ref.storage)
        key = int(_digest(ref.name), 16) & 0x7FFFFFFFFFFFFFFF
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            engine.dispose()
        return
    logger.warning("no lock for storage %s: start one worker first, then the others", ref.shown)
    yield


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:15]


def wait_for_running(study: optuna.Study, poll_s: float = HEARTBEAT_S) -> int:
    """Wait until no trial of the study is RUNNING (other workers' trials end, or are failed once their heartbeat
    is stale); returns how many were running at first."""
    first = None
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if first is None:
            first = len(running)
            if running:
                logger.info("waiting for %d running trial(s) of other workers to end (or to miss %d s of "
                            "heartbeats)", len(running), GRACE_S)
        if not running:
            return first
        time.sleep(poll_s)

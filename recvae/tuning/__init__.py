"""`recvae tune`: a search space over the model's and training's settings (`space`), an Optuna study in a real
database that resumes and is shared by workers (`study`), its trials as MLflow child runs (`objective`) and what the
study shows (`report`). The steps that run them, and the retraining of the best trial, are in recvae.pipeline.tuning."""

from __future__ import annotations

from recvae.tuning.objective import Objective, end_orphaned_runs
from recvae.tuning.report import importances, log_to_parent, summary
from recvae.tuning.space import Dimension, SearchSpace, default_space, load_space, space_from_dict
from recvae.tuning.study import (
    ATTR_EXPERIMENT,
    ATTR_KIND,
    ATTR_PARENT,
    ATTR_SNAPSHOT,
    ATTR_SPACE,
    COUNTED,
    StudyError,
    StudyRef,
    counted_trials,
    open_study,
    study_lock,
    study_ref,
    wait_for_running,
)

__all__ = [
    "ATTR_EXPERIMENT", "ATTR_KIND", "ATTR_PARENT", "ATTR_SNAPSHOT", "ATTR_SPACE", "COUNTED", "Dimension", "Objective",
    "SearchSpace", "StudyError", "StudyRef", "counted_trials", "default_space", "end_orphaned_runs", "importances",
    "load_space", "log_to_parent", "open_study", "space_from_dict", "study_lock", "study_ref", "summary",
    "wait_for_running",
]

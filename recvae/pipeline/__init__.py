"""The pipeline as a short list of steps, shared by `recvae pipeline`, the CLI and the Airflow tasks. Each step is
idempotent for a run key and passes small JSON-able references (paths, run ids, batch keys), never data:
`data` (snapshots), `training` (challenger, seeds, ensemble, baselines), `promotion` (the guarded promotion),
`tuning` (a study of trials, its best retrained),
`scoring` (database check, staging batch, shards, publish) and `driver` (the whole job in one process)."""

from __future__ import annotations

from recvae.pipeline.analysis import anomalies_step, embeddings_step, similar_items_step
from recvae.pipeline.common import TAG_PROMOTION, TAG_ROLE, TAG_RUN_KEY, config_from
from recvae.pipeline.data import latest_snapshot, load_snapshot, prepare_step
from recvae.pipeline.driver import run_pipeline
from recvae.pipeline.promotion import (
    MIN_CHAMPION_ITEM_OVERLAP,
    align_model,
    aligned_scorer,
    champion_item_overlap,
    check_min_confidence,
    evaluate_model_uri,
    promote_step,
    significance_gate,
    validation_ndcg_per_user,
)
from recvae.pipeline.results import Decision, ModelRun, ScoringBatch, SnapshotResult, TuneResult
from recvae.pipeline.scoring import (
    begin_score_step,
    check_db_step,
    item_metadata,
    plan_shards,
    publish_step,
    resolve_item_filter,
    score_shard_step,
    score_step,
)
from recvae.pipeline.training import baseline_step, challenger_seeds, combine_challengers, ensemble_step, train_step
from recvae.pipeline.tuning import tune_finish_step, tune_setup_step, tune_step, tune_trials_step

__all__ = [
    "Decision", "MIN_CHAMPION_ITEM_OVERLAP", "ModelRun", "ScoringBatch", "SnapshotResult", "TAG_PROMOTION",
    "TAG_ROLE", "TAG_RUN_KEY", "align_model", "aligned_scorer", "anomalies_step", "baseline_step", "begin_score_step",
    "challenger_seeds", "champion_item_overlap", "check_min_confidence", "significance_gate",
    "validation_ndcg_per_user", "check_db_step", "combine_challengers", "config_from", "embeddings_step",
    "ensemble_step", "evaluate_model_uri", "item_metadata", "latest_snapshot", "load_snapshot", "plan_shards",
    "prepare_step", "promote_step", "publish_step", "resolve_item_filter", "run_pipeline", "score_shard_step",
    "score_step", "similar_items_step", "train_step",
    "TuneResult", "tune_finish_step", "tune_setup_step", "tune_step", "tune_trials_step",
]

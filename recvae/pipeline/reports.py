"""The evaluation every run logs: accuracy metrics per user, per user segment and per item segment, beyond-accuracy
metrics of the top lists, and the per-user values kept as an artifact (so runs compare later without rescoring)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from recvae.evaluation.metrics import DEFAULT_METRICS
from recvae.evaluation.segments import EvalReport

logger = logging.getLogger(__name__)

REPORT_METRICS = (*DEFAULT_METRICS, "ndcg@10", "recall_all@20", "precision@20", "mrr@10", "hitrate@10", "map@10")
BEYOND_K = (10, 100)
PREFIXES = {"test": "test_", "validation": "val_"}


def evaluation_report(
    score_fn: Callable[[Any], Any], snap: Any, split: str, *, rec: Any = None,
    thresholds: tuple[float, float] | None = None,
) -> EvalReport:
    """Evaluate `score_fn` on a snapshot's `split` users: REPORT_METRICS overall, per history segment (thresholds:
    the training users' history-length terciles unless given) and per item segment (head / tail by training
    popularity), with coverage, gini, novelty and intra-list diversity of the top lists at BEYOND_K."""
    from recvae.evaluation.metrics import evaluate
    from recvae.evaluation.segments import (
        beyond_table,
        history_segments,
        history_thresholds,
        item_segments,
        segment_table,
    )

    foldin, heldout = snap.heldout(split)
    train = snap.matrices.get("train")
    item_counts = np.asarray(train.sum(axis=0)).ravel() if train is not None else np.zeros(snap.n_items)
    history = np.diff(foldin.indptr)
    base = np.diff(train.indptr) if train is not None and train.shape[0] else history
    thresholds = thresholds or history_thresholds(base)
    result = evaluate(score_fn, foldin, heldout, REPORT_METRICS, item_segments=item_segments(item_counts),
                      keep_top=max(BEYOND_K))
    segment = history_segments(history, thresholds)
    features, source, note = item_features(snap, rec)
    assert result.top is not None  # keep_top > 0
    import pandas as pd

    table = pd.concat([segment_table(result.per_user, segment, result.by_items),
                       beyond_table(result.top, item_counts, BEYOND_K, features, segment)], ignore_index=True)
    users = snap.users.raw_ids[snap.rows[f"{split}_tr"]]
    return EvalReport(split=split, result=result, users=users, history=history, heldout=np.diff(heldout.indptr),
                      user_segment=segment, thresholds=thresholds, table=table, ild_source=source, ild_note=note)


def item_features(snap: Any, rec: Any = None) -> tuple[np.ndarray | None, str | None, str | None]:
    """(item features, their source, why there are none) for intra-list diversity: MovieLens genres when the
    snapshot's source has them, else the model's item vectors (Mult-VAE's output layer, ALS's factors)."""
    from recvae.pipeline.scoring import item_metadata

    try:
        meta = item_metadata(snap)
    except Exception as exc:  # noqa: BLE001 - diversity is optional: a bad metadata file must not fail an evaluation
        logger.warning("item metadata of snapshot %s unreadable (%s): no genres for diversity", snap.snapshot_id, exc)
        meta = None
    if meta is not None and meta["genres"].notna().any():
        return genre_matrix(meta, snap.items.raw_ids), "genres", None
    vectors = _model_item_vectors(rec)
    if vectors is not None and vectors.shape[0] == snap.n_items:
        return vectors, "model item vectors", None
    kind = getattr(rec, "kind", None)
    note = (f"no item genres in snapshot {snap.snapshot_id}'s source and model kind {kind} has no item vectors"
            if rec is not None else f"no item genres in snapshot {snap.snapshot_id}'s source")
    logger.info("intra-list diversity skipped: %s", note)
    return None, None, note


def genre_matrix(meta: Any, item_ids: np.ndarray) -> np.ndarray:
    """0/1 (items, genres) matrix from metadata's 'A|B' genre text, rows in `item_ids` order (ids compared as
    text; items without metadata get an all-zero row)."""
    genres = dict(zip(meta["item_id"].astype(str), meta["genres"].fillna(""), strict=True))
    per_item = [[g for g in genres.get(str(i), "").split("|") if g] for i in item_ids]
    names = sorted({g for gs in per_item for g in gs})
    col = {g: j for j, g in enumerate(names)}
    out = np.zeros((len(item_ids), len(names)), dtype=np.float32)
    for i, gs in enumerate(per_item):
        out[i, [col[g] for g in gs]] = 1.0
    return out


def _model_item_vectors(rec: Any) -> np.ndarray | None:
    """Low-dimensional item vectors of a model, where it has them; None otherwise (EASE's are the catalogue)."""
    factors = getattr(rec, "item_factors", None)
    if isinstance(factors, np.ndarray):
        return factors
    module = getattr(rec, "module", None)
    layer = getattr(module, "decoder", None)
    if isinstance(layer, torch.nn.ModuleList):
        layer = layer[-1] if len(layer) else None
    weight = getattr(layer, "weight", None)
    # the output layer's weight is (items, hidden): each row an item's output vector
    return weight.detach().float().cpu().numpy() if isinstance(weight, torch.Tensor) else None


def log_evaluation(score_fn: Callable[[Any], Any], snap: Any, split: str, *, rec: Any = None) -> EvalReport:
    """Evaluate (see `evaluation_report`) and log it to the active MLflow run (see `tracking.log_evaluation`)."""
    from recvae import tracking

    report = evaluation_report(score_fn, snap, split, rec=rec)
    tracking.log_evaluation(report, PREFIXES[split])
    return report


def log_model_evaluation(model_uri: str, snapshot_dir: Any, split: str = "test", *,
                         thresholds: tuple[float, float] | None = None) -> EvalReport:
    """Re-evaluate a logged model on `split` of the snapshot its run was trained on, and log the report into that
    run (kept per-user results for `recvae compare --against`, segments, beyond-accuracy metrics)."""
    import mlflow

    from recvae import tracking
    from recvae.config import ConfigError
    from recvae.pipeline.data import load_snapshot
    from recvae.pipeline.promotion import align_model, aligned_scorer

    snap = load_snapshot(snapshot_dir)
    rec, info = tracking.load_recommender_from_uri(model_uri)
    if info.run_id is None:
        raise ConfigError(f"{model_uri} is not a logged model (no MLflow run to keep its results in)")
    trained_on = tracking.run_snapshot(tracking.resolve_run(info.run_id))
    if trained_on not in (None, snap.snapshot_id):
        raise ConfigError(f"{model_uri}: its run {info.run_id} is on snapshot {trained_on}, not {snap.snapshot_id}; "
                          "its results are kept for its own snapshot only")
    if thresholds is not None and not thresholds[0] <= thresholds[1]:
        raise ConfigError(f"history thresholds must be increasing (light's max, medium's max); got {thresholds}")
    scorer = aligned_scorer(rec, align_model(rec, snap, model_uri))
    report = evaluation_report(scorer, snap, split, rec=rec, thresholds=thresholds)
    with mlflow.start_run(run_id=info.run_id):  # reopened as it is: no new tags, its status restored on exit
        tracking.log_evaluation(report, PREFIXES[split])
    return report

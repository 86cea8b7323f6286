"""Analysis steps over a trained model: anomalous users, user embeddings and similar items, each published to the
recommendations database like the lists (`recvae.serving.store.outputs`)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from recvae.pipeline.data import load_snapshot
from recvae.pipeline.promotion import align_model

logger = logging.getLogger(__name__)


def _load(model_uri: str, snapshot_dir: str | Path | None) -> tuple[Any, Any, Any]:
    """(recommender, its LoadedModelInfo, snapshot), checked to belong together (the model first: a bad URI is
    the error reported)."""
    from recvae import tracking
    from recvae.models.latent import latent_recommender

    rec, info = tracking.load_recommender_from_uri(model_uri)
    latent_recommender(rec)  # a baseline is refused before the snapshot is read
    snap = load_snapshot(snapshot_dir)
    align_model(rec, snap, model_uri)
    return rec, info, snap


def anomalies_step(*, model_uri: str, snapshot_dir: str | Path | None, db_url: str, batch_key: str,
                   keep: int | None = None, log_mlflow: bool = True) -> dict[str, Any]:
    """Score every user of the snapshot (likelihood per item, KL, negative ELBO and their percentiles among the
    training users), publish them to `recvae_user_anomalies`, and log the score histogram (a PNG) and the
    scores' 99th percentiles to the model's MLflow run (a new run when it has none)."""
    from recvae.serving.anomalies import SCORES, anomalies_to_store, histogram_png
    from recvae.serving.store import OutputStore

    rec, info, snap = _load(model_uri, snapshot_dir)
    with OutputStore(db_url) as store:
        summary, frame = anomalies_to_store(rec, snap, store, batch_key, model_name=info.name or info.kind,
                                            model_version=info.version, run_id=info.run_id, keep=keep)
    result = {**summary.to_dict(), "users": len(frame)}
    if log_mlflow and not summary.reused:
        from recvae.tracking.artifacts import log_analysis

        metrics = {f"anomaly_{s}_p99": float(frame[s].quantile(0.99)) for s in SCORES}
        with tempfile.TemporaryDirectory(prefix="recvae-anomalies-") as tmp:  # logged, then gone
            png = histogram_png(frame, Path(tmp) / "anomaly_scores.png")
            result["mlflow_run_id"] = log_analysis([png], "anomalies", run_id=info.run_id, run_name="anomalies",
                                                   metrics=metrics)
    return result


def embeddings_step(*, model_uri: str, snapshot_dir: str | Path | None, db_url: str, batch_key: str,
                    parquet: str | Path | None = None, keep: int | None = None) -> dict[str, Any]:
    """The posterior mean of every user of the snapshot: to Parquet (when `parquet` is given) and published to
    `recvae_user_embeddings`."""
    from recvae.serving.embeddings import snapshot_embeddings, write_parquet
    from recvae.serving.store import OutputStore

    rec, info, snap = _load(model_uri, snapshot_dir)
    frame = snapshot_embeddings(rec, snap)
    if parquet is not None:
        write_parquet(frame, parquet)
    with OutputStore(db_url) as store:
        summary = store.publish("user_embeddings", batch_key, {"user_embeddings": frame},
                                model_name=info.name or info.kind, model_version=info.version, run_id=info.run_id,
                                snapshot_id=snap.snapshot_id, keep=keep)
    dim = len(frame["embedding"].iloc[0]) if len(frame) else 0
    return {**summary.to_dict(), "users": len(frame), "dim": dim, "parquet": None if parquet is None else str(parquet)}


def similar_items_step(*, model_uri: str, top_n: int, db_url: str, batch_key: str, method: str = "auto",
                       keep: int | None = None) -> dict[str, Any]:
    """Every item's `top_n` most similar items (cosine of the decoder's item vectors), published to
    `recvae_similar_items`."""
    from recvae import tracking
    from recvae.config import ConfigError
    from recvae.models.latent import latent_recommender
    from recvae.serving.similar_items import similar_items_frame
    from recvae.serving.store import OutputStore

    if top_n < 1:
        raise ConfigError(f"top_n must be >= 1; got {top_n}")
    rec, info = tracking.load_recommender_from_uri(model_uri)
    latent_recommender(rec)
    frame = similar_items_frame(rec, top_n, method=method)
    with OutputStore(db_url) as store:
        summary = store.publish("similar_items", batch_key, {"similar_items": frame},
                                model_name=info.name or info.kind, model_version=info.version, run_id=info.run_id,
                                snapshot_id=info.snapshot_id, keep=keep)
    return {**summary.to_dict(), "items": int(frame["item_id"].nunique()) if len(frame) else 0}

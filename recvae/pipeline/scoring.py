"""Scoring steps: check the database, open a staging batch, score shards into it, publish it atomically."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recvae.config import ConfigError
from recvae.pipeline.data import load_snapshot
from recvae.pipeline.promotion import align_model
from recvae.pipeline.results import ScoringBatch

logger = logging.getLogger(__name__)

# Users one scoring shard (one mapped Airflow task) takes when the shard count follows the users: small enough that
# a retry redoes minutes of work, large enough that per-task start-up (model and snapshot load) stays a small share.
DEFAULT_USERS_PER_SHARD = 50_000
# Airflow's default [core] max_map_length: a mapped task with more elements fails to expand.
MAX_SHARDS = 1024


def plan_shards(n_users: int, *, users_per_shard: int | None = None, n_shards: int | None = None,
                max_shards: int = MAX_SHARDS) -> int:
    """How many shards to score `n_users` in: `n_shards` when given, else ceil(n_users / users_per_shard), at
    least 1 and at most `max_shards` (then the shards are larger than asked, which is logged)."""
    if n_shards is not None:
        if n_shards < 1:
            raise ConfigError(f"n_shards must be at least 1; got {n_shards}")
        return int(n_shards)
    per_shard = DEFAULT_USERS_PER_SHARD if users_per_shard is None else int(users_per_shard)
    if per_shard < 1:
        raise ConfigError(f"users_per_shard must be at least 1; got {users_per_shard}")
    wanted = max(1, math.ceil(n_users / per_shard))
    if wanted > max_shards:
        logger.warning("%d users at %d per shard would make %d shards; capped at %d (about %d users each)",
                       n_users, per_shard, wanted, max_shards, math.ceil(n_users / max_shards))
    return min(wanted, max_shards)


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
    n_shards: int | None = None,
    db_url: str,
    batch_key: str,
    model_name: str | None = None,
    loaded: tuple[Any, Any, Any] | None = None,
    users_per_shard: int | None = None,
    item_filter: Mapping[str, Any] | None = None,
) -> ScoringBatch:
    """Check the model and snapshot belong together, then open (or reuse) the staging batch for `batch_key`.

    The shard count is `n_shards` when given, else it follows the snapshot's users (`plan_shards`: one shard per
    `users_per_shard` users), so a large catalogue of users makes many small, separately retried tasks.

    An alias (models:/NAME@champion) is resolved here once: the batch carries the version's own URI, so every shard
    scores that version even if a promotion moves the alias meanwhile. `loaded`: (recommender, its info, snapshot)
    already loaded by the caller (`score_step`). `item_filter`: allow/deny lists (`resolve_item_filter`'s keys),
    resolved here once into raw ids that every shard applies."""
    from recvae.serving.store import RecommendationStore

    rec, info, snap = loaded or _load(model_uri, snapshot_dir)
    align_model(rec, snap, model_uri)
    n_shards = plan_shards(len(snap.users), users_per_shard=users_per_shard, n_shards=n_shards)
    filt = resolve_item_filter(item_filter, db_url)
    if filt.active:  # checked before the batch opens: a filter leaving no item is the user's error
        filt.excluded(snap.items.raw_ids if rec.items is None else rec.items.raw_ids)
    if info.name and info.version:
        model_uri = f"models:/{info.name}/{info.version}"
    with RecommendationStore(db_url) as store:
        batch = store.begin_batch(
            batch_key, model_name=model_name or info.name or info.kind, top_n=top_n, n_items=rec.n_items,
            model_version=info.version, run_id=info.run_id, snapshot_id=snap.snapshot_id, n_shards=n_shards,
        )
        if not batch.done:  # a published batch's titles never change
            load_titles(store, snap, batch)
    return ScoringBatch(batch_key=batch_key, batch_id=batch.batch_id, done=batch.done, model_uri=model_uri,
                        model_name=model_name or info.name or info.kind, model_version=info.version,
                        run_id=info.run_id, snapshot_dir=str(snap.path), snapshot_id=snap.snapshot_id, top_n=top_n,
                        n_shards=n_shards, **filt.to_dict())


FILTER_KEYS = ("allow_items", "deny_items", "allow_file", "deny_file", "allow_sql", "deny_sql")


def resolve_item_filter(spec: Mapping[str, Any] | None, db_url: str | None) -> Any:
    """An `ItemFilter` from a spec with any of FILTER_KEYS (lists of raw ids, files of ids, SQL tables or queries
    run on `db_url`); unknown keys are a ConfigError."""
    from recvae.config import ConfigError
    from recvae.serving.filters import resolve_filter

    spec = {k: v for k, v in (spec or {}).items() if v not in (None, "", [])}
    unknown = sorted(set(spec) - set(FILTER_KEYS))
    if unknown:
        raise ConfigError(f"unknown item filter key(s) {unknown}; known: {', '.join(FILTER_KEYS)}")
    return resolve_filter(db_url=db_url, **spec)


def item_metadata(snap: Any) -> Any:
    """Item titles (a DataFrame: item_id, title, genres) when the snapshot's source folder (or its parent) has
    MovieLens metadata (movies.dat, u.item), else None."""
    from recvae.data.item_metadata import find_item_metadata, read_item_metadata

    path = (snap.manifest.get("source") or {}).get("path")
    if not path or "://" in str(path):
        return None
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    for candidate in (folder, folder.parent):
        if find_item_metadata(candidate) is not None:
            return read_item_metadata(candidate)
    return None


def load_titles(store: Any, snap: Any, batch: Any) -> int:
    """Set the titles of staging `batch` from the snapshot's metadata (see `item_metadata`); titles written."""
    meta = item_metadata(snap)
    return 0 if meta is None else store.write_items(batch, meta)


def _load(model_uri: str, snapshot_dir: str | Path | None) -> tuple[Any, Any, Any]:
    """(recommender, its LoadedModelInfo, snapshot): the model first, so a bad model URI is the error reported."""
    from recvae import tracking

    rec, info = tracking.load_recommender_from_uri(model_uri)
    return rec, info, load_snapshot(snapshot_dir)


def score_shard_step(
    batch: Mapping[str, Any], shard: int, *, db_url: str, chunk_size: int | None = None,
    loaded: tuple[Any, Any, Any] | None = None,
) -> dict[str, Any]:
    """Score shard `shard` of the batch's users into staging (a re-run replaces that shard's rows); `loaded` as in
    `begin_score_step`."""
    from recvae.serving.filters import ItemFilter
    from recvae.serving.recommend import default_chunk_size, recommend_to_store
    from recvae.serving.store import RecommendationStore

    if batch.get("done"):
        return {"shard": shard, "rows": 0, "skipped": "batch already published"}
    rec, _, snap = loaded or _load(batch["model_uri"], batch["snapshot_dir"])
    with RecommendationStore(db_url) as store:
        summary = recommend_to_store(
            rec, snap, store, batch["top_n"], batch["batch_key"], batch["model_name"],
            model_version=batch["model_version"], run_id=batch["run_id"], snapshot_id=batch["snapshot_id"],
            chunk_size=chunk_size or default_chunk_size(rec.n_items), shard=shard, n_shards=batch["n_shards"],
            publish=False, items=snap.items, item_filter=ItemFilter.from_dict(batch),
        )
    return {"shard": shard, **summary.to_dict()}


def publish_step(batch: Mapping[str, Any], *, db_url: str, retention: int | None = None) -> dict[str, Any]:
    """Check the staging batch holds every shard's rows and make it current in one transaction."""
    from recvae.serving.store import RecommendationStore

    with RecommendationStore(db_url) as store:
        summary = store.publish(batch["batch_key"], n_shards=batch["n_shards"], keep=retention)
    logger.info("published batch %s", summary.to_dict())
    return summary.to_dict()


def score_step(*, model_uri: str, snapshot_dir: str | Path | None, top_n: int, db_url: str, batch_key: str,
               model_name: str | None = None, retention: int | None = None,
               chunk_size: int | None = None, item_filter: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whole scoring job in one process (`recvae recommend`, `recvae pipeline`): the same begin, shard and
    publish steps the Airflow DAG runs as separate tasks, with one shard, loading the model and snapshot once."""
    loaded = _load(model_uri, snapshot_dir)
    batch = begin_score_step(model_uri=model_uri, snapshot_dir=snapshot_dir, top_n=top_n, n_shards=1, db_url=db_url,
                             batch_key=batch_key, model_name=model_name, loaded=loaded, item_filter=item_filter)
    score_shard_step(batch, 0, db_url=db_url, chunk_size=chunk_size, loaded=loaded)
    return publish_step(batch, db_url=db_url, retention=retention)

"""Batch top-N recommendations in bounded memory (seen items removed), streamed into the recommendation store."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recvae.data import readers
from recvae.data.idmap import IdMap
from recvae.data.snapshot import Snapshot
from recvae.data.validate import DataValidationError
from recvae.log import progress
from recvae.models.base import Recommender
from recvae.serving.filters import ItemFilter
from recvae.serving.items import align_items, item_positions
from recvae.serving.store import Batch, BatchSummary, RecChunk, RecommendationStore, StoreError
from recvae.serving.topn import eligible_counts, iter_topn

logger = logging.getLogger(__name__)

__all__ = [  # iter_topn lives in recvae.serving.topn; the benchmarks import it from here
    "SCORE_BUDGET", "ScoringInput", "UnknownUsersError", "build_input", "canonical", "default_chunk_size",
    "expected_counts", "iter_topn", "read_foldin", "recommend_to_store", "topn_frame",
]


class UnknownUsersError(ValueError):
    """None of the users asked for has a history to score."""


@dataclass
class ScoringInput:
    """Users to score and their histories, with columns aligned to the model's items."""

    user_ids: np.ndarray  # (n,) raw user ids as text
    history: sp.csr_matrix  # (n, n_items) seen items, canonical (no duplicates, no explicit zeros)
    item_ids: np.ndarray  # (n_items,) raw item ids of the columns as text
    snapshot_id: str | None = None
    unknown_only: np.ndarray = field(default_factory=lambda: np.zeros(0, object))  # fold-in users: no known item

    def nothing_unseen(self) -> np.ndarray:
        """Users who have seen every item the model scores: no candidate is left, so they get no recommendations."""
        return self.user_ids[np.diff(self.history.indptr) >= self.history.shape[1]]

    def notes(self) -> list[str]:
        """One line per group of users whose lists are not what one might expect (empty or history-free)."""
        out = []
        if len(full := self.nothing_unseen()):
            out.append(f"{len(full):,} user(s) got no recommendations: they have seen every item the model scores "
                       f"(e.g. {_some(full)})")
        if len(self.unknown_only):
            out.append(f"{len(self.unknown_only):,} user(s) have no item the model knows: their recommendations "
                       f"ignore their history (e.g. {_some(self.unknown_only)})")
        return out


def canonical(history: sp.spmatrix) -> sp.csr_matrix:
    """A CSR copy without duplicate entries or stored zeros: exactly the seen items."""
    h = sp.csr_matrix(history, copy=True)
    h.sum_duplicates()
    h.eliminate_zeros()
    return h


def expected_counts(history: sp.csr_matrix, top_n: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Rows each user should get: min(top_n, number of unseen candidate items not excluded by a business filter)
    (history must be canonical)."""
    return eligible_counts(history, top_n, exclude)


# ---------------------------------------------------------------------------------------------------------------
# inputs: a snapshot, fold-in histories of new users, or (user ids, matrix)


def _as_text(values: Iterable[Any]) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=object)


def _some(ids: np.ndarray, k: int = 5) -> str:
    """A few ids for a message: 'a, b, c' or 'a, b, c, ... (12 in all)'."""
    shown = ", ".join(str(v) for v in ids[:k])
    return shown + (f", ... ({len(ids):,} in all)" if len(ids) > k else "")


def _model_items(recommender: Recommender, fallback: IdMap | None) -> IdMap:
    """The model's item ids (its own, else `fallback`), one per column it scores."""
    items = recommender.items if getattr(recommender, "items", None) is not None else fallback
    if items is None:
        raise ValueError("the recommender has no item ids (recommender.items is None); pass items=IdMap(...)")
    if len(items) != recommender.n_items:
        raise ValueError(f"{len(items)} item ids for a recommender that scores {recommender.n_items} items")
    return items


def read_foldin(path: str | Path) -> pd.DataFrame:
    """Fold-in histories (user, item raw ids, as text) from a CSV with a header naming columns `user` and `item`;
    bad input raises DataValidationError naming the file, line and column."""
    path = Path(path)
    df = readers.read_csv(path, user_col="user", item_col="item", rating_col=None, time_col=None, id_type="str")
    if len(df) == 0:
        raise DataValidationError("no fold-in rows (only a header): nobody to recommend for", source=path)
    return df[["user", "item"]]


def _from_interactions(df: pd.DataFrame, model_items: IdMap) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
    """(user ids, users x model items matrix, users without a known item) from (user, item) raw-id pairs; items
    unknown to the model are dropped."""
    missing = {"user", "item"} - set(df.columns)
    if missing:
        raise ValueError(f"fold-in interactions need columns user and item; missing {sorted(missing)}")
    users = pd.unique(_as_text(df["user"]))
    u = pd.Index(users).get_indexer(_as_text(df["user"]))
    c = item_positions(model_items, len(model_items), df["item"].to_numpy())
    known = c >= 0
    if not known.all():
        logger.warning(
            "fold-in: %d of %d interaction(s) name items the model does not know; ignored", int((~known).sum()), len(c)
        )
    shape = (len(users), len(model_items))
    m = sp.csr_matrix((np.ones(int(known.sum()), np.float32), (u[known], c[known])), shape=shape)
    unknown_only = users[np.diff(canonical(m).indptr) == 0]
    if len(unknown_only):
        logger.warning("fold-in: %d user(s) have no item the model knows; they get history-free recommendations: %s",
                       len(unknown_only), _some(unknown_only))
    return users, m, unknown_only


def _from_snapshot(snap: Snapshot, model_items: IdMap, n_model_items: int) -> tuple[np.ndarray, sp.csr_matrix]:
    user_idx, h = snap.history()
    # A user can have rows in several parts (temporal split): merge them into one history row.
    uniq, inverse = np.unique(user_idx, return_inverse=True)
    if len(uniq) != len(user_idx):
        merge = sp.csr_matrix((np.ones(len(user_idx), np.float32), (inverse, np.arange(len(user_idx)))))
        h = (merge @ h).tocsr()
        user_idx = uniq
    alignment = align_items(model_items, n_model_items, snap.items, snapshot_id=snap.snapshot_id, allow_other=True)
    if not alignment.identical:
        # The model was trained on another item set: move columns to the model's order, drop unknown items.
        col = alignment.positions
        coo = h.tocoo()
        keep = col[coo.col] >= 0
        if not keep.all():
            logger.warning("snapshot has %d interaction(s) with items the model does not score; ignored",
                           int((~keep).sum()))
        h = sp.csr_matrix((coo.data[keep], (coo.row[keep], col[coo.col[keep]])), shape=(h.shape[0], n_model_items))
    return _as_text(snap.users.to_raw(user_idx)), h


def build_input(
    recommender: Recommender,
    source: Snapshot | pd.DataFrame | str | Path | tuple[Sequence[Any], sp.spmatrix],
    *,
    users: Sequence[Any] | None = None,
    items: IdMap | None = None,
) -> ScoringInput:
    """Who to score and what they have seen: every user of a snapshot (or the `users` among them), fold-in
    histories (DataFrame or CSV of raw user,item ids; unknown items ignored), or (user ids, history matrix)."""
    snapshot_id, unknown_only = None, np.zeros(0, object)
    if isinstance(source, Snapshot):
        model_items = _model_items(recommender, getattr(recommender, "items", None) or items or source.items)
        item_ids = _as_text(model_items.raw_ids)
        user_ids, h = _from_snapshot(source, model_items, len(item_ids))
        snapshot_id = source.snapshot_id
    elif isinstance(source, (pd.DataFrame, str, Path)):
        df = source if isinstance(source, pd.DataFrame) else read_foldin(source)
        model_items = _model_items(recommender, items)
        item_ids = _as_text(model_items.raw_ids)
        user_ids, h, unknown_only = _from_interactions(df, model_items)
    elif isinstance(source, tuple) and len(source) == 2:
        user_ids, h = _as_text(source[0]), sp.csr_matrix(source[1])
        if len(user_ids) != h.shape[0]:
            raise ValueError(f"{len(user_ids)} user ids for a history matrix of {h.shape[0]} rows")
        if len(set(user_ids)) != len(user_ids):
            raise ValueError("user ids must be unique (one history row per user)")
        has_ids = items is not None or recommender.items is not None
        item_ids = _as_text(_model_items(recommender, items).raw_ids if has_ids else range(h.shape[1]))
    else:
        raise TypeError(
            f"cannot score from {type(source).__name__}: pass a Snapshot, a DataFrame/CSV or (user ids, csr)"
        )
    if h.shape[1] != len(item_ids):
        raise ValueError(f"history has {h.shape[1]} item columns; the model scores {len(item_ids)} items")
    if users is not None:
        wanted = _as_text(users)
        pos = pd.Index(user_ids).get_indexer(wanted)
        if (pos < 0).any():
            logger.warning("%d of %d requested user(s) are unknown (no history); skipped, e.g. %s",
                           int((pos < 0).sum()), len(wanted), wanted[pos < 0][:5].tolist())
        pos = pd.unique(pos[pos >= 0])
        if len(pos) == 0:
            where = f" in snapshot {snapshot_id}" if snapshot_id else ""
            raise UnknownUsersError(f"none of the {len(wanted)} requested user(s) has a history to score{where}, "
                                    f"e.g. {_some(wanted)}")
        user_ids, h = user_ids[pos], h[pos]
        unknown_only = unknown_only[np.isin(unknown_only, user_ids)]
    inp = ScoringInput(user_ids=user_ids, history=canonical(h), item_ids=item_ids, snapshot_id=snapshot_id,
                       unknown_only=unknown_only)
    if len(full := inp.nothing_unseen()):
        logger.warning("%d user(s) have seen every item the model scores; they get no recommendations: %s",
                       len(full), _some(full))
    return inp


# ---------------------------------------------------------------------------------------------------------------
# the batch job


SCORE_BUDGET = 50_000_000  # float32 scores held per chunk (~200 MB); bench/bench_recommend.py measures the peak


def default_chunk_size(n_items: int) -> int:
    """Users scored at a time so a chunk's dense scores stay near SCORE_BUDGET floats (100..2000 users)."""
    return int(max(100, min(2_000, SCORE_BUDGET // max(1, n_items))))


def topn_frame(
    recommender: Recommender,
    source: ScoringInput | Snapshot | pd.DataFrame | str | Path | tuple[Sequence[Any], sp.spmatrix],
    *,
    top_n: int,
    users: Sequence[Any] | None = None,
    items: IdMap | None = None,
    chunk_size: int = 1000,
    item_filter: ItemFilter | None = None,
) -> pd.DataFrame:
    """Top-N of some users as a DataFrame (user, rank, item, score): for ad-hoc lists, not for batches.
    `source` may be a ScoringInput that build_input made (its `notes` then say who got no or a history-free list);
    `item_filter`: allow/deny lists applied before the cut."""
    inp = source if isinstance(source, ScoringInput) else build_input(recommender, source, users=users, items=items)
    exclude = item_filter.excluded(inp.item_ids) if item_filter is not None else None
    frames = []
    for top in iter_topn(recommender, inp.history, top_n, chunk_size=chunk_size, exclude=exclude):
        row, rank, col, score = top.entries()
        frames.append(pd.DataFrame({"user": inp.user_ids[row], "rank": rank, "item": inp.item_ids[col],
                                    "score": score}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["user", "rank", "item", "score"])


def recommend_to_store(
    recommender: Recommender,
    snapshot_or_history: Snapshot | pd.DataFrame | str | Path | tuple[Sequence[Any], sp.spmatrix],
    store: RecommendationStore,
    top_n: int,
    batch_key: str,
    model_name: str,
    model_version: str | None = None,
    run_id: str | None = None,
    snapshot_id: str | None = None,
    users: Sequence[Any] | None = None,
    chunk_size: int = 1000,
    shard: int = 0,
    *,
    n_shards: int = 1,
    publish: bool | None = None,
    items: IdMap | None = None,
    device: str | torch.device | None = None,
    keep: int | None = None,
    item_metadata: pd.DataFrame | None = None,
    item_filter: ItemFilter | None = None,
) -> BatchSummary:
    """Score users in chunks and stream their top-N into a staging batch, then publish it atomically.

    With `n_shards` > 1 this call writes shard `shard` (every n_shards-th user) and does not publish unless
    `publish=True`; publish once all shards are written with `store.publish(batch_key, n_shards=n_shards)`.
    A batch key already published returns that batch (`reused=True`) without scoring anything.
    `item_metadata` (item_id, title[, genres]) becomes the batch's titles, written before its rows; `item_filter`:
    allow/deny lists applied before each list is cut (a user still gets N eligible items)."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in [0, {n_shards}); got {shard}")
    publish = (n_shards == 1) if publish is None else publish
    inp = build_input(recommender, snapshot_or_history, users=users, items=items)
    batch = store.begin_batch(
        batch_key, model_name=model_name, top_n=top_n, n_items=len(inp.item_ids), model_version=model_version,
        run_id=run_id, snapshot_id=snapshot_id or inp.snapshot_id, n_shards=n_shards,
    )
    if batch.done:
        logger.info("batch key %r was already published as batch %s; nothing to do", batch_key, batch.batch_id)
        return BatchSummary.of(batch, reused=True)
    rows = np.arange(shard, len(inp.user_ids), n_shards, dtype=np.int64)
    exclude = item_filter.excluded(inp.item_ids) if item_filter is not None else None
    expected = int(expected_counts(inp.history, top_n, exclude)[rows].sum())
    logger.info("batch %s shard %d/%d: scoring %d users in %d chunk(s), top %d of %d items", batch.batch_id,
                shard, n_shards, len(rows), -(-len(rows) // chunk_size), top_n, len(inp.item_ids))
    try:
        if item_metadata is not None:
            store.write_items(batch, item_metadata)
        chunks = _scored_chunks(recommender, inp, top_n, rows, chunk_size, device, f"batch {batch.batch_id}", exclude)
        written = store.write_shard(batch, chunks, shard=shard, expected_rows=expected)
        if publish:
            return store.publish(batch, n_shards=n_shards, keep=keep)
    except (Exception, KeyboardInterrupt) as exc:
        if publish:  # a single-shard job owns the whole batch: fail it now (a sharded one leaves it to retries)
            _fail(store, batch, exc)
        raise
    return BatchSummary(
        batch_id=batch.batch_id, batch_key=batch.batch_key, status="staging", model_name=model_name,
        model_version=batch.model_version, top_n=top_n, user_count=written["users"], expected_rows=expected,
        row_count=written["rows"],
    )


def _scored_chunks(recommender: Recommender, inp: ScoringInput, top_n: int, rows: np.ndarray, chunk_size: int,
                   device: str | torch.device | None, what: str,
                   exclude: np.ndarray | None = None) -> Iterator[RecChunk]:
    """Top-N of `rows` as raw-id chunks, scored while the store writes them (nothing accumulates)."""
    topn = iter_topn(recommender, inp.history, top_n, chunk_size=chunk_size, device=device, rows=rows,
                     exclude=exclude)
    n_chunks = -(-len(rows) // chunk_size)
    for t in progress(topn, total=n_chunks, desc=f"top-{top_n} {what}", unit="chunk"):
        yield RecChunk(inp.user_ids[t.rows], inp.item_ids[np.maximum(t.items, 0)], t.scores, t.counts)


def _fail(store: RecommendationStore, batch: Batch, exc: BaseException) -> None:
    """Mark `batch` failed because of `exc`; a store that cannot do it now leaves it to the next run."""
    try:
        store.fail(batch, f"{type(exc).__name__}: {exc}")
    except StoreError as fail_exc:
        logger.error("could not mark batch %s failed (the next run will): %s", batch.batch_id, fail_exc)

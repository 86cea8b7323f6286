"""A batch's life: started (or reused, or restarted) in staging, failed, or checked complete and published in one
transaction, which supersedes the current batch and then applies retention."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import Connection

from recvae.serving.store.database import Database
from recvae.serving.store.errors import StoreError
from recvae.serving.store.reader import batch_where
from recvae.serving.store.records import Batch, BatchSummary, batch_ref
from recvae.serving.store.retention import Retention
from recvae.serving.store.schema import Schema

logger = logging.getLogger(__name__)


class Batches:
    """Starting, failing and publishing batches of one store."""

    def __init__(self, db: Database, schema: Schema, retention: Retention) -> None:
        self.db = db
        self.schema = schema
        self.retention = retention

    def _get(self, conn: Connection, batch_id: int) -> Batch:
        batch = batch_where(self.db, conn, "batch_id = :b", {"b": batch_id})
        if batch is None:  # only asked for rows this transaction has just seen or written
            raise StoreError(f"batch {batch_id} vanished during a transaction")
        return batch

    def begin(self, batch_key: str, *, model_name: str, top_n: int, n_items: int | None = None,
              model_version: str | None = None, run_id: str | None = None, snapshot_id: str | None = None,
              n_shards: int | None = None) -> Batch:
        """The batch for `batch_key`: new, reused (a retry), restarted (it had failed) or published; see
        RecommendationStore.begin_batch."""
        if not batch_key:
            raise ValueError("batch_key must be a non-empty string")
        if top_n < 1:
            raise ValueError(f"top_n must be >= 1; got {top_n}")
        identity = {
            "model_name": model_name, "model_version": _opt_str(model_version), "run_id": _opt_str(run_id),
            "snapshot_id": _opt_str(snapshot_id), "top_n": int(top_n),
            "n_items": None if n_items is None else int(n_items),
        }
        self.schema.ensure_once()
        with self.db.write(f"starting batch {batch_key!r}") as conn:
            self.db.lock(conn)
            self.retention.fail_abandoned(conn, except_key=batch_key)
            batch = batch_where(self.db, conn, "batch_key = :k", {"k": batch_key})
            if batch is None:
                batch = self._insert(conn, batch_key, identity, n_shards)
            else:
                _check_identity(batch, identity)
                if batch.status == "failed":
                    batch = self._restart(conn, batch, n_shards)
                elif batch.status == "staging":
                    logger.info("batch %s (%r) is still in staging; reusing it (retry)", batch.batch_id, batch_key)
                else:
                    logger.info("batch %s (%r) is already %s; nothing to write",
                                batch.batch_id, batch_key, batch.status)
        self.retention.cleanup_dead()
        return batch

    def _insert(self, conn: Connection, batch_key: str, identity: dict[str, Any], n_shards: int | None) -> Batch:
        row = self.db.execute(
            conn,
            "INSERT INTO ${batches} (batch_key, model_name, model_version, run_id, snapshot_id, top_n, n_items,"
            " n_shards, status, created_at) VALUES (:batch_key, :model_name, :model_version, :run_id,"
            " :snapshot_id, :top_n, :n_items, :n_shards, 'staging', :now) RETURNING batch_id",
            {**identity, "batch_key": batch_key, "n_shards": n_shards, "now": self.db.now()},
        ).one()
        batch = self._get(conn, row[0])
        logger.info("batch %s (%r) started in staging", batch.batch_id, batch_key)
        return batch

    def _restart(self, conn: Connection, batch: Batch, n_shards: int | None) -> Batch:
        """A failed batch back in staging, from scratch: its rows, titles and shards deleted."""
        b = {"b": batch.batch_id}
        for table in ("recommendations", "items", "shards"):
            self.db.execute(conn, f"DELETE FROM ${{{table}}} WHERE batch_id = :b", b)
        self.db.execute(
            conn,
            "UPDATE ${batches} SET status = 'staging', error = NULL, finished_at = NULL, created_at = :now,"
            " n_shards = :n WHERE batch_id = :b",
            {**b, "now": self.db.now(), "n": n_shards},
        )
        logger.warning("batch %s (%r) had failed; restarting it from scratch", batch.batch_id, batch.batch_key)
        return self._get(conn, batch.batch_id)

    def fail(self, batch: Batch | int, error: str) -> None:
        """Mark a staging batch failed and delete its rows and titles (the current batch is not touched)."""
        batch_id = batch.batch_id if isinstance(batch, Batch) else int(batch)
        db = self.db
        with db.write(f"marking batch {batch_id} failed") as conn:
            db.execute(
                conn,
                "UPDATE ${batches} SET status = 'failed', finished_at = :now, error = :e"
                " WHERE batch_id = :b AND status = 'staging'",
                {"b": batch_id, "now": db.now(), "e": str(error)[:2000]},
            )
            status = db.execute(conn, "SELECT status FROM ${batches} WHERE batch_id = :b", {"b": batch_id}).scalar()
            if status == "failed":  # never delete the rows of a batch that got published meanwhile
                db.execute(conn, "DELETE FROM ${recommendations} WHERE batch_id = :b", {"b": batch_id})
                db.execute(conn, "DELETE FROM ${items} WHERE batch_id = :b", {"b": batch_id})
        logger.warning("batch %s marked failed: %s", batch_id, error)

    def publish(self, batch: Batch | str | int, *, n_shards: int | None = None,
                keep: int | None = None) -> BatchSummary:
        """Check a staging batch is complete and make it the current one in one transaction, then apply retention.
        Publishing a published batch returns it unchanged."""
        self.schema.ensure_once()
        where, params = batch_ref(batch)
        with self.db.write("publishing") as conn:
            self.db.lock(conn)
            current = batch_where(self.db, conn, where, params, suffix=self.db.row_lock("FOR UPDATE"))
            if current is None:
                raise StoreError(f"no batch {params['v']!r} to publish")
            if current.done:
                logger.info("batch %s is already %s", current.batch_id, current.status)
                return BatchSummary.of(current, reused=True)
            if current.status != "staging":
                raise StoreError(f"batch {current.batch_id} is {current.status}; only a staging batch can be published")
            counts = self._check_complete(conn, current, n_shards or current.n_shards)
            abandoned = self.retention.fail_abandoned(conn, except_key=current.batch_key)
            published = self._make_current(conn, current.batch_id, counts)
        logger.info("batch %s (%r) published: %d users, %d rows", published.batch_id, published.batch_key,
                    counts["u"], counts["r"])
        expired = self.retention.apply(keep)
        if abandoned and not expired:  # retention cleans up dead batches itself when it expires one
            self.retention.cleanup_dead()
        return BatchSummary.of(published, expired=expired)

    def _check_complete(self, conn: Connection, batch: Batch, n_shards: int | None) -> dict[str, int]:
        """StoreError unless every shard finished and the table holds exactly the rows they report;
        {'u': users, 'e': expected rows, 'r': rows, 'n': shards}."""
        b = batch.batch_id
        shards = self.db.execute(
            conn,
            "SELECT shard, user_count, expected_rows, row_count, written_at FROM ${shards} WHERE batch_id = :b"
            " ORDER BY shard",
            {"b": b},
        ).all()
        written = [s for s in shards if s.written_at is not None]
        unfinished = [s.shard for s in shards if s.written_at is None]
        if unfinished:
            raise StoreError(f"batch {b}: shard(s) {unfinished} started but never finished writing")
        if not written:
            raise StoreError(f"batch {b}: no shard has been written")
        if n_shards and sorted(s.shard for s in written) != list(range(n_shards)):
            raise StoreError(f"batch {b}: expected shards 0..{n_shards - 1}, written: {[s.shard for s in written]}")
        expected = sum(int(s.expected_rows) for s in written)
        declared = sum(int(s.row_count) for s in written)
        actual, max_rank = self.db.execute(
            conn, "SELECT COUNT(*), MAX(rank) FROM ${recommendations} WHERE batch_id = :b", {"b": b}
        ).one()
        if not (int(actual) == declared == expected):
            raise StoreError(f"batch {b}: {actual} rows in the table, shards report {declared}, expected {expected}")
        if max_rank is not None and int(max_rank) > batch.top_n:
            raise StoreError(f"batch {b}: rank {max_rank} exceeds top_n {batch.top_n}")
        return {"u": sum(int(s.user_count) for s in written), "e": expected, "r": int(actual), "n": len(written)}

    def _make_current(self, conn: Connection, batch_id: int, counts: dict[str, int]) -> Batch:
        """Supersede the published batch and publish `batch_id` (in the caller's transaction)."""
        now = self.db.now()
        self.db.execute(
            conn, "UPDATE ${batches} SET status = 'superseded', superseded_at = :now WHERE status = 'published'",
            {"now": now},
        )
        self.db.execute(
            conn,
            "UPDATE ${batches} SET status = 'published', published_at = :now, finished_at = :now, user_count = :u,"
            " expected_rows = :e, row_count = :r, n_shards = :n WHERE batch_id = :b AND status = 'staging'",
            {**counts, "b": batch_id, "now": now},
        )
        return self._get(conn, batch_id)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def _check_identity(batch: Batch, identity: dict[str, Any]) -> None:
    """A batch key always names the same model, data and N; a mismatch is a key collision, not a retry."""
    diffs = [
        f"{k} {getattr(batch, k)!r} (now {v!r})"
        for k, v in identity.items()
        if v is not None and getattr(batch, k) != v
    ]
    if diffs:
        raise StoreError(
            f"batch key {batch.batch_key!r} already names batch {batch.batch_id} with {', '.join(diffs)}; "
            "use a new batch key for a different model, data or N"
        )

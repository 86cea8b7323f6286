"""Retention and clean-up: expiring old published batches, failing batches abandoned by a crashed writer, and
deleting the rows and titles of failed and expired batches."""

from __future__ import annotations

import logging

from sqlalchemy.engine import Connection

from recvae.serving.store.database import Database
from recvae.serving.store.records import GcReport
from recvae.serving.store.schema import Schema

logger = logging.getLogger(__name__)

# A staging batch (other than the one being started) with no activity since :cut: created before it, and no shard
# started or written after it.
_IDLE = (
    "b.status = 'staging' AND b.batch_key <> :k AND b.created_at <= :cut AND NOT EXISTS (SELECT 1 FROM"
    " ${shards} AS s WHERE s.batch_id = b.batch_id AND (s.started_at > :cut OR s.written_at > :cut))"
)
_DEAD = "EXISTS (SELECT 1 FROM ${batches} AS b WHERE b.batch_id = :b AND b.status IN ('failed', 'expired'))"


class Retention:
    """Keeps `keep` published batches (current included) and fails staging batches idle for `stale_after_s`."""

    def __init__(self, db: Database, schema: Schema, *, keep: int, stale_after_s: float) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1; got {keep}")
        self.db = db
        self.schema = schema
        self.keep = keep
        self.stale_after_s = float(stale_after_s)

    def fail_abandoned(self, conn: Connection, except_key: str | None, stale_after_s: float | None = None) -> list[int]:
        """Mark failed the staging batches (other than `except_key`) abandoned by their writer: no activity (created,
        a shard started or written) for `stale_after_s` (default: the store's), and no shard being written now.

        A shard being written holds its batch row (PostgreSQL: FOR SHARE, skipped here by SKIP LOCKED; SQLite: the
        write lock, which this transaction waits for), so a live writer is never failed however long a shard takes;
        the age only has to outlast the gaps between a batch's steps. The caller holds a write transaction."""
        db = self.db
        stale = self.stale_after_s if stale_after_s is None else float(stale_after_s)
        params = {"k": except_key or "", "cut": db.ago(stale)}
        lock = db.row_lock("FOR UPDATE OF b SKIP LOCKED")
        ids = [r[0] for r in db.execute(conn, f"SELECT b.batch_id FROM ${{batches}} AS b WHERE {_IDLE}{lock}", params)]
        if not ids:
            return []
        error = f"abandoned: no activity for {stale:g} s and no shard being written (writer crashed or killed?)"
        # The condition again: a shard may have started between the SELECT and now (PostgreSQL, READ COMMITTED).
        failed = sorted(r[0] for r in db.execute(
            conn,
            f"UPDATE ${{batches}} AS b SET status = 'failed', finished_at = :now, error = :e WHERE b.batch_id IN :ids"
            f" AND {_IDLE} RETURNING batch_id",
            {**params, "now": db.now(), "e": error}, ids=ids,
        ))
        if failed:
            logger.warning("marked abandoned staging batch(es) %s as failed (idle for over %g s)", failed, stale)
        return failed

    def cleanup_dead(self) -> dict[int, tuple[int, int]]:
        """Delete the rows and titles of failed and expired batches, one transaction per batch: {id: (rows, titles)}."""
        db = self.db
        with db.read("looking for rows of failed batches") as conn:
            ids = [r[0] for r in db.execute(
                conn,
                "SELECT b.batch_id FROM ${batches} AS b WHERE b.status IN ('failed', 'expired') AND (EXISTS (SELECT 1"
                " FROM ${recommendations} AS r WHERE r.batch_id = b.batch_id) OR EXISTS (SELECT 1 FROM ${items} AS i"
                " WHERE i.batch_id = b.batch_id)) ORDER BY b.batch_id",
            )]
        done: dict[int, tuple[int, int]] = {}
        for b in ids:
            with db.write(f"deleting the rows of batch {b}") as conn:
                # the status again: a failed batch may have been restarted since (its new rows are not dead)
                n = db.execute(conn, f"DELETE FROM ${{recommendations}} WHERE batch_id = :b AND {_DEAD}",
                               {"b": b}).rowcount
                t = db.execute(conn, f"DELETE FROM ${{items}} WHERE batch_id = :b AND {_DEAD}", {"b": b}).rowcount
            done[b] = (n, t)
            logger.info("deleted %d row(s) and %d title(s) of dead batch %s", n, t, b)
        return done

    def gc(self, stale_after_s: float | None = None) -> GcReport:
        """Fail abandoned staging batches (see `fail_abandoned`; `stale_after_s` defaults to the store's) and delete
        the rows and titles of every failed or expired batch."""
        self.schema.ensure_once()
        with self.db.write("failing abandoned batches") as conn:
            self.db.lock(conn)
            failed = self.fail_abandoned(conn, except_key=None, stale_after_s=stale_after_s)
        return GcReport(failed=failed, cleaned=self.cleanup_dead())

    def apply(self, keep: int | None = None) -> list[int]:
        """Expire published batches beyond the `keep` most recent (current included); delete their rows and titles."""
        keep = self.keep if keep is None else keep
        if keep < 1:
            raise ValueError(f"keep must be >= 1; got {keep}")
        db = self.db
        with db.write("applying retention") as conn:
            ids = [r[0] for r in db.execute(
                conn,
                "SELECT batch_id FROM ${batches} WHERE status IN ('published', 'superseded') ORDER BY"
                " CASE WHEN status = 'published' THEN 0 ELSE 1 END, published_at DESC, batch_id DESC",
            ).all()]
            old = ids[keep:]
            if old:
                db.execute(conn, "UPDATE ${batches} SET status = 'expired' WHERE status = 'superseded'"
                           " AND batch_id IN :ids", ids=old)
                db.execute(conn, "DELETE FROM ${shards} WHERE batch_id IN :ids", ids=old)
        if old:
            logger.info("retention (keep %d): expired batch(es) %s", keep, old)
            self.cleanup_dead()
        return old

"""RecommendationStore: the one object the batch job, the pipeline and `recvae db` use, composed of the database,
its schema, the readers, the writers, the batch life cycle and retention."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.engine import URL, Engine

from recvae.data.item_metadata import read_item_metadata
from recvae.serving.store.batches import Batches
from recvae.serving.store.database import Database
from recvae.serving.store.names import TableNames
from recvae.serving.store.reader import Reader
from recvae.serving.store.records import Batch, BatchSummary, GcReport, RecChunk
from recvae.serving.store.retention import Retention
from recvae.serving.store.schema import Schema
from recvae.serving.store.writers import Writer

logger = logging.getLogger(__name__)


class RecommendationStore:
    """Batches of top-N lists in SQL: written to staging, checked, then made current in one transaction."""

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        tables: TableNames | None = None,
        keep: int = 3,
        stale_after_s: float = 6 * 3600.0,
        busy_timeout_s: float = 600.0,
        connect_timeout_s: int = 5,
    ) -> None:
        """`keep`: published batches kept (current included); `stale_after_s`: a staging batch of another key with
        no activity for this long is treated as abandoned (crashed) and failed by the next begin, publish or gc
        (keep it above the gap between a batch's steps, e.g. Airflow tasks waiting for a worker; a shard being
        written is never failed); `busy_timeout_s`: how long a SQLite writer waits for another one (SQLite has one
        writer at a time, and a shard holds the write lock while it is scored and written); `connect_timeout_s`: how
        long a PostgreSQL connection attempt may take, so an unreachable server fails in seconds."""
        self.db = Database(url, tables or TableNames(), busy_timeout_s=busy_timeout_s,
                           connect_timeout_s=connect_timeout_s)
        self._schema = Schema(self.db)
        self._retention = Retention(self.db, self._schema, keep=keep, stale_after_s=stale_after_s)
        self._reader = Reader(self.db, self._schema)
        self._writer = Writer(self.db, self._schema)
        self._batches = Batches(self.db, self._schema, self._retention)

    def __repr__(self) -> str:
        return f"RecommendationStore({self.url_masked})"

    def __enter__(self) -> RecommendationStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the database ---------------------------------------------------------------------------------------

    @property
    def url(self) -> URL:
        """The parsed database URL (holds the password: print `url_masked`)."""
        return self.db.url

    @property
    def url_masked(self) -> str:
        """The URL with its passwords masked, for messages."""
        return self.db.url_masked

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.db.dialect

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (e.g. for ad-hoc SQL in tests)."""
        return self.db.engine

    @property
    def tables(self) -> TableNames:
        """The names of the store's tables and view."""
        return self.db.tables

    @property
    def keep(self) -> int:
        """Published batches kept by retention (current included)."""
        return self._retention.keep

    @property
    def stale_after_s(self) -> float:
        """Idle seconds after which a staging batch of another key counts as abandoned."""
        return self._retention.stale_after_s

    def close(self) -> None:
        """Release pooled connections."""
        self.db.close()

    def check_connection(self) -> None:
        """Raise StoreError (masked URL) when the database cannot be reached."""
        self.db.check_connection()

    def ensure_schema(self) -> None:
        """Create the tables, indexes and view if missing, and migrate an older layout (idempotent; safe to run
        concurrently)."""
        self._schema.ensure()

    # -- batches --------------------------------------------------------------------------------------------

    def begin_batch(self, batch_key: str, *, model_name: str, top_n: int, n_items: int | None = None,
                    model_version: str | None = None, run_id: str | None = None, snapshot_id: str | None = None,
                    n_shards: int | None = None) -> Batch:
        """The batch for `batch_key`: a new staging batch, the same staging batch again (a retry), a failed one
        restarted from scratch, or the published one untouched (check `batch.done`). Also fails abandoned
        staging batches of other keys and deletes the rows and titles of failed and expired batches."""
        return self._batches.begin(batch_key, model_name=model_name, top_n=top_n, n_items=n_items,
                                   model_version=model_version, run_id=run_id, snapshot_id=snapshot_id,
                                   n_shards=n_shards)

    def write_shard(self, batch: Batch, chunks: Iterable[RecChunk], *, shard: int = 0,
                    expected_rows: int) -> dict[str, int]:
        """Replace shard `shard` of a staging batch with `chunks`, in one transaction (COPY on PostgreSQL);
        the rows written must equal `expected_rows`. Returns {'users', 'rows'}."""
        return self._writer.write_shard(batch, chunks, shard=shard, expected_rows=expected_rows)

    def publish(self, batch: Batch | str | int, *, n_shards: int | None = None,
                keep: int | None = None) -> BatchSummary:
        """Check a staging batch is complete and make it the current one in one transaction, then apply retention.
        `batch`: a Batch, a batch key (str) or a batch id (int). Publishing a published batch returns it unchanged."""
        return self._batches.publish(batch, n_shards=n_shards, keep=keep)

    def fail(self, batch: Batch | int, error: str) -> None:
        """Mark a staging batch failed and delete its rows and titles (the current batch is not touched)."""
        self._batches.fail(batch, error)

    # -- retention and clean-up -----------------------------------------------------------------------------

    def apply_retention(self, keep: int | None = None) -> list[int]:
        """Expire published batches beyond the `keep` most recent (current included); delete their rows and titles."""
        return self._retention.apply(keep)

    def cleanup_dead_rows(self) -> list[int]:
        """Delete the rows and titles of failed and expired batches (their batch rows stay as history); ids cleaned."""
        return list(self._retention.cleanup_dead())

    def gc(self, stale_after_s: float | None = None) -> GcReport:
        """Fail abandoned staging batches (`stale_after_s` defaults to the store's) and delete the rows and titles of
        every failed or expired batch. What `recvae db gc` runs."""
        return self._retention.gc(stale_after_s)

    # -- reading --------------------------------------------------------------------------------------------

    def get_batch(self, batch: str | int) -> Batch | None:
        """The batch with this key (str) or id (int), or None."""
        return self._reader.get_batch(batch)

    def current_batch(self) -> Batch | None:
        """The published batch, or None."""
        return self._reader.current_batch()

    def list_batches(self, limit: int = 20) -> list[Batch]:
        """The most recent batches, newest first."""
        return self._reader.list_batches(limit)

    def count_rows(self, batch_id: int) -> int:
        """Rows stored for a batch."""
        return self._reader.count_rows(batch_id)

    def query(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """Run queries/NAME.sql of the SQL folder with bound `params`; rows as dicts."""
        return self._reader.query(name, **params)

    def user_recommendations(self, user_id: str, n: int = 10) -> list[dict[str, Any]]:
        """A user's top-n in the current batch, with titles when known."""
        return self.query("user_top_with_titles", user_id=str(user_id), n=int(n))

    # -- item titles ----------------------------------------------------------------------------------------

    def write_items(self, batch: Batch | str | int, items: pd.DataFrame) -> int:
        """Set the item titles (and genres) of a staging batch from a DataFrame with columns item_id, title[, genres];
        rows written. They replace the batch's earlier titles (a retry) and become visible when it is published;
        a published batch's titles never change."""
        return self._writer.write_items(batch, items)

    def load_item_metadata(self, batch: Batch | str | int, path: str | Path) -> int:
        """Set a staging batch's titles from a dataset folder or file (movies.dat, u.item); 0 when there is none."""
        meta = read_item_metadata(path)
        if meta is None:
            logger.info("%s has no item metadata (movies.dat or u.item); titles stay empty", path)
            return 0
        return self.write_items(batch, meta)

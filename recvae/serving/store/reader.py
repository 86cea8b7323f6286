"""Reading the store: batches, row counts, and the named queries of the SQL folder."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from recvae.serving.store.database import Database
from recvae.serving.store.records import BATCH_COLUMNS, Batch, batch_ref
from recvae.serving.store.schema import Schema
from recvae.serving.store.sqlfiles import check_query_params, load_query


def batch_where(db: Database, conn: Connection, where: str, params: dict[str, Any], suffix: str = "") -> Batch | None:
    """The batch row matching `where` (a condition on the batches table), or None."""
    row = db.execute(conn, f"SELECT {BATCH_COLUMNS} FROM ${{batches}} WHERE {where}{suffix}", params).mappings().first()
    return None if row is None else Batch.from_row(row)


class Reader:
    """Read-only access to batches and recommendations (creating the tables first when they are missing)."""

    def __init__(self, db: Database, schema: Schema) -> None:
        self.db = db
        self.schema = schema

    def get_batch(self, batch: str | int) -> Batch | None:
        """The batch with this key (str) or id (int), or None."""
        self.schema.ensure_once()
        where, params = batch_ref(batch)
        with self.db.read("reading a batch") as conn:
            return batch_where(self.db, conn, where, params)

    def current_batch(self) -> Batch | None:
        """The published batch, or None."""
        self.schema.ensure_once()
        with self.db.read("reading the current batch") as conn:
            return batch_where(self.db, conn, "status = 'published'", {})

    def list_batches(self, limit: int = 20) -> list[Batch]:
        """The most recent batches, newest first."""
        self.schema.ensure_once()
        sql = f"SELECT {BATCH_COLUMNS} FROM ${{batches}} ORDER BY batch_id DESC LIMIT :n"
        with self.db.read("listing batches") as conn:
            rows = self.db.execute(conn, sql, {"n": int(limit)}).mappings().all()
        return [Batch.from_row(r) for r in rows]

    def count_rows(self, batch_id: int) -> int:
        """Rows stored for a batch."""
        with self.db.read("counting rows") as conn:
            sql = "SELECT COUNT(*) FROM ${recommendations} WHERE batch_id = :b"
            return int(self.db.execute(conn, sql, {"b": batch_id}).scalar())

    def query(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """Run queries/NAME.sql with bound `params`; rows as dicts."""
        sql = load_query(name, self.db.tables)
        check_query_params(name, sql, params)
        self.schema.ensure_once()
        with self.db.read(f"running query {name}") as conn:
            return [dict(r) for r in conn.execute(text(sql), params).mappings().all()]

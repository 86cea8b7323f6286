"""Creating the store's tables, indexes and view (from the packaged DDL), and migrating an older layout."""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.engine import Connection

from recvae.serving.store.database import Database
from recvae.serving.store.names import quote
from recvae.serving.store.sqlfiles import schema_sql, split_statements

logger = logging.getLogger(__name__)

_LEGACY_ITEMS = "recvae_items_migration"  # temporary copy of the old shared titles table while it is migrated


class Schema:
    """The tables of one store: checked once per store object, created or migrated when missing or old."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.ready = False

    def ensure_once(self) -> None:
        """`ensure` unless this object already did."""
        if not self.ready:
            self.ensure()

    def ensure(self) -> None:
        """Create the tables, indexes and view if missing, and migrate an older layout (idempotent; safe to run
        concurrently)."""
        db = self.db
        statements = split_statements(schema_sql(db.dialect, db.tables))
        with db.read("checking the recommendation tables") as conn:
            if self._present(conn):
                self.ready = True
                return
        with db.write("creating the recommendation tables") as conn:
            db.lock(conn)
            if db.tables.schema:
                conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quote(db.tables.schema)}"))
            legacy = self._legacy_items(conn)  # checked again under the lock: another process may have migrated
            if legacy:
                db.execute(conn, f"CREATE TEMP TABLE {_LEGACY_ITEMS} AS SELECT item_id, title, genres, updated_at"
                           " FROM ${items}")
                db.execute(conn, "DROP TABLE ${items}")
            for stmt in statements:
                conn.exec_driver_sql(stmt)
            if legacy:
                self._adopt_legacy_items(conn)
        self.ready = True

    def _present(self, conn: Connection) -> bool:
        """Whether every table, index and the view exist in their current form (then no DDL runs, so no DDL lock
        blocks readers)."""
        t = self.db.tables
        names = [t.batches, t.shards, t.recommendations, t.items, t.current_view, t.batches_published_idx]
        return self.db.all_exist(conn, names) and not self._legacy_items(conn)

    def _legacy_items(self, conn: Connection) -> bool:
        """Whether the items table is the one shared by all batches (no batch_id column), from before titles
        belonged to a batch."""
        t = self.db.tables
        if self.db.dialect == "sqlite":
            sql = ("SELECT COUNT(*), COALESCE(SUM(p.name = 'batch_id'), 0) FROM sqlite_master AS m,"
                   " pragma_table_info(m.name) AS p WHERE m.type = 'table' AND m.name = :t")
            params = {"t": t.items}
        else:
            sql = ("SELECT COUNT(*), COUNT(*) FILTER (WHERE attname = 'batch_id') FROM pg_attribute"
                   " WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped")
            params = {"t": t.qualified(t.items)}
        columns, with_batch = conn.execute(text(sql), params).one()
        return int(columns) > 0 and int(with_batch) == 0

    def _adopt_legacy_items(self, conn: Connection) -> None:
        """Give each live batch (staging, published, superseded) a copy of the old shared titles: what its
        readers saw before; then drop the temporary copy."""
        n = self.db.execute(
            conn,
            "INSERT INTO ${items} (batch_id, item_id, title, genres, updated_at) SELECT b.batch_id, l.item_id,"
            f" l.title, l.genres, l.updated_at FROM {_LEGACY_ITEMS} AS l CROSS JOIN ${{batches}} AS b"
            " WHERE b.status IN ('staging', 'published', 'superseded')",
        ).rowcount
        self.db.execute(conn, f"DROP TABLE {_LEGACY_ITEMS}")
        logger.warning("%s: migrated the item titles shared by all batches to per-batch titles (%d row(s))",
                       self.db.url_masked, n)

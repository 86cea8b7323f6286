"""Writing a staging batch: a shard's rows in one transaction (PostgreSQL COPY, SQLite executemany), counted
against what the shard must hold, and the batch's item titles."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable

import pandas as pd
from sqlalchemy.engine import Connection

from recvae.serving.store.database import Database
from recvae.serving.store.errors import StoreError
from recvae.serving.store.records import REC_COLUMNS, Batch, RecChunk, batch_ref
from recvae.serving.store.schema import Schema

logger = logging.getLogger(__name__)

# (database, connection, batch id, shard, chunks) -> (users, rows) written in the caller's transaction
RowLoader = Callable[[Database, Connection, int, int, Iterable[RecChunk]], tuple[int, int]]
_DUPLICATE_USER = "a user appears twice: overlapping shards?"


class Writer:
    """Writes the rows and titles of staging batches; a batch that is not staging is never written."""

    def __init__(self, db: Database, schema: Schema) -> None:
        self.db = db
        self.schema = schema

    def write_shard(self, batch: Batch, chunks: Iterable[RecChunk], *, shard: int = 0,
                    expected_rows: int) -> dict[str, int]:
        """Replace shard `shard` of a staging batch with `chunks`, in one transaction (COPY on PostgreSQL);
        the rows written must equal `expected_rows`. Returns {'users', 'rows'}."""
        if shard < 0:
            raise ValueError(f"shard must be >= 0; got {shard}")
        db, b = self.db, batch.batch_id
        with db.write(f"starting shard {shard} of batch {b}") as conn:
            db.execute(
                conn,
                "INSERT INTO ${shards} (batch_id, shard, started_at) VALUES (:b, :s, :now)"
                " ON CONFLICT (batch_id, shard) DO UPDATE SET started_at = excluded.started_at, written_at = NULL,"
                " row_count = NULL, user_count = NULL, expected_rows = NULL",
                {"b": b, "s": shard, "now": db.now()},
            )
        with db.write(f"writing shard {shard} of batch {b}") as conn:
            # holding the batch row marks this writer live (see Retention.fail_abandoned)
            sql = "SELECT status FROM ${batches} WHERE batch_id = :b" + db.row_lock("FOR SHARE")
            status = db.execute(conn, sql, {"b": b}).scalar()
            if status != "staging":
                raise StoreError(f"batch {b} is {status or 'missing'}, not staging: refusing to write shard {shard}")
            db.execute(conn, "DELETE FROM ${recommendations} WHERE batch_id = :b AND shard = :s", {"b": b, "s": shard})
            users, rows = LOADERS[db.dialect](db, conn, b, shard, chunks)
            if rows != expected_rows:
                raise StoreError(
                    f"shard {shard} of batch {b}: wrote {rows} rows but expected {expected_rows} "
                    "(sum over users of min(N, unseen candidates)); the shard was rolled back"
                )
            db.execute(
                conn,
                "UPDATE ${shards} SET user_count = :u, expected_rows = :e, row_count = :r, written_at = :now"
                " WHERE batch_id = :b AND shard = :s",
                {"b": b, "s": shard, "u": users, "e": int(expected_rows), "r": rows, "now": db.now()},
            )
        logger.info("batch %s shard %d: %d users, %d rows written to staging", b, shard, users, rows)
        return {"users": users, "rows": rows}

    def write_items(self, batch: Batch | str | int, items: pd.DataFrame) -> int:
        """Set the item titles (and genres) of a staging batch from a DataFrame with columns item_id, title[, genres];
        rows written. They replace the batch's earlier titles (a retry) and become visible when it is published;
        a published batch's titles never change."""
        missing = {"item_id", "title"} - set(items.columns)
        if missing:
            raise ValueError(f"item metadata lacks column(s) {sorted(missing)}; has {list(items.columns)}")
        ids = items["item_id"].astype(str)
        if ids.duplicated().any():
            raise StoreError(f"item metadata repeats item id(s) {sorted(set(ids[ids.duplicated()]))[:5]}")
        genres = items["genres"] if "genres" in items.columns else pd.Series([None] * len(items), index=items.index)
        db = self.db
        now = db.now()
        rows = [{"i": i, "t": None if pd.isna(t) else str(t), "g": None if pd.isna(g) else str(g), "now": now}
                for i, t, g in zip(ids, items["title"], genres, strict=True)]
        self.schema.ensure_once()
        where, params = batch_ref(batch)
        with db.write("writing item titles") as conn:
            lock = db.row_lock("FOR SHARE")  # as a shard write: a live writer
            row = db.execute(conn, f"SELECT batch_id, status FROM ${{batches}} WHERE {where}{lock}", params).first()
            if row is None or row.status != "staging":
                state = "missing" if row is None else row.status
                raise StoreError(f"batch {params['v']!r} is {state}, not staging: refusing to write its item titles")
            b = row.batch_id
            db.execute(conn, "DELETE FROM ${items} WHERE batch_id = :b", {"b": b})
            if rows:
                db.execute(conn, "INSERT INTO ${items} (batch_id, item_id, title, genres, updated_at)"
                           " VALUES (:b, :i, :t, :g, :now)", [{**r, "b": b} for r in rows])
        logger.info("batch %s: %d item title(s) written", b, len(rows))
        return len(rows)


def insert_sqlite(db: Database, conn: Connection, b: int, shard: int, chunks: Iterable[RecChunk]) -> tuple[int, int]:
    """SQLite: executemany on the driver's cursor, one chunk at a time."""
    sql = db.render(f"INSERT INTO ${{recommendations}} ({REC_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)")
    driver = conn.connection.driver_connection
    assert driver is not None  # a connection checked out of the pool always has one
    cur = driver.cursor()
    users = rows = 0
    try:
        for chunk in chunks:
            u, r, i, s = chunk.rows()
            cur.executemany(sql, zip([b] * len(u), u, r, i, s, [shard] * len(u), strict=True))
            users += len(chunk.user_ids)
            rows += len(u)
    except sqlite3.IntegrityError as exc:
        raise StoreError(f"batch {b} shard {shard}: {exc} ({_DUPLICATE_USER})") from None
    except sqlite3.Error as exc:
        raise StoreError(f"writing batch {b} shard {shard} to {db.url_masked}: {exc}") from None
    finally:
        cur.close()
    return users, rows


def copy_postgresql(db: Database, conn: Connection, b: int, shard: int,
                    chunks: Iterable[RecChunk]) -> tuple[int, int]:
    """PostgreSQL: binary COPY, streamed row by row as the chunks arrive."""
    import psycopg  # only on PostgreSQL

    driver = conn.connection.driver_connection
    assert driver is not None  # a connection checked out of the pool always has one
    users = rows = 0
    copy = f"COPY {db.names['recommendations']} ({REC_COLUMNS}) FROM STDIN (FORMAT BINARY)"
    try:
        with driver.cursor() as cur, cur.copy(copy) as cp:
            cp.set_types(["int8", "text", "int4", "text", "float4", "int4"])
            for chunk in chunks:
                u, r, i, s = chunk.rows()
                for row in zip(u, r, i, s, strict=True):
                    cp.write_row((b, *row, shard))
                users += len(chunk.user_ids)
                rows += len(u)
    except psycopg.errors.UniqueViolation as exc:
        raise StoreError(f"batch {b} shard {shard}: {str(exc).strip()} ({_DUPLICATE_USER})") from None
    except psycopg.Error as exc:
        raise StoreError(f"writing batch {b} shard {shard} to {db.url_masked}: {db.scrub(str(exc).strip())}") from None
    return users, rows


LOADERS: dict[str, RowLoader] = {"sqlite": insert_sqlite, "postgresql": copy_postgresql}

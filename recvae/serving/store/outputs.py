"""What the model says beyond the lists, in SQL: anomalous users (with the histories they were scored on), user
embeddings and similar items. Each kind is published in batches like the lists: a batch is begun in staging under
its idempotency key, its rows are loaded and it is made current in one transaction (the previous batch of the kind
superseded), so readers see the whole old batch or the whole new one; a failure leaves the current one in place.

It reuses the lists' machinery (`Database`: URL masking, transactions, the PostgreSQL lock; the packaged DDL and
named queries; the status life cycle), with its own batches table, because the lists' allows one published batch
in all and counts shards of top-N rows."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection

from recvae.serving.store.database import Database
from recvae.serving.store.errors import StoreError
from recvae.serving.store.names import OUTPUT_TABLES, TableNames
from recvae.serving.store.sqlfiles import check_query_params, load_query, outputs_sql, split_statements

logger = logging.getLogger(__name__)

# kind -> {table: columns after batch_id}; the first table's rows are the batch's row_count
KINDS: dict[str, dict[str, tuple[str, ...]]] = {
    "user_anomalies": {
        "user_anomalies": ("user_id", "n_items", "nll_per_item", "kl", "neg_elbo", "nll_per_item_pct", "kl_pct",
                           "neg_elbo_pct"),
        "anomaly_interactions": ("user_id", "item_id"),
    },
    "user_embeddings": {"user_embeddings": ("user_id", "embedding")},
    "similar_items": {"similar_items": ("item_id", "rank", "similar_item_id", "score")},
}
OUTPUT_QUERIES = frozenset({"anomalous_users", "anomaly_dominated_items", "similar_items"})  # read the output tables
_TEXT_COLUMNS = {"user_id", "item_id", "similar_item_id"}
_INT_COLUMNS = {"n_items", "rank"}


@dataclass(frozen=True)
class OutputSummary:
    """A published (or reused) output batch."""

    batch_id: int
    batch_key: str
    kind: str
    status: str
    row_count: int | None
    model_name: str
    model_version: str | None = None
    snapshot_id: str | None = None
    reused: bool = False
    expired: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form (Airflow XComs, CLI tables)."""
        d = asdict(self)
        d["expired"] = list(self.expired)
        return d


class OutputStore:
    """The output tables of one database (the lists' database, by default the same URL)."""

    def __init__(self, url: str | URL | None = None, *, tables: TableNames | None = None, keep: int = 3,
                 busy_timeout_s: float = 600.0, connect_timeout_s: int = 5) -> None:
        self.db = Database(url, tables or TableNames(), busy_timeout_s=busy_timeout_s,
                           connect_timeout_s=connect_timeout_s)
        self.keep = int(keep)
        self._ready = False

    def __enter__(self) -> OutputStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self.db.close()

    @property
    def url_masked(self) -> str:
        """The URL with its passwords masked."""
        return self.db.url_masked

    def ensure_schema(self) -> None:
        """Create the output tables if missing (idempotent, under the store's lock on PostgreSQL)."""
        if self._ready:
            return
        t = self.db.tables
        with self.db.read("checking the output tables") as conn:
            if self._present(conn):  # then no DDL runs, so no DDL lock blocks a reader
                self._ready = True
                return
        with self.db.write("creating the output tables") as conn:
            self.db.lock(conn)
            if t.schema:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{t.schema}"'))
            for stmt in split_statements(outputs_sql(self.db.dialect, t)):
                conn.exec_driver_sql(stmt)
        self._ready = True

    def _present(self, conn: Connection) -> bool:
        """Whether every output table and the published index exist."""
        t = self.db.tables
        return self.db.all_exist(conn, [getattr(t, f) for f in OUTPUT_TABLES] + [t.output_batches_published_idx])

    # -- writing ------------------------------------------------------------------------------------------

    def publish(self, kind: str, batch_key: str, frames: Mapping[str, pd.DataFrame], *, model_name: str,
                model_version: str | None = None, run_id: str | None = None, snapshot_id: str | None = None,
                keep: int | None = None) -> OutputSummary:
        """Write `frames` (table -> rows with the table's columns) as batch `batch_key` of `kind` and make it the
        current one in one transaction; a key already published returns that batch (`reused`)."""
        tables = KINDS.get(kind)
        if tables is None:
            raise ValueError(f"unknown output kind {kind!r}; known: {', '.join(KINDS)}")
        if set(frames) != set(tables):
            raise ValueError(f"{kind} needs rows for {sorted(tables)}; got {sorted(frames)}")
        identity = {"kind": kind, "model_name": model_name, "model_version": _opt(model_version),
                    "run_id": _opt(run_id), "snapshot_id": _opt(snapshot_id)}
        self.ensure_schema()
        batch = self._begin(batch_key, identity)
        if batch["status"] in ("published", "superseded", "expired"):
            logger.info("%s batch %s (%r) is already %s; nothing to write", kind, batch["batch_id"], batch_key,
                        batch["status"])
            return _summary(batch, reused=True)
        try:
            published = self._load_and_publish(batch["batch_id"], kind, frames)
        except (Exception, KeyboardInterrupt) as exc:
            self._fail(batch["batch_id"], f"{type(exc).__name__}: {exc}")
            raise
        expired = self.apply_retention(kind, keep)
        logger.info("%s batch %s (%r) published: %d rows", kind, published["batch_id"], batch_key,
                    published["row_count"])
        return _summary(published, expired=tuple(expired))

    def _begin(self, batch_key: str, identity: dict[str, Any]) -> dict[str, Any]:
        if not batch_key:
            raise ValueError("batch_key must be a non-empty string")
        db = self.db
        with db.write(f"starting {identity['kind']} batch {batch_key!r}") as conn:
            db.lock(conn)
            row = self._row(conn, "batch_key = :k", {"k": batch_key})
            if row is None:
                db.execute(conn, "INSERT INTO ${output_batches} (kind, batch_key, model_name, model_version, run_id,"
                           " snapshot_id, status, created_at) VALUES (:kind, :batch_key, :model_name, :model_version,"
                           " :run_id, :snapshot_id, 'staging', :now)",
                           {**identity, "batch_key": batch_key, "now": db.now()})
                row = self._row(conn, "batch_key = :k", {"k": batch_key})
            else:
                diffs = [f"{k} {row[k]!r} (now {v!r})" for k, v in identity.items() if v is not None and row[k] != v]
                if diffs:
                    raise StoreError(f"batch key {batch_key!r} already names output batch {row['batch_id']} with "
                                     f"{', '.join(diffs)}; use a new batch key")
                if row["status"] in ("staging", "failed"):  # a retry, or a failed batch restarted from scratch
                    db.execute(conn, "UPDATE ${output_batches} SET status = 'staging', error = NULL,"
                               " created_at = :now WHERE batch_id = :b", {"b": row["batch_id"], "now": db.now()})
                    row = {**row, "status": "staging"}
        assert row is not None  # inserted above
        return row

    def _load_and_publish(self, batch_id: int, kind: str, frames: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
        db = self.db
        tables = KINDS[kind]
        with db.write(f"writing {kind} batch {batch_id}") as conn:
            counts = {}
            for table, columns in tables.items():
                db.execute(conn, f"DELETE FROM ${{{table}}} WHERE batch_id = :b", {"b": batch_id})
                counts[table] = self._load(conn, table, columns, batch_id, frames[table])
            db.lock(conn)  # only now: publishing is serialized, loading is not
            status = db.execute(conn, "SELECT status FROM ${output_batches} WHERE batch_id = :b",
                                {"b": batch_id}).scalar()
            if status != "staging":
                raise StoreError(f"output batch {batch_id} is {status or 'missing'}, not staging: refusing to publish")
            for table in tables:  # what the table holds must be what was handed over
                stored = db.execute(conn, f"SELECT COUNT(*) FROM ${{{table}}} WHERE batch_id = :b",
                                    {"b": batch_id}).scalar()
                if int(stored) != counts[table]:
                    raise StoreError(f"output batch {batch_id}: {stored} rows in {table}, expected {counts[table]}")
            now = db.now()
            db.execute(conn, "UPDATE ${output_batches} SET status = 'superseded', superseded_at = :now"
                       " WHERE kind = :kind AND status = 'published'", {"kind": kind, "now": now})
            db.execute(conn, "UPDATE ${output_batches} SET status = 'published', published_at = :now, row_count = :r"
                       " WHERE batch_id = :b", {"b": batch_id, "now": now, "r": counts[next(iter(tables))]})
            row = self._row(conn, "batch_id = :b", {"b": batch_id})
        assert row is not None
        return row

    def _load(self, conn: Connection, table: str, columns: tuple[str, ...], batch_id: int,
              frame: pd.DataFrame) -> int:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"rows for {table} lack column(s) {missing}")
        values = [_python_column(frame[c], c, self.db.dialect) for c in columns]
        n = len(frame)
        if n == 0:
            return 0
        db = self.db
        if db.dialect == "sqlite":
            sql = db.render(f"INSERT INTO ${{{table}}} (batch_id, {', '.join(columns)}) VALUES "
                            f"({', '.join(['?'] * (len(columns) + 1))})")
            driver = conn.connection.driver_connection
            assert driver is not None
            cur = driver.cursor()
            try:
                cur.executemany(sql, zip([batch_id] * n, *values, strict=True))
            except Exception as exc:  # sqlite3.Error: a duplicate key or a bad value
                raise StoreError(f"writing {table} of output batch {batch_id}: {exc}") from None
            finally:
                cur.close()
        else:
            import psycopg

            driver = conn.connection.driver_connection
            assert driver is not None
            copy = f"COPY {db.names[table]} (batch_id, {', '.join(columns)}) FROM STDIN"
            try:
                with driver.cursor() as cur, cur.copy(copy) as cp:
                    for row in zip([batch_id] * n, *values, strict=True):
                        cp.write_row(row)
            except psycopg.Error as exc:
                raise StoreError(f"writing {table} of output batch {batch_id} to {db.url_masked}: "
                                 f"{db.scrub(str(exc).strip())}") from None
        return n

    def _fail(self, batch_id: int, error: str) -> None:
        try:
            with self.db.write(f"marking output batch {batch_id} failed") as conn:
                self.db.execute(conn, "UPDATE ${output_batches} SET status = 'failed', error = :e"
                                " WHERE batch_id = :b AND status = 'staging'", {"b": batch_id, "e": error[:2000]})
        except StoreError as exc:
            logger.error("could not mark output batch %s failed (the next run will restart it): %s", batch_id, exc)

    def apply_retention(self, kind: str, keep: int | None = None) -> list[int]:
        """Expire the published and superseded batches of `kind` beyond the `keep` newest; delete their rows."""
        keep = self.keep if keep is None else int(keep)
        if keep < 1:
            raise ValueError(f"keep must be >= 1; got {keep}")
        db = self.db
        with db.write(f"expiring old {kind} batches") as conn:
            ids = [r[0] for r in db.execute(
                conn, "SELECT batch_id FROM ${output_batches} WHERE kind = :kind AND status IN ('published',"
                " 'superseded') ORDER BY batch_id DESC", {"kind": kind}).all()][keep:]
            failed = [r[0] for r in db.execute(conn, "SELECT batch_id FROM ${output_batches} WHERE kind = :kind"
                                               " AND status = 'failed'", {"kind": kind}).all()]
            for table in KINDS[kind]:
                for b in ids + failed:
                    db.execute(conn, f"DELETE FROM ${{{table}}} WHERE batch_id = :b", {"b": b})
            for b in ids:
                db.execute(conn, "UPDATE ${output_batches} SET status = 'expired' WHERE batch_id = :b", {"b": b})
        return ids

    # -- reading ------------------------------------------------------------------------------------------

    def _row(self, conn: Connection, where: str, params: dict[str, Any]) -> dict[str, Any] | None:
        row = self.db.execute(conn, f"SELECT * FROM ${{output_batches}} WHERE {where}", params).mappings().first()
        return None if row is None else dict(row)

    def current(self, kind: str) -> dict[str, Any] | None:
        """The published batch of `kind` (its row as a dict), or None."""
        self.ensure_schema()
        with self.db.read(f"reading the current {kind} batch") as conn:
            return self._row(conn, "kind = :kind AND status = 'published'", {"kind": kind})

    def read(self, kind: str, table: str | None = None) -> pd.DataFrame:
        """The rows of the current batch of `kind` (its first table unless `table`); embeddings as float arrays."""
        table = table or next(iter(KINDS[kind]))
        columns = KINDS[kind][table]
        self.ensure_schema()
        sql = (f"SELECT t.{', t.'.join(columns)} FROM ${{{table}}} AS t JOIN ${{output_batches}} AS b"
               " ON b.batch_id = t.batch_id WHERE b.kind = :kind AND b.status = 'published'")
        with self.db.read(f"reading {table}") as conn:
            frame = pd.DataFrame(self.db.execute(conn, sql, {"kind": kind}).all(), columns=list(columns))
        if "embedding" in frame.columns:
            frame["embedding"] = [np.asarray(json.loads(e) if isinstance(e, str) else e, dtype=np.float32)
                                  for e in frame["embedding"]]
        return frame

    def query(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """Run queries/NAME.sql (one that reads the output tables) with bound `params`; rows as dicts."""
        sql = load_query(name, self.db.tables)
        check_query_params(name, sql, params)
        self.ensure_schema()
        with self.db.read(f"running query {name}") as conn:
            return [dict(r) for r in conn.execute(text(sql), params).mappings().all()]


def _opt(v: Any) -> str | None:
    return None if v is None else str(v)


def _summary(row: Mapping[str, Any], *, reused: bool = False, expired: Sequence[int] = ()) -> OutputSummary:
    return OutputSummary(batch_id=int(row["batch_id"]), batch_key=row["batch_key"], kind=row["kind"],
                         status=row["status"], row_count=row["row_count"], model_name=row["model_name"],
                         model_version=row["model_version"], snapshot_id=row["snapshot_id"], reused=reused,
                         expired=tuple(expired))


def _python_column(values: pd.Series, name: str, dialect: str) -> list[Any]:
    """A column as Python values the drivers bind: text ids, ints, floats with NaN as NULL, embeddings as JSON
    (SQLite) or float lists (PostgreSQL REAL[])."""
    if name in _TEXT_COLUMNS:
        return [str(v) for v in values]
    if name in _INT_COLUMNS:
        return [int(v) for v in values]
    if name == "embedding":
        lists = [[float(x) for x in np.asarray(v, dtype=np.float64)] for v in values]
        return [json.dumps(v) for v in lists] if dialect == "sqlite" else lists
    return [None if v is None or not math.isfinite(float(v)) else float(v) for v in values]

"""Recommendation tables in SQLite or PostgreSQL: staging batches (rows and item titles), atomic publish, retention,
and clean-up of batches abandoned by a crashed writer."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import bindparam, create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from recvae import paths
from recvae.urls import mask_url, url_secrets

logger = logging.getLogger(__name__)

IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
STATUSES = ("staging", "published", "superseded", "failed", "expired")
DONE_STATUSES = ("published", "superseded", "expired")  # a batch key in one of these is never rewritten
SQL_DIR_ENV = "RECVAE_SQL_DIR"
DIALECTS = ("sqlite", "postgresql")
_REC_COLUMNS = "batch_id, user_id, rank, item_id, score, shard"


class StoreError(RuntimeError):
    """A recommendation-store operation failed; messages never contain a password."""


class IdentifierError(ValueError):
    """A configured table/schema name is not a plain SQL identifier."""


# ---------------------------------------------------------------------------------------------------------------
# names, URLs and SQL files


def validate_identifier(name: str, what: str = "identifier") -> str:
    """`name` if it is a plain identifier (letters, digits, underscore; 63 chars at most), else IdentifierError."""
    if not isinstance(name, str) or not IDENTIFIER_RE.fullmatch(name):
        raise IdentifierError(
            f"{what} {name!r} is not a plain SQL identifier (must match {IDENTIFIER_RE.pattern})"
        )
    return name


def _quote(name: str) -> str:
    # Only ever called on validated identifiers, which cannot contain a quote.
    return f'"{name}"'


@dataclass(frozen=True)
class TableNames:
    """Names of the store's tables and view, and an optional PostgreSQL schema; all validated identifiers."""

    batches: str = "recvae_batches"
    shards: str = "recvae_batch_shards"
    recommendations: str = "recvae_recommendations"
    items: str = "recvae_items"
    current_view: str = "recvae_current_recommendations"
    schema: str | None = None

    def __post_init__(self) -> None:
        for f in ("batches", "shards", "recommendations", "items", "current_view"):
            validate_identifier(getattr(self, f), f"table name {f}")
        if self.schema is not None:
            validate_identifier(self.schema, "schema name")
        names = [self.batches, self.shards, self.recommendations, self.items, self.current_view]
        if len(set(names)) != len(names):
            raise IdentifierError(f"table and view names must differ; got {names}")
        validate_identifier(self.batches_published_idx, "derived index name (shorten the batches table name)")

    @property
    def batches_published_idx(self) -> str:
        """Name of the partial unique index that allows one published batch."""
        return f"{self.batches}_published"

    def qualified(self, name: str) -> str:
        """Quoted (schema-qualified) name for SQL text."""
        return f"{_quote(self.schema)}.{_quote(name)}" if self.schema else _quote(name)

    def placeholders(self) -> dict[str, str]:
        """Template values for the SQL files: quoted names of every object."""
        return {
            "batches": self.qualified(self.batches),
            "shards": self.qualified(self.shards),
            "recommendations": self.qualified(self.recommendations),
            "items": self.qualified(self.items),
            "current_view": self.qualified(self.current_view),
            # CREATE INDEX takes a bare name; PostgreSQL puts the index in its table's schema.
            "batches_published_idx": _quote(self.batches_published_idx),
        }


def _scrub(message: str, secrets: Sequence[str]) -> str:
    """`message` without the URL's password(s) in it (drivers rarely echo them, but never trust that)."""
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def sql_dir() -> Path:
    """The folder of SQL files: RECVAE_SQL_DIR, else `sql/` at the repository root."""
    env = os.environ.get(SQL_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "sql"


_COMMENT_RE = re.compile(r"('(?:[^']|'')*')|--[^\n]*")


def strip_comments(sql: str) -> str:
    """`sql` without `--` comments (kept inside string literals), so text() sees no stray :names."""
    return _COMMENT_RE.sub(lambda m: m.group(1) or "", sql)


def render_sql(sql: str, tables: TableNames) -> str:
    """Comments stripped, ${name} placeholders replaced by the validated, quoted table names."""
    try:
        return Template(strip_comments(sql)).substitute(tables.placeholders())
    except (KeyError, ValueError) as exc:
        raise StoreError(f"SQL template has an unknown or malformed placeholder: {exc}") from exc


def split_statements(sql: str) -> list[str]:
    """Statements of a rendered SQL file (separated by ';' at a line end)."""
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", sql) if s.strip()]


def _read_sql(relative: str) -> str:
    path = sql_dir() / relative
    if not path.is_file():
        raise StoreError(
            f"SQL file {path} not found (set {SQL_DIR_ENV} to the folder holding sqlite/, postgresql/, queries/)"
        )
    return path.read_text(encoding="utf-8")


def schema_sql(dialect: str, tables: TableNames | None = None) -> str:
    """The rendered DDL for `dialect` ('sqlite' or 'postgresql'), e.g. to apply by hand."""
    if dialect not in DIALECTS:
        raise StoreError(f"unsupported dialect {dialect!r}; supported: {', '.join(DIALECTS)}")
    return render_sql(_read_sql(f"{dialect}/schema.sql"), tables or TableNames())


def query_names() -> list[str]:
    """Names of the queries in sql/queries."""
    return sorted(p.stem for p in (sql_dir() / "queries").glob("*.sql"))


def load_query(name: str, tables: TableNames | None = None) -> str:
    """The rendered text of sql/queries/NAME.sql (named parameters like :user_id stay as they are)."""
    validate_identifier(name, "query name")
    known = query_names()
    if name not in known:
        folder = sql_dir() / "queries"
        raise StoreError(f"unknown query {name!r}; known: {', '.join(known) or '(none)'} (files in {folder})")
    return render_sql(_read_sql(f"queries/{name}.sql"), tables or TableNames())


# Query parameters that are counts or batch ids (integers); every other parameter is text (user ids are text).
INTEGER_PARAMS = frozenset({"n", "k", "limit", "offset", "top_n", "batch_id", "batch_a", "batch_b"})


def query_params(sql: str) -> list[str]:
    """Names of the bound parameters (:name) of a rendered query, in order of first use."""
    return list(text(sql).compile().params)


def check_query_params(name: str, sql: str, params: dict[str, Any]) -> None:
    """StoreError naming the parameters of query `name` that are unknown or missing."""
    takes = query_params(sql)
    unknown = [k for k in params if k not in takes]
    missing = [k for k in takes if k not in params]
    if unknown or missing:
        problems = ([f"unknown parameter(s) {', '.join(unknown)}"] if unknown else []) + (
            [f"missing parameter(s) {', '.join(missing)}"] if missing else [])
        it_takes = ", ".join(f":{k}" for k in takes) or "no parameters"
        raise StoreError(f"query {name}: {'; '.join(problems)}; it takes {it_takes}")


def parse_query_params(name: str, pairs: Sequence[str], tables: TableNames | None = None) -> dict[str, Any]:
    """NAME=VALUE strings as the bound parameters of query `name` (integers where INTEGER_PARAMS says so; :n
    defaults to 10); StoreError naming a malformed, unknown, missing or mistyped parameter."""
    sql = load_query(name, tables)
    params: dict[str, Any] = {"n": 10} if "n" in query_params(sql) else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise StoreError(f"query {name}: expected a parameter as NAME=VALUE, got {pair!r}")
        if key in INTEGER_PARAMS:
            try:
                params[key] = int(value.strip())
            except ValueError:
                raise StoreError(f"query {name}: parameter {key} must be an integer, got {value!r}") from None
        else:
            params[key] = value
    check_query_params(name, sql, params)
    return params


# ---------------------------------------------------------------------------------------------------------------
# records


@dataclass
class Batch:
    """One row of the batches table."""

    batch_id: int
    batch_key: str
    status: str
    model_name: str
    top_n: int
    model_version: str | None = None
    run_id: str | None = None
    snapshot_id: str | None = None
    n_items: int | None = None
    n_shards: int | None = None
    user_count: int | None = None
    expected_rows: int | None = None
    row_count: int | None = None
    error: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    published_at: datetime | None = None
    superseded_at: datetime | None = None

    @property
    def done(self) -> bool:
        """Published now or before: the batch key must not be written again."""
        return self.status in DONE_STATUSES


@dataclass
class BatchSummary:
    """What a batch job reports (small enough for an Airflow XCom via `to_dict`)."""

    batch_id: int
    batch_key: str
    status: str
    model_name: str
    model_version: str | None
    top_n: int
    user_count: int | None
    expected_rows: int | None
    row_count: int | None
    reused: bool = False  # the batch key was already published: nothing was written
    expired_batch_ids: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, batch: Batch, *, reused: bool = False, expired: Sequence[int] = ()) -> BatchSummary:
        """The summary of a batch row."""
        return cls(
            batch_id=batch.batch_id, batch_key=batch.batch_key, status=batch.status, model_name=batch.model_name,
            model_version=batch.model_version, top_n=batch.top_n, user_count=batch.user_count,
            expected_rows=batch.expected_rows, row_count=batch.row_count, reused=reused,
            expired_batch_ids=list(expired),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serializable dict."""
        return asdict(self)


@dataclass
class GcReport:
    """What `RecommendationStore.gc` did: abandoned batches failed, and rows/titles deleted per dead batch."""

    failed: list[int] = field(default_factory=list)
    cleaned: dict[int, tuple[int, int]] = field(default_factory=dict)  # batch id -> (rows, titles) deleted

    def lines(self) -> list[str]:
        """Human-readable lines, one per action (or one saying there was nothing to do)."""
        out = [f"batch {b}: abandoned in staging, marked failed" for b in self.failed]
        out += [f"batch {b}: deleted {rows:,} row(s) and {titles:,} title(s)"
                for b, (rows, titles) in self.cleaned.items()]
        return out or ["nothing to clean: no abandoned staging batch, no rows of failed or expired batches"]


@dataclass
class RecChunk:
    """Top-N lists of some users: raw ids as text, lists padded to N; `counts[i]` entries of row i are real."""

    user_ids: np.ndarray  # (c,) str
    item_ids: np.ndarray  # (c, N) str; entries at or beyond counts[i] are ignored
    scores: np.ndarray  # (c, N) float
    counts: np.ndarray  # (c,) int

    def rows(self) -> tuple[list, list, list, list]:
        """Flat columns (user_id, rank, item_id, score) of the real entries; ranks start at 1."""
        counts = np.asarray(self.counts, dtype=np.int64)
        n = self.item_ids.shape[1] if self.item_ids.ndim == 2 else 0
        shapes_ok = len(counts) == len(self.user_ids) == self.item_ids.shape[0]
        if not shapes_ok or self.scores.shape != self.item_ids.shape:
            raise StoreError(
                f"chunk shapes disagree: {len(self.user_ids)} users, counts {counts.shape}, "
                f"items {self.item_ids.shape}, scores {self.scores.shape}"
            )
        if (counts < 0).any() or (counts > n).any():
            raise StoreError(f"chunk counts must be in [0, {n}]")
        mask = np.arange(n)[None, :] < counts[:, None]
        scores = np.asarray(self.scores, dtype=np.float64)[mask]
        if np.isnan(scores).any():
            raise StoreError(f"chunk has {int(np.isnan(scores).sum())} NaN score(s); refusing to store them")
        users = np.repeat(np.asarray(self.user_ids, dtype=object), counts)
        ranks = np.nonzero(mask)[1] + 1
        items = np.asarray(self.item_ids, dtype=object)[mask]
        return [str(u) for u in users], ranks.tolist(), [str(i) for i in items], scores.tolist()


# ---------------------------------------------------------------------------------------------------------------
# the store

_LEGACY_ITEMS = "recvae_items_migration"  # temporary copy of the old shared titles table while it is migrated
_BATCH_COLUMNS = (
    "batch_id, batch_key, status, model_name, top_n, model_version, run_id, snapshot_id, n_items, n_shards, "
    "user_count, expected_rows, row_count, error, created_at, finished_at, published_at, superseded_at"
)


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
        (keep it above the gap between a batch's steps, e.g. Airflow tasks waiting for a worker; a shard being written is never
        failed); `busy_timeout_s`: how long a SQLite writer waits for another one (SQLite has one writer at a time,
        and a shard holds the write lock while it is scored and written); `connect_timeout_s`: how long a PostgreSQL
        connection attempt may take, so an unreachable server fails in seconds."""
        raw = url if url is not None else paths.default_db_url()
        self.url_masked = mask_url(raw)
        self._secrets = url_secrets(raw)
        self.url = self._parse_url(raw)
        if keep < 1:
            raise ValueError(f"keep must be >= 1; got {keep}")
        self.tables = tables or TableNames()
        self.keep = keep
        self.stale_after_s = float(stale_after_s)
        backend = self.url.get_backend_name()
        if backend == "postgres":  # Airflow-style URI scheme
            backend = "postgresql"
        if backend not in DIALECTS:
            raise StoreError(f"unsupported database {self.url_masked}: only sqlite and postgresql URLs are supported")
        self.dialect = backend
        if self.dialect == "sqlite" and self.tables.schema:
            raise StoreError("a schema name is only supported on PostgreSQL")
        self.engine = self._create_engine(busy_timeout_s, connect_timeout_s)
        self._sql = self.tables.placeholders()
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"RecommendationStore({self.url_masked})"

    def _parse_url(self, raw: str | URL) -> URL:
        """The parsed URL; StoreError (masked) for one that does not parse or parses wrongly."""
        try:
            url = make_url(raw) if isinstance(raw, str) else raw
        except ArgumentError as exc:
            hint = "expected e.g. postgresql+psycopg://user:password@host:5432/db or sqlite:///path/to/file.db"
            reason = _scrub(str(exc), self._secrets)
            raise StoreError(f"invalid database URL {self.url_masked}: {reason}; {hint}") from None
        if "@" in (url.host or ""):  # user:p@ss@host parses as host 'ss@host': the driver would echo part of it
            raise StoreError(f"invalid database URL {self.url_masked}: an '@' in the password or user name must be "
                             "percent-encoded as %40")
        return url

    def __enter__(self) -> RecommendationStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    # -- engine and transactions ----------------------------------------------------------------------------

    def _create_engine(self, busy_timeout_s: float, connect_timeout_s: int) -> Engine:
        try:
            if self.dialect == "sqlite":
                engine = create_engine(self.url, connect_args={"timeout": busy_timeout_s})
                _setup_sqlite(engine)
                return engine
            url = self.url
            if url.drivername in ("postgresql", "postgres"):
                url = url.set(drivername="postgresql+psycopg")
            if url.drivername != "postgresql+psycopg":
                raise StoreError(f"{self.url_masked}: use the psycopg 3 driver (postgresql+psycopg://)")
            return create_engine(
                url,
                connect_args={"connect_timeout": int(connect_timeout_s), "application_name": "recvae"},
                pool_pre_ping=True,
            )
        except (ArgumentError, NoSuchModuleError) as exc:
            reason = _scrub(str(exc), self._secrets)
            raise StoreError(f"cannot create an engine for {self.url_masked}: {reason}") from None

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn driver errors into StoreError naming the action and the masked URL."""
        try:
            yield
        except DBAPIError as exc:
            orig = str(exc.orig).strip() if exc.orig is not None else str(exc)
            if exc.connection_invalidated:
                reason = "lost the connection to"
            else:
                reason = "cannot connect to" if _is_connect_error(exc) else "error on"
            raise StoreError(f"{action}: {reason} {self.url_masked}: {_scrub(orig, self._secrets)}") from None
        except SQLAlchemyError as exc:
            raise StoreError(f"{action}: {self.url_masked}: {_scrub(str(exc), self._secrets)}") from None

    @contextmanager
    def _write(self, action: str) -> Iterator[Connection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE, so it never fails half-way on a lock upgrade)."""
        with self._errors(action):
            with self.engine.connect() as conn:
                conn = conn.execution_options(recvae_write=True)
                with conn.begin():
                    yield conn

    @contextmanager
    def _read(self, action: str) -> Iterator[Connection]:
        with self._errors(action):
            with self.engine.connect() as conn:
                with conn.begin():
                    yield conn

    def _x(self, conn: Connection, sql: str, params: dict[str, Any] | list[dict[str, Any]] | None = None,
           **expanding: Sequence[Any]) -> Any:
        """Execute store SQL (table placeholders filled in) with bound parameters; `expanding` binds IN lists."""
        stmt = text(Template(sql).substitute(self._sql))
        if expanding:
            stmt = stmt.bindparams(*[bindparam(k, expanding=True) for k in expanding])
            params = {**(params or {}), **{k: list(v) for k, v in expanding.items()}}
        return conn.execute(stmt, params or {})

    def _now(self) -> Any:
        now = datetime.now(UTC)
        return now if self.dialect == "postgresql" else now.isoformat(timespec="microseconds")

    def _lock(self, conn: Connection) -> None:
        """PostgreSQL: serialize schema changes, batch creation and publishing on this set of tables."""
        if self.dialect == "postgresql":
            key = int.from_bytes(hashlib.sha256(self._sql["batches"].encode()).digest()[:8], "big", signed=True)
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def check_connection(self) -> None:
        """Raise StoreError (masked URL) when the database cannot be reached."""
        with self._read("connecting") as conn:
            conn.execute(text("SELECT 1"))

    # -- schema -----------------------------------------------------------------------------------------------

    def _schema_present(self, conn: Connection) -> bool:
        """Whether every table, index and the view exist in their current form (then no DDL runs, so no DDL lock
        blocks readers)."""
        t = self.tables
        names = [t.batches, t.shards, t.recommendations, t.items, t.current_view, t.batches_published_idx]
        if self.dialect == "sqlite":
            found = self._x(conn, "SELECT COUNT(*) FROM sqlite_master WHERE name IN :names", names=names).scalar()
        else:
            regs = [t.qualified(n) for n in names]
            found = conn.execute(text("SELECT COUNT(to_regclass(n)) FROM unnest(CAST(:names AS text[])) AS n"),
                                 {"names": regs}).scalar()
        return int(found) == len(names) and not self._legacy_items(conn)

    def _legacy_items(self, conn: Connection) -> bool:
        """Whether the items table is the one shared by all batches (no batch_id column), from before titles
        belonged to a batch."""
        t = self.tables
        if self.dialect == "sqlite":
            sql = ("SELECT COUNT(*), COALESCE(SUM(p.name = 'batch_id'), 0) FROM sqlite_master AS m,"
                   " pragma_table_info(m.name) AS p WHERE m.type = 'table' AND m.name = :t")
            params = {"t": t.items}
        else:
            sql = ("SELECT COUNT(*), COUNT(*) FILTER (WHERE attname = 'batch_id') FROM pg_attribute"
                   " WHERE attrelid = to_regclass(:t) AND attnum > 0 AND NOT attisdropped")
            params = {"t": t.qualified(t.items)}
        columns, with_batch = conn.execute(text(sql), params).one()
        return int(columns) > 0 and int(with_batch) == 0

    def ensure_schema(self) -> None:
        """Create the tables, indexes and view if missing, and migrate an older layout (idempotent; safe to run
        concurrently)."""
        statements = split_statements(schema_sql(self.dialect, self.tables))
        with self._read("checking the recommendation tables") as conn:
            if self._schema_present(conn):
                self._schema_ready = True
                return
        with self._write("creating the recommendation tables") as conn:
            self._lock(conn)
            if self.tables.schema:
                conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {_quote(self.tables.schema)}"))
            legacy = self._legacy_items(conn)  # checked again under the lock: another process may have migrated
            if legacy:
                self._x(conn, f"CREATE TEMP TABLE {_LEGACY_ITEMS} AS SELECT item_id, title, genres, updated_at"
                        " FROM ${items}")
                self._x(conn, "DROP TABLE ${items}")
            for stmt in statements:
                conn.exec_driver_sql(stmt)
            if legacy:
                self._adopt_legacy_items(conn)
        self._schema_ready = True

    def _adopt_legacy_items(self, conn: Connection) -> None:
        """Give each live batch (staging, published, superseded) a copy of the old shared titles: what its
        readers saw before; then drop the temporary copy."""
        n = self._x(
            conn,
            "INSERT INTO ${items} (batch_id, item_id, title, genres, updated_at) SELECT b.batch_id, l.item_id,"
            f" l.title, l.genres, l.updated_at FROM {_LEGACY_ITEMS} AS l CROSS JOIN ${{batches}} AS b"
            " WHERE b.status IN ('staging', 'published', 'superseded')",
        ).rowcount
        self._x(conn, f"DROP TABLE {_LEGACY_ITEMS}")
        logger.warning("%s: migrated the item titles shared by all batches to per-batch titles (%d row(s))",
                       self.url_masked, n)

    def _ensure(self) -> None:
        if not self._schema_ready:
            self.ensure_schema()

    # -- batches ----------------------------------------------------------------------------------------------

    def begin_batch(
        self,
        batch_key: str,
        *,
        model_name: str,
        top_n: int,
        n_items: int | None = None,
        model_version: str | None = None,
        run_id: str | None = None,
        snapshot_id: str | None = None,
        n_shards: int | None = None,
    ) -> Batch:
        """The batch for `batch_key`: a new staging batch, the same staging batch again (a retry), a failed one
        restarted from scratch, or the published one untouched (check `batch.done`). Also fails abandoned
        staging batches of other keys and deletes the rows and titles of failed and expired batches."""
        if not batch_key:
            raise ValueError("batch_key must be a non-empty string")
        if top_n < 1:
            raise ValueError(f"top_n must be >= 1; got {top_n}")
        identity = {
            "model_name": model_name, "model_version": _opt_str(model_version), "run_id": _opt_str(run_id),
            "snapshot_id": _opt_str(snapshot_id), "top_n": int(top_n),
            "n_items": None if n_items is None else int(n_items),
        }
        self._ensure()
        with self._write(f"starting batch {batch_key!r}") as conn:
            self._lock(conn)
            self._fail_abandoned(conn, except_key=batch_key)
            batch = self._batch_where(conn, "batch_key = :k", {"k": batch_key})
            if batch is None:
                row = self._x(
                    conn,
                    "INSERT INTO ${batches} (batch_key, model_name, model_version, run_id, snapshot_id, top_n, n_items,"
                    " n_shards, status, created_at) VALUES (:batch_key, :model_name, :model_version, :run_id,"
                    " :snapshot_id, :top_n, :n_items, :n_shards, 'staging', :now) RETURNING batch_id",
                    {**identity, "batch_key": batch_key, "n_shards": n_shards, "now": self._now()},
                ).one()
                batch = self._batch_where(conn, "batch_id = :b", {"b": row[0]})
                logger.info("batch %s (%r) started in staging", batch.batch_id, batch_key)
            else:
                _check_identity(batch, identity)
                if batch.status == "failed":
                    self._x(conn, "DELETE FROM ${recommendations} WHERE batch_id = :b", {"b": batch.batch_id})
                    self._x(conn, "DELETE FROM ${items} WHERE batch_id = :b", {"b": batch.batch_id})
                    self._x(conn, "DELETE FROM ${shards} WHERE batch_id = :b", {"b": batch.batch_id})
                    self._x(
                        conn,
                        "UPDATE ${batches} SET status = 'staging', error = NULL, finished_at = NULL, created_at = :now,"
                        " n_shards = :n WHERE batch_id = :b",
                        {"b": batch.batch_id, "now": self._now(), "n": n_shards},
                    )
                    logger.warning("batch %s (%r) had failed; restarting it from scratch", batch.batch_id, batch_key)
                    batch = self._batch_where(conn, "batch_id = :b", {"b": batch.batch_id})
                elif batch.status == "staging":
                    logger.info("batch %s (%r) is still in staging; reusing it (retry)", batch.batch_id, batch_key)
                else:
                    logger.info("batch %s (%r) is already %s; nothing to write",
                                batch.batch_id, batch_key, batch.status)
        self.cleanup_dead_rows()
        return batch

    def _fail_abandoned(
        self, conn: Connection, except_key: str | None, stale_after_s: float | None = None
    ) -> list[int]:
        """Mark failed the staging batches (other than `except_key`) abandoned by their writer: no activity (created,
        a shard started or written) for `stale_after_s` (default: the store's), and no shard being written now.

        A shard being written holds its batch row (PostgreSQL: FOR SHARE, skipped here by SKIP LOCKED; SQLite: the
        write lock, which this transaction waits for), so a live writer is never failed however long a shard takes;
        the age only has to outlast the gaps between a batch's steps. The caller holds a write transaction."""
        stale = self.stale_after_s if stale_after_s is None else float(stale_after_s)
        cutoff = datetime.now(UTC) - timedelta(seconds=stale)
        cut = cutoff if self.dialect == "postgresql" else cutoff.isoformat(timespec="microseconds")
        idle = (
            "b.status = 'staging' AND b.batch_key <> :k AND b.created_at <= :cut AND NOT EXISTS (SELECT 1 FROM"
            " ${shards} AS s WHERE s.batch_id = b.batch_id AND (s.started_at > :cut OR s.written_at > :cut))"
        )
        params = {"k": except_key or "", "cut": cut}
        lock = " FOR UPDATE OF b SKIP LOCKED" if self.dialect == "postgresql" else ""
        ids = [r[0] for r in self._x(conn, f"SELECT b.batch_id FROM ${{batches}} AS b WHERE {idle}{lock}", params)]
        if not ids:
            return []
        error = f"abandoned: no activity for {stale:g} s and no shard being written (writer crashed or killed?)"
        # The condition again: a shard may have started between the SELECT and now (PostgreSQL, READ COMMITTED).
        failed = sorted(r[0] for r in self._x(
            conn,
            f"UPDATE ${{batches}} AS b SET status = 'failed', finished_at = :now, error = :e WHERE b.batch_id IN :ids"
            f" AND {idle} RETURNING batch_id",
            {**params, "now": self._now(), "e": error}, ids=ids,
        ))
        if failed:
            logger.warning("marked abandoned staging batch(es) %s as failed (idle for over %g s)", failed, stale)
        return failed

    def cleanup_dead_rows(self) -> list[int]:
        """Delete the rows and titles of failed and expired batches (their batch rows stay as history); ids cleaned."""
        return list(self._cleanup_dead())

    def _cleanup_dead(self) -> dict[int, tuple[int, int]]:
        """Delete the rows and titles of failed and expired batches, one transaction per batch: {id: (rows, titles)}."""
        dead = "EXISTS (SELECT 1 FROM ${batches} AS b WHERE b.batch_id = :b AND b.status IN ('failed', 'expired'))"
        with self._read("looking for rows of failed batches") as conn:
            ids = [r[0] for r in self._x(
                conn,
                "SELECT b.batch_id FROM ${batches} AS b WHERE b.status IN ('failed', 'expired') AND (EXISTS (SELECT 1"
                " FROM ${recommendations} AS r WHERE r.batch_id = b.batch_id) OR EXISTS (SELECT 1 FROM ${items} AS i"
                " WHERE i.batch_id = b.batch_id)) ORDER BY b.batch_id",
            )]
        done: dict[int, tuple[int, int]] = {}
        for b in ids:
            with self._write(f"deleting the rows of batch {b}") as conn:
                # the status again: a failed batch may have been restarted since (its new rows are not dead)
                n = self._x(conn, f"DELETE FROM ${{recommendations}} WHERE batch_id = :b AND {dead}", {"b": b}).rowcount
                t = self._x(conn, f"DELETE FROM ${{items}} WHERE batch_id = :b AND {dead}", {"b": b}).rowcount
            done[b] = (n, t)
            logger.info("deleted %d row(s) and %d title(s) of dead batch %s", n, t, b)
        return done

    def gc(self, stale_after_s: float | None = None) -> GcReport:
        """Fail abandoned staging batches (see `_fail_abandoned`; `stale_after_s` defaults to the store's) and delete
        the rows and titles of every failed or expired batch. What `recvae db gc` runs."""
        self._ensure()
        with self._write("failing abandoned batches") as conn:
            self._lock(conn)
            failed = self._fail_abandoned(conn, except_key=None, stale_after_s=stale_after_s)
        return GcReport(failed=failed, cleaned=self._cleanup_dead())

    def fail(self, batch: Batch | int, error: str) -> None:
        """Mark a staging batch failed and delete its rows and titles (the current batch is not touched)."""
        batch_id = batch.batch_id if isinstance(batch, Batch) else int(batch)
        with self._write(f"marking batch {batch_id} failed") as conn:
            self._x(
                conn,
                "UPDATE ${batches} SET status = 'failed', finished_at = :now, error = :e"
                " WHERE batch_id = :b AND status = 'staging'",
                {"b": batch_id, "now": self._now(), "e": str(error)[:2000]},
            )
            status = self._x(conn, "SELECT status FROM ${batches} WHERE batch_id = :b", {"b": batch_id}).scalar()
            if status == "failed":  # never delete the rows of a batch that got published meanwhile
                self._x(conn, "DELETE FROM ${recommendations} WHERE batch_id = :b", {"b": batch_id})
                self._x(conn, "DELETE FROM ${items} WHERE batch_id = :b", {"b": batch_id})
        logger.warning("batch %s marked failed: %s", batch_id, error)

    def write_shard(
        self,
        batch: Batch,
        chunks: Iterable[RecChunk],
        *,
        shard: int = 0,
        expected_rows: int,
    ) -> dict[str, int]:
        """Replace shard `shard` of a staging batch with `chunks`, in one transaction (COPY on PostgreSQL);
        the rows written must equal `expected_rows`. Returns {'users', 'rows'}."""
        if shard < 0:
            raise ValueError(f"shard must be >= 0; got {shard}")
        b = batch.batch_id
        with self._write(f"starting shard {shard} of batch {b}") as conn:
            self._x(
                conn,
                "INSERT INTO ${shards} (batch_id, shard, started_at) VALUES (:b, :s, :now)"
                " ON CONFLICT (batch_id, shard) DO UPDATE SET started_at = excluded.started_at, written_at = NULL,"
                " row_count = NULL, user_count = NULL, expected_rows = NULL",
                {"b": b, "s": shard, "now": self._now()},
            )
        users = rows = 0
        with self._write(f"writing shard {shard} of batch {b}") as conn:
            lock = " FOR SHARE" if self.dialect == "postgresql" else ""
            status = self._x(conn, "SELECT status FROM ${batches} WHERE batch_id = :b" + lock, {"b": b}).scalar()
            if status != "staging":
                raise StoreError(f"batch {b} is {status or 'missing'}, not staging: refusing to write shard {shard}")
            self._x(conn, "DELETE FROM ${recommendations} WHERE batch_id = :b AND shard = :s", {"b": b, "s": shard})
            if self.dialect == "postgresql":
                users, rows = self._copy_pg(conn, b, shard, chunks)
            else:
                users, rows = self._insert_sqlite(conn, b, shard, chunks)
            if rows != expected_rows:
                raise StoreError(
                    f"shard {shard} of batch {b}: wrote {rows} rows but expected {expected_rows} "
                    "(sum over users of min(N, unseen candidates)); the shard was rolled back"
                )
            self._x(
                conn,
                "UPDATE ${shards} SET user_count = :u, expected_rows = :e, row_count = :r, written_at = :now"
                " WHERE batch_id = :b AND shard = :s",
                {"b": b, "s": shard, "u": users, "e": int(expected_rows), "r": rows, "now": self._now()},
            )
        logger.info("batch %s shard %d: %d users, %d rows written to staging", b, shard, users, rows)
        return {"users": users, "rows": rows}

    def _insert_sqlite(self, conn: Connection, b: int, shard: int, chunks: Iterable[RecChunk]) -> tuple[int, int]:
        insert = f"INSERT INTO ${{recommendations}} ({_REC_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
        sql = Template(insert).substitute(self._sql)
        cur = conn.connection.driver_connection.cursor()
        users = rows = 0
        try:
            for chunk in chunks:
                u, r, i, s = chunk.rows()
                cur.executemany(sql, zip([b] * len(u), u, r, i, s, [shard] * len(u)))
                users += len(chunk.user_ids)
                rows += len(u)
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"batch {b} shard {shard}: {exc} (a user appears twice: overlapping shards?)") from None
        except sqlite3.Error as exc:
            raise StoreError(f"writing batch {b} shard {shard} to {self.url_masked}: {exc}") from None
        finally:
            cur.close()
        return users, rows

    def _copy_pg(self, conn: Connection, b: int, shard: int, chunks: Iterable[RecChunk]) -> tuple[int, int]:
        import psycopg

        raw = conn.connection.driver_connection
        users = rows = 0
        try:
            with raw.cursor() as cur:
                with cur.copy(f"COPY {self._sql['recommendations']} ({_REC_COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["int8", "text", "int4", "text", "float4", "int4"])
                    for chunk in chunks:
                        u, r, i, s = chunk.rows()
                        for row in zip(u, r, i, s):
                            cp.write_row((b, row[0], row[1], row[2], row[3], shard))
                        users += len(chunk.user_ids)
                        rows += len(u)
        except psycopg.errors.UniqueViolation as exc:
            raise StoreError(
                f"batch {b} shard {shard}: {str(exc).strip()} (a user appears twice: overlapping shards?)"
            ) from None
        except psycopg.Error as exc:
            raise StoreError(
                f"writing batch {b} shard {shard} to {self.url_masked}: {_scrub(str(exc).strip(), self._secrets)}"
            ) from None
        return users, rows

    def publish(
        self, batch: Batch | str | int, *, n_shards: int | None = None, keep: int | None = None
    ) -> BatchSummary:
        """Check a staging batch is complete and make it the current one in one transaction, then apply retention.
        `batch`: a Batch, a batch key (str) or a batch id (int). Publishing a published batch returns it unchanged."""
        self._ensure()
        where, params = _batch_ref(batch)
        with self._write("publishing") as conn:
            self._lock(conn)
            lock = " FOR UPDATE" if self.dialect == "postgresql" else ""
            current = self._batch_where(conn, where, params, suffix=lock)
            if current is None:
                raise StoreError(f"no batch {params['v']!r} to publish")
            if current.done:
                logger.info("batch %s is already %s", current.batch_id, current.status)
                return BatchSummary.of(current, reused=True)
            if current.status != "staging":
                raise StoreError(f"batch {current.batch_id} is {current.status}; only a staging batch can be published")
            b = current.batch_id
            shards = self._x(
                conn,
                "SELECT shard, user_count, expected_rows, row_count, written_at FROM ${shards} WHERE batch_id = :b"
                " ORDER BY shard",
                {"b": b},
            ).all()
            n_shards = n_shards or current.n_shards
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
            n_users = sum(int(s.user_count) for s in written)
            actual, max_rank = self._x(
                conn, "SELECT COUNT(*), MAX(rank) FROM ${recommendations} WHERE batch_id = :b", {"b": b}
            ).one()
            if not (int(actual) == declared == expected):
                raise StoreError(
                    f"batch {b}: {actual} rows in the table, shards report {declared}, expected {expected}"
                )
            if max_rank is not None and int(max_rank) > current.top_n:
                raise StoreError(f"batch {b}: rank {max_rank} exceeds top_n {current.top_n}")
            abandoned = self._fail_abandoned(conn, except_key=current.batch_key)
            now = self._now()
            self._x(
                conn,
                "UPDATE ${batches} SET status = 'superseded', superseded_at = :now WHERE status = 'published'",
                {"now": now},
            )
            self._x(
                conn,
                "UPDATE ${batches} SET status = 'published', published_at = :now, finished_at = :now, user_count = :u,"
                " expected_rows = :e, row_count = :r, n_shards = :n WHERE batch_id = :b AND status = 'staging'",
                {"b": b, "now": now, "u": n_users, "e": expected, "r": int(actual), "n": len(written)},
            )
            published = self._batch_where(conn, "batch_id = :b", {"b": b})
        logger.info("batch %s (%r) published: %d users, %d rows", b, published.batch_key, n_users, int(actual))
        expired = self.apply_retention(keep)
        if abandoned and not expired:  # retention cleans up dead batches itself when it expires one
            self._cleanup_dead()
        return BatchSummary.of(published, expired=expired)

    def apply_retention(self, keep: int | None = None) -> list[int]:
        """Expire published batches beyond the `keep` most recent (current included); delete their rows and titles."""
        keep = self.keep if keep is None else keep
        if keep < 1:
            raise ValueError(f"keep must be >= 1; got {keep}")
        with self._write("applying retention") as conn:
            ids = [
                r[0]
                for r in self._x(
                    conn,
                    "SELECT batch_id FROM ${batches} WHERE status IN ('published', 'superseded') ORDER BY"
                    " CASE WHEN status = 'published' THEN 0 ELSE 1 END, published_at DESC, batch_id DESC",
                ).all()
            ]
            old = ids[keep:]
            if old:
                self._x(
                    conn,
                    "UPDATE ${batches} SET status = 'expired' WHERE status = 'superseded' AND batch_id IN :ids",
                    ids=old,
                )
                self._x(conn, "DELETE FROM ${shards} WHERE batch_id IN :ids", ids=old)
        if old:
            logger.info("retention (keep %d): expired batch(es) %s", keep, old)
            self.cleanup_dead_rows()
        return old

    # -- reading ----------------------------------------------------------------------------------------------

    def _batch_where(self, conn: Connection, where: str, params: dict[str, Any], suffix: str = "") -> Batch | None:
        sql = f"SELECT {_BATCH_COLUMNS} FROM ${{batches}} WHERE {where}{suffix}"
        row = self._x(conn, sql, params).mappings().first()
        return None if row is None else _batch_from_row(row)

    def get_batch(self, batch: str | int) -> Batch | None:
        """The batch with this key (str) or id (int), or None."""
        self._ensure()
        where, params = _batch_ref(batch)
        with self._read("reading a batch") as conn:
            return self._batch_where(conn, where, params)

    def current_batch(self) -> Batch | None:
        """The published batch, or None."""
        self._ensure()
        with self._read("reading the current batch") as conn:
            return self._batch_where(conn, "status = 'published'", {})

    def list_batches(self, limit: int = 20) -> list[Batch]:
        """The most recent batches, newest first."""
        self._ensure()
        with self._read("listing batches") as conn:
            rows = self._x(
                conn, f"SELECT {_BATCH_COLUMNS} FROM ${{batches}} ORDER BY batch_id DESC LIMIT :n", {"n": int(limit)}
            ).mappings().all()
        return [_batch_from_row(r) for r in rows]

    def count_rows(self, batch_id: int) -> int:
        """Rows stored for a batch."""
        with self._read("counting rows") as conn:
            sql = "SELECT COUNT(*) FROM ${recommendations} WHERE batch_id = :b"
            return int(self._x(conn, sql, {"b": batch_id}).scalar())

    def query(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """Run sql/queries/NAME.sql with bound `params`; rows as dicts."""
        sql = load_query(name, self.tables)
        check_query_params(name, sql, params)
        self._ensure()
        with self._read(f"running query {name}") as conn:
            return [dict(r) for r in conn.execute(text(sql), params).mappings().all()]

    def user_recommendations(self, user_id: str, n: int = 10) -> list[dict[str, Any]]:
        """A user's top-n in the current batch, with titles when known."""
        return self.query("user_top_with_titles", user_id=str(user_id), n=int(n))

    # -- items ------------------------------------------------------------------------------------------------

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
        now = self._now()
        rows = [{"i": i, "t": None if pd.isna(t) else str(t), "g": None if pd.isna(g) else str(g), "now": now}
                for i, t, g in zip(ids, items["title"], genres)]
        self._ensure()
        where, params = _batch_ref(batch)
        with self._write("writing item titles") as conn:
            lock = " FOR SHARE" if self.dialect == "postgresql" else ""  # as a shard write: a live writer
            row = self._x(conn, f"SELECT batch_id, status FROM ${{batches}} WHERE {where}{lock}", params).first()
            if row is None or row.status != "staging":
                state = "missing" if row is None else row.status
                raise StoreError(f"batch {params['v']!r} is {state}, not staging: refusing to write its item titles")
            b = row.batch_id
            self._x(conn, "DELETE FROM ${items} WHERE batch_id = :b", {"b": b})
            if rows:
                self._x(conn, "INSERT INTO ${items} (batch_id, item_id, title, genres, updated_at)"
                        " VALUES (:b, :i, :t, :g, :now)", [{**r, "b": b} for r in rows])
        logger.info("batch %s: %d item title(s) written", b, len(rows))
        return len(rows)

    def load_item_metadata(self, batch: Batch | str | int, path: str | Path) -> int:
        """Set a staging batch's titles from a dataset folder or file (movies.dat, u.item); 0 when there is none."""
        meta = read_item_metadata(path)
        if meta is None:
            logger.info("%s has no item metadata (movies.dat or u.item); titles stay empty", path)
            return 0
        return self.write_items(batch, meta)


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _setup_sqlite(engine: Engine) -> None:
    """WAL (readers never block the writer), and transactions under our control: pysqlite's own implicit BEGIN
    would start writes as DEFERRED, which fail at once (no busy wait) when upgraded under a concurrent writer."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("recvae_write") else "BEGIN")


def _is_connect_error(exc: DBAPIError) -> bool:
    msg = str(exc.orig).lower()
    hints = ("connection", "could not connect", "unable to open database", "timeout", "resolve host")
    return any(s in msg for s in hints)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def _batch_ref(batch: Batch | str | int) -> tuple[str, dict[str, Any]]:
    if isinstance(batch, Batch):
        return "batch_id = :v", {"v": batch.batch_id}
    if isinstance(batch, (int, np.integer)) and not isinstance(batch, bool):
        return "batch_id = :v", {"v": int(batch)}
    if isinstance(batch, str):
        return "batch_key = :v", {"v": batch}
    raise TypeError(f"expected a Batch, a batch key (str) or a batch id (int); got {type(batch).__name__}")


def _ts(v: Any) -> datetime | None:
    if v is None or isinstance(v, datetime):
        return v
    return datetime.fromisoformat(str(v))


def _batch_from_row(row: Any) -> Batch:
    d = dict(row)
    for k in ("created_at", "finished_at", "published_at", "superseded_at"):
        d[k] = _ts(d[k])
    for k in ("batch_id", "top_n", "n_items", "n_shards", "user_count", "expected_rows", "row_count"):
        d[k] = None if d[k] is None else int(d[k])
    return Batch(**d)


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


# ---------------------------------------------------------------------------------------------------------------
# item metadata of the MovieLens datasets

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


def read_item_metadata(path: str | Path) -> pd.DataFrame | None:
    """Item titles from a dataset folder or file (ML-1M movies.dat, ML-100K u.item): columns item_id, title, genres;
    None when the folder has no known metadata file."""
    path = Path(path)
    if path.is_dir():
        for name in ("movies.dat", "u.item"):
            if (path / name).is_file():
                return read_item_metadata(path / name)
        return None
    if path.name == "u.item":
        return _read_u_item(path)
    if path.suffix == ".dat":
        return _read_movies_dat(path)
    raise ValueError(f"{path}: unknown item metadata format (expected movies.dat or u.item)")


def _read_movies_dat(path: Path) -> pd.DataFrame:
    rows = []
    with open(path, encoding="latin-1") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("::")
            if len(parts) != 3:
                raise ValueError(f"{path}, line {lineno}: expected 'id::title::genres', got {len(parts)} field(s)")
            rows.append((parts[0], parts[1], parts[2] or None))
    return pd.DataFrame(rows, columns=["item_id", "title", "genres"])


def _read_u_item(path: Path) -> pd.DataFrame:
    names = ML100K_GENRES
    genre_file = path.with_name("u.genre")
    if genre_file.is_file():
        pairs = [ln.split("|") for ln in genre_file.read_text(encoding="latin-1").splitlines() if ln.strip()]
        names = tuple(name for name, _ in sorted(pairs, key=lambda p: int(p[1])))
    rows = []
    with open(path, encoding="latin-1") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("|")
            if len(parts) != 5 + len(names):
                raise ValueError(
                    f"{path}, line {lineno}: expected {5 + len(names)} '|'-separated fields, got {len(parts)}"
                )
            flags = parts[5:]
            genres = "|".join(g for g, flag in zip(names, flags) if flag == "1")
            rows.append((parts[0], parts[1], genres or None))
    return pd.DataFrame(rows, columns=["item_id", "title", "genres"])

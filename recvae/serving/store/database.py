"""One recommendations database: its URL (passwords masked in every message), engine and transactions, and the
store's SQL (table placeholders filled in) executed on it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from string import Template
from typing import Any

from sqlalchemy import bindparam, create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from recvae import paths
from recvae.serving.store.errors import StoreError, scrub
from recvae.serving.store.names import TableNames
from recvae.serving.store.sqlfiles import DIALECTS
from recvae.urls import mask_url, url_secrets

Params = dict[str, Any] | list[dict[str, Any]]


class Database:
    """The engine and transactions of one store's tables; driver errors become StoreError naming the masked URL."""

    def __init__(self, url: str | URL | None, tables: TableNames, *, busy_timeout_s: float,
                 connect_timeout_s: int) -> None:
        """`url`: SQLite or PostgreSQL (psycopg 3), default `paths.default_db_url()`; see RecommendationStore."""
        raw = url if url is not None else paths.default_db_url()
        self.url_masked = mask_url(raw)
        self.secrets = url_secrets(raw)
        self.url = self._parse_url(raw)
        self.tables = tables
        self.dialect = self._dialect()
        if self.dialect == "sqlite" and tables.schema:
            raise StoreError("a schema name is only supported on PostgreSQL")
        self.engine = self._create_engine(busy_timeout_s, connect_timeout_s)
        self.names = tables.placeholders()

    def _parse_url(self, raw: str | URL) -> URL:
        """The parsed URL; StoreError (masked) for one that does not parse or parses wrongly."""
        try:
            url = make_url(raw) if isinstance(raw, str) else raw
        except ArgumentError as exc:
            hint = "expected e.g. postgresql+psycopg://user:password@host:5432/db or sqlite:///path/to/file.db"
            raise StoreError(f"invalid database URL {self.url_masked}: {self.scrub(str(exc))}; {hint}") from None
        if "@" in (url.host or ""):  # user:p@ss@host parses as host 'ss@host': the driver would echo part of it
            raise StoreError(f"invalid database URL {self.url_masked}: an '@' in the password or user name must be "
                             "percent-encoded as %40")
        return url

    def _dialect(self) -> str:
        backend = self.url.get_backend_name()
        if backend == "postgres":  # Airflow-style URI scheme
            backend = "postgresql"
        if backend not in DIALECTS:
            raise StoreError(f"unsupported database {self.url_masked}: only sqlite and postgresql URLs are supported")
        return backend

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
            raise StoreError(f"cannot create an engine for {self.url_masked}: {self.scrub(str(exc))}") from None

    def scrub(self, message: str) -> str:
        """`message` with the URL's passwords masked."""
        return scrub(message, self.secrets)

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Turn driver errors into StoreError naming the action and the masked URL."""
        try:
            yield
        except DBAPIError as exc:
            orig = str(exc.orig).strip() if exc.orig is not None else str(exc)
            if exc.connection_invalidated:
                reason = "lost the connection to"
            else:
                reason = "cannot connect to" if _is_connect_error(exc) else "error on"
            raise StoreError(f"{action}: {reason} {self.url_masked}: {self.scrub(orig)}") from None
        except SQLAlchemyError as exc:
            raise StoreError(f"{action}: {self.url_masked}: {self.scrub(str(exc))}") from None

    @contextmanager
    def write(self, action: str) -> Iterator[Connection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE, so it never fails half-way on a lock upgrade)."""
        with self.errors(action), self.engine.connect() as conn:
            conn = conn.execution_options(recvae_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def read(self, action: str) -> Iterator[Connection]:
        """One read transaction."""
        with self.errors(action), self.engine.connect() as conn, conn.begin():
            yield conn

    def render(self, sql: str) -> str:
        """Store SQL with the ${table} placeholders replaced by the quoted names."""
        return Template(sql).substitute(self.names)

    def execute(self, conn: Connection, sql: str, params: Params | None = None, **expanding: Sequence[Any]) -> Any:
        """Execute store SQL (table placeholders filled in) with bound parameters; `expanding` binds IN lists."""
        stmt = text(self.render(sql))
        if expanding:
            stmt = stmt.bindparams(*[bindparam(k, expanding=True) for k in expanding])
            if isinstance(params, list):
                raise TypeError("IN lists cannot be bound for executemany")
            params = {**(params or {}), **{k: list(v) for k, v in expanding.items()}}
        return conn.execute(stmt, params or {})

    def all_exist(self, conn: Connection, names: Sequence[str]) -> bool:
        """Whether every named table, index or view exists (SQLite's catalogue, PostgreSQL's to_regclass)."""
        if self.dialect == "sqlite":
            found = self.execute(conn, "SELECT COUNT(*) FROM sqlite_master WHERE name IN :names", names=names).scalar()
        else:
            regs = [self.tables.qualified(n) for n in names]
            found = conn.execute(text("SELECT COUNT(to_regclass(n)) FROM unnest(CAST(:names AS text[])) AS n"),
                                 {"names": regs}).scalar()
        return int(found) == len(names)

    def now(self) -> Any:
        """The current time as the dialect stores it (SQLite: ISO text)."""
        return self.timestamp(datetime.now(UTC))

    def ago(self, seconds: float) -> Any:
        """The time `seconds` ago, as the dialect stores it."""
        return self.timestamp(datetime.now(UTC) - timedelta(seconds=seconds))

    def timestamp(self, t: datetime) -> Any:
        """`t` as the dialect stores it: a datetime on PostgreSQL, ISO text (microseconds) on SQLite."""
        return t if self.dialect == "postgresql" else t.isoformat(timespec="microseconds")

    def row_lock(self, clause: str) -> str:
        """' FOR UPDATE'-style suffix on PostgreSQL; nothing on SQLite, where a write transaction locks everything."""
        return f" {clause}" if self.dialect == "postgresql" else ""

    def lock(self, conn: Connection) -> None:
        """PostgreSQL: serialize schema changes, batch creation and publishing on this set of tables."""
        if self.dialect == "postgresql":
            key = int.from_bytes(hashlib.sha256(self.names["batches"].encode()).digest()[:8], "big", signed=True)
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def check_connection(self) -> None:
        """Raise StoreError (masked URL) when the database cannot be reached."""
        with self.read("connecting") as conn:
            conn.execute(text("SELECT 1"))


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

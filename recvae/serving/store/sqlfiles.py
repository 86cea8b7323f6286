"""The SQL files shipped in the package (`recvae/serving/sql/`: DDL per engine, named queries), rendered with the
validated table names, and the bound parameters of a query."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import Any

from sqlalchemy import text

from recvae.config import ConfigError, split_assignment
from recvae.serving.store.errors import StoreError
from recvae.serving.store.names import TableNames, validate_identifier

SQL_DIR_ENV = "RECVAE_SQL_DIR"
DIALECTS = ("sqlite", "postgresql")
PACKAGE_SQL_DIR = Path(__file__).resolve().parents[1] / "sql"  # recvae/serving/sql, installed with the package
# Query parameters that are counts or batch ids (integers); every other parameter is text (user ids are text).
INTEGER_PARAMS = frozenset({"n", "k", "limit", "offset", "top_n", "batch_id", "batch_a", "batch_b", "min_users"})
FLOAT_PARAMS = frozenset({"min_pct", "min_share"})  # percentiles and shares (real numbers)
_COMMENT_RE = re.compile(r"('(?:[^']|'')*')|--[^\n]*")


def sql_dir() -> Path:
    """The folder of SQL files: RECVAE_SQL_DIR, else `recvae/serving/sql` where the package is installed."""
    env = os.environ.get(SQL_DIR_ENV)
    return Path(env) if env else PACKAGE_SQL_DIR


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


def outputs_sql(dialect: str, tables: TableNames | None = None) -> str:
    """The rendered DDL of the output tables (anomalies, embeddings, similar items) for `dialect`."""
    if dialect not in DIALECTS:
        raise StoreError(f"unsupported dialect {dialect!r}; supported: {', '.join(DIALECTS)}")
    return render_sql(_read_sql(f"{dialect}/outputs.sql"), tables or TableNames())


def query_names() -> list[str]:
    """Names of the queries in the SQL folder's queries/."""
    return sorted(p.stem for p in (sql_dir() / "queries").glob("*.sql"))


def load_query(name: str, tables: TableNames | None = None) -> str:
    """The rendered text of queries/NAME.sql (named parameters like :user_id stay as they are)."""
    validate_identifier(name, "query name")
    known = query_names()
    if name not in known:
        folder = sql_dir() / "queries"
        raise StoreError(f"unknown query {name!r}; known: {', '.join(known) or '(none)'} (files in {folder})")
    return render_sql(_read_sql(f"queries/{name}.sql"), tables or TableNames())


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
        try:
            key, value = split_assignment(pair, "a parameter as NAME=VALUE")
        except ConfigError as exc:
            raise StoreError(f"query {name}: {exc}") from None
        if key in INTEGER_PARAMS:
            try:
                params[key] = int(value.strip())
            except ValueError:
                raise StoreError(f"query {name}: parameter {key} must be an integer, got {value!r}") from None
        elif key in FLOAT_PARAMS:
            try:
                params[key] = float(value.strip())
            except ValueError:
                raise StoreError(f"query {name}: parameter {key} must be a number, got {value!r}") from None
        else:
            params[key] = value
    check_query_params(name, sql, params)
    return params

"""Business filters: allow and deny lists of raw item ids (a file, a SQL table or query, or a list), turned into
the columns the one top-N (`recvae.serving.topn`) must never return. They are applied before the top-N is cut, so
a user still gets N items when N eligible unseen items exist.

Light imports on purpose: the pyfunc uses `ItemFilter`; the file and SQL readers import what they need inside."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
_HEADERS = ("item", "item_id")


class ItemFilterError(ValueError):
    """An allow or deny list that cannot be used: unreadable, malformed, a bad query, or nothing left to recommend."""


def _texts(values: Iterable[Any]) -> tuple[str, ...]:
    """Raw ids as text, in order, without repeats or missing values (ids compare as text everywhere in serving)."""
    seen: dict[str, None] = {}
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        seen.setdefault(str(v).strip(), None)
    return tuple(k for k in seen if k)


@dataclass(frozen=True)
class ItemFilter:
    """Items a list may hold: only `allow` (None: every item) and never `deny` (raw ids as text)."""

    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()

    @classmethod
    def of(cls, allow: Iterable[Any] | None = None, deny: Iterable[Any] | None = None) -> ItemFilter:
        """A filter from raw ids of any type (None or an empty deny list: no restriction)."""
        return cls(None if allow is None else _texts(allow), _texts(deny or ()))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ItemFilter:
        """Back from `to_dict` (an Airflow XCom, a batch's plan); None is no filter."""
        d = d or {}
        return cls.of(d.get("allow_items"), d.get("deny_items"))

    def to_dict(self) -> dict[str, Any]:
        """JSON form: {'allow_items': [...] or None, 'deny_items': [...]}."""
        return {"allow_items": None if self.allow is None else list(self.allow), "deny_items": list(self.deny)}

    @property
    def active(self) -> bool:
        """Whether the filter removes anything at all."""
        return self.allow is not None or bool(self.deny)

    def excluded(self, item_ids: np.ndarray) -> np.ndarray | None:
        """Boolean mask over the model's columns (raw ids `item_ids`, as text): True where the item may not be
        recommended; None when nothing is excluded. ItemFilterError when no item is left."""
        if not self.active:
            return None
        ids = np.asarray([str(v) for v in item_ids], dtype=object)
        out = np.zeros(len(ids), dtype=bool)
        if self.allow is not None:
            allowed = np.isin(ids, np.asarray(self.allow, dtype=object))
            _log_unknown("allow", self.allow, ids)
            out |= ~allowed
        if self.deny:
            out |= np.isin(ids, np.asarray(self.deny, dtype=object))
            _log_unknown("deny", self.deny, ids)
        if out.all():
            raise ItemFilterError(f"the allow/deny lists leave none of the model's {len(ids):,} items to recommend "
                                  f"(allow: {_count(self.allow)}, deny: {len(self.deny):,} item(s))")
        logger.info("item filter: %d of %d item(s) may not be recommended", int(out.sum()), len(ids))
        return out


def _count(values: tuple[str, ...] | None) -> str:
    return "every item" if values is None else f"{len(values):,} item(s)"


def _log_unknown(which: str, listed: tuple[str, ...], ids: np.ndarray) -> None:
    unknown = np.setdiff1d(np.asarray(listed, dtype=object), ids)
    if len(unknown):
        logger.warning("%s list: %d of %d item id(s) are not items the model scores (ignored), e.g. %s", which,
                       len(unknown), len(listed), ", ".join(map(str, unknown[:5])))


def read_item_file(path: str | Path) -> tuple[str, ...]:
    """Raw item ids from a text file, one per line (a first line `item` or `item_id` is a header; blank lines and
    `#` comments are skipped). DataValidationError naming the file and line for a malformed one."""
    from recvae.data.validate import DataValidationError

    path = Path(path)
    if path.is_dir():
        raise DataValidationError("is a folder; expected a file of item ids, one per line", source=path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataValidationError("file not found (a file of item ids, one per line)", source=path) from None
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"not UTF-8 text ({exc.reason})", source=path) from None
    ids = []
    for n, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line or (n == 1 and line.lower() in _HEADERS):
            continue
        if "," in line or "\t" in line:
            raise DataValidationError(f"expected one item id per line, got {raw.strip()[:60]!r}", source=path,
                                      position=n)
        ids.append(line)
    if not ids:
        raise DataValidationError("holds no item id", source=path)
    return _texts(ids)


def sql_item_list(db_url: str, query: str) -> tuple[str, ...]:
    """Raw item ids from the first column of a read-only SQL query, or of a table (`name` or `schema.name`: its
    `item_id` column, else its first). StoreError when the database cannot be reached (a passing fault),
    ItemFilterError for a query that fails on a reachable database."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from recvae.serving.store.database import Database
    from recvae.serving.store.names import TableNames, quote

    db = Database(db_url, TableNames(), busy_timeout_s=60.0, connect_timeout_s=5)
    try:
        db.check_connection()
        sql = query.strip().rstrip(";")
        if _TABLE_RE.fullmatch(sql):
            sql = "SELECT * FROM " + ".".join(quote(p) for p in sql.split("."))
        try:
            with db.engine.connect() as conn:
                if db.dialect == "postgresql":  # a filter reads; it never changes the database
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                result = conn.execute(text(sql))
                cols = list(result.keys())
                col = cols.index("item_id") if "item_id" in cols else 0
                values = [row[col] for row in result]
                conn.rollback()
        except SQLAlchemyError as exc:
            reason = db.scrub(" ".join(str(getattr(exc, "orig", None) or exc).split()))
            raise ItemFilterError(f"item list query {query!r} on {db.url_masked} failed: {reason}") from None
    finally:
        db.close()
    ids = _texts(values)
    if not ids:
        raise ItemFilterError(f"item list query {query!r} on {db.url_masked} returned no item id")
    return ids


def resolve_filter(
    *,
    allow_items: Iterable[Any] | None = None,
    deny_items: Iterable[Any] | None = None,
    allow_file: str | Path | None = None,
    deny_file: str | Path | None = None,
    allow_sql: str | None = None,
    deny_sql: str | None = None,
    db_url: str | None = None,
) -> ItemFilter:
    """One filter from every source given: allow lists intersect (an item must be in each), deny lists add up."""
    allows: list[tuple[str, ...]] = []
    if allow_items is not None:
        allows.append(_texts(allow_items))
    if allow_file:
        allows.append(read_item_file(allow_file))
    deny = list(_texts(deny_items or ()))
    if deny_file:
        deny += read_item_file(deny_file)
    if allow_sql or deny_sql:
        if not db_url:
            raise ItemFilterError("an allow/deny SQL query needs a database URL")
        if allow_sql:
            allows.append(sql_item_list(db_url, allow_sql))
        if deny_sql:
            deny += sql_item_list(db_url, deny_sql)
    allow = None
    for a in allows:
        keep = set(a)
        allow = a if allow is None else tuple(v for v in allow if v in keep)
    return ItemFilter.of(allow, deny)

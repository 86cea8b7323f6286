"""Checks on raw interaction columns: arrow column -> typed numpy values, bad values flagged on a Validator."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recvae.data.validate.arrays import (
    FLOAT_RE,
    INF_RE,
    INT64_MAX,
    INT_RE,
    NAN_RE,
    beyond_int64,
    decoded,
    int_literals,
    integer_text,
    is_number,
    is_text,
    mask,
    no_nulls,
    trimmed,
    values_at,
)
from recvae.data.validate.validator import DataValidationError, Positions, Validator

logger = logging.getLogger(__name__)

COLUMNS = ("user", "item", "rating", "timestamp")
_TIME_RANGE = "timestamp beyond the int64 range of seconds"
_BEYOND_INT64 = f"id beyond the int64 range (at most {INT64_MAX})"


class ColumnChecker:
    """Turns raw arrow columns into typed numpy arrays, flagging bad values on a Validator."""

    def __init__(self, validator: Validator, positions: Positions, n: int) -> None:
        self.validator = validator
        self.positions = positions
        self.n = n
        self.bad = np.zeros(n, dtype=bool)

    def _flag(self, where: np.ndarray, reason: str, column: str, arr: Any = None) -> None:
        if not where.any():
            return
        pos = self.positions.of(where)
        values = values_at(arr, where) if arr is not None else None
        if values is not None and len(values) < len(pos):
            values = np.concatenate([values, np.full(len(pos) - len(values), "", dtype=object)])
        self.validator.flag(pos, reason, column=column, values=values)
        self.bad |= where

    def _all_missing(self, column: str, dtype: type) -> np.ndarray:
        """A column of nulls only (or no rows): every row flagged, zeros returned."""
        self._flag(np.ones(self.n, bool), "missing value", column)
        return np.zeros(self.n, dtype)

    def _text(self, arr: pa.ChunkedArray, column: str) -> tuple[pa.ChunkedArray, np.ndarray]:
        """(trimmed text, empty rows) of a text column; empty values are flagged as missing."""
        s = trimmed(arr)
        empty = mask(pc.is_null(s)) | mask(pc.equal(s, ""))
        self._flag(empty, "missing value", column)
        return s, empty

    def _unsupported(self, t: pa.DataType, what: str, column: str) -> DataValidationError:
        return DataValidationError(f"unsupported type {t} for {what} column", source=self.validator.file, column=column)

    def ids(self, arr: pa.ChunkedArray, column: str, id_type: str = "int") -> np.ndarray:
        """int64 ids (id_type 'int'), str ids ('str'), or int when every value is an integer literal ('auto').

        Ids beyond the int64 range are never wrapped: they are flagged ('int') or make the column text ids."""
        arr = decoded(arr)
        t = arr.type
        if pa.types.is_null(t):
            return self._all_missing(column, np.int64)
        if is_number(t):
            return self._numeric_ids(arr, column, id_type)
        if is_text(t):
            return self._text_ids(arr, column, id_type)
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            raise DataValidationError(
                "values are not valid UTF-8 text (give the file's encoding, e.g. latin-1)",
                source=self.validator.file, column=column,
            )
        raise self._unsupported(t, "an id", column)

    def _numeric_ids(self, arr: pa.ChunkedArray, column: str, id_type: str) -> np.ndarray:
        """Ids from an integer, float or decimal column: exact, never wrapped past int64."""
        if pa.types.is_floating(arr.type):
            arr = pc.cast(arr, pa.float64())  # float16/32 too: one float type for the checks below
        t = arr.type
        invalid = mask(pc.is_null(arr, nan_is_null=True))
        self._flag(invalid, "missing value", column)
        if pa.types.is_floating(t):
            inf = mask(pc.is_inf(arr))
            self._flag(inf, "infinite value", column, arr)
            invalid |= inf
        if not pa.types.is_integer(t):
            nonint = mask(pc.not_equal(arr, pc.floor(arr))) & ~invalid
            self._flag(nonint, "non-integer id", column, arr)
            invalid |= nonint
        if not pa.types.is_unsigned_integer(t):
            negative = mask(pc.less(arr, 0)) & ~invalid
            self._flag(negative, "negative id", column, arr)
            invalid |= negative
        big = beyond_int64(arr) & ~invalid
        if big.any() and id_type == "int":
            self._flag(big, _BEYOND_INT64, column, arr)
        elif big.any():
            self._as_text_note(column)
            return integer_text(arr, invalid)
        values = pc.if_else(pa.array(invalid | big), pa.scalar(0, t), arr) if (invalid | big).any() else arr
        values = np.asarray(pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False), np.int64)
        return values.astype(str).astype(object) if id_type == "str" else values

    def _text_ids(self, arr: pa.ChunkedArray, column: str, id_type: str) -> np.ndarray:
        """Ids from a text column: the trimmed text ('str', or 'auto' unless every value is an integer literal)."""
        s, empty = self._text(arr, column)
        isint = mask(pc.match_substring_regex(s, INT_RE))
        text = lambda: np.asarray(pc.fill_null(s, "").to_numpy(zero_copy_only=False), dtype=object)  # noqa: E731
        if id_type == "str" or (id_type == "auto" and not (isint | empty).all()):
            return text()
        self._flag(~isint & ~empty, "non-numeric id", column, s)
        num, negative, wide = int_literals(s, isint)
        self._flag(negative, "negative id", column, s)
        big = wide & ~negative
        if big.any() and id_type == "auto":
            self._as_text_note(column)
            return text()
        self._flag(big, _BEYOND_INT64, column, s)
        return num

    def _as_text_note(self, column: str) -> None:
        logger.info("%s: column %r has ids beyond the int64 range; its ids are read as text", self.validator.file,
                    column)

    def ratings(self, arr: pa.ChunkedArray, column: str) -> np.ndarray:
        """float64 ratings; missing, non-numeric, NaN and infinite values are flagged."""
        arr = decoded(arr)
        t = arr.type
        if is_text(t):
            return self._text_ratings(arr, column)
        if pa.types.is_null(t):
            return self._all_missing(column, np.float64)
        if not (is_number(t) or pa.types.is_boolean(t)):
            raise self._unsupported(t, "a rating", column)
        f = pc.cast(arr, pa.float64())
        null = mask(pc.is_null(f))
        self._flag(null, "missing value", column)
        values = np.asarray(no_nulls(f, 0.0).to_numpy(zero_copy_only=False), np.float64)
        self._flag(np.isnan(values) & ~null, "NaN value", column, f)
        self._flag(np.isinf(values), "infinite value", column, f)
        return values

    def _text_ratings(self, arr: pa.ChunkedArray, column: str) -> np.ndarray:
        """Decimal or scientific notation; 'nan' and 'inf' are flagged as such, other text as non-numeric."""
        s, empty = self._text(arr, column)
        isnum = mask(pc.match_substring_regex(s, FLOAT_RE))
        isnan = mask(pc.match_substring_regex(s, NAN_RE))
        isinf = mask(pc.match_substring_regex(s, INF_RE))
        self._flag(isnan, "NaN value", column, s)
        self._flag(isinf, "infinite value", column, s)
        self._flag(~(isnum | isnan | isinf | empty), "non-numeric value", column, s)
        return np.asarray(
            pc.cast(pc.if_else(pa.array(isnum), s, "0"), pa.float64()).to_numpy(zero_copy_only=False), np.float64
        )

    def timestamps(self, arr: pa.ChunkedArray, column: str) -> np.ndarray:
        """int64 seconds since the epoch from integers, floats (floored), timestamps, dates or ISO-8601 strings."""
        arr = decoded(arr)
        t = arr.type
        if pa.types.is_null(t):  # every value empty (or no rows at all)
            return self._all_missing(column, np.int64)
        if pa.types.is_date(t):
            arr = pc.cast(arr, pa.timestamp("s"))
            t = arr.type
        if pa.types.is_timestamp(t):
            self._flag(mask(pc.is_null(arr)), "missing value", column)
            secs = pc.cast(pc.cast(arr, pa.timestamp("s", tz=t.tz), safe=False), pa.int64())
            return np.asarray(no_nulls(secs, 0).to_numpy(zero_copy_only=False), np.int64)
        if is_number(t):
            return self._numeric_timestamps(arr, column)
        if is_text(t):
            return self._text_timestamps(arr, column)
        raise self._unsupported(t, "a timestamp", column)

    def _numeric_timestamps(self, arr: pa.ChunkedArray, column: str) -> np.ndarray:
        """Integer seconds as they are; float and decimal seconds floored."""
        t = arr.type
        if pa.types.is_integer(t):
            self._flag(mask(pc.is_null(arr)), "missing value", column)
            big = beyond_int64(arr)
            self._flag(big, _TIME_RANGE, column, arr)
            values = pc.if_else(pa.array(big), pa.scalar(0, t), arr) if big.any() else arr
            return np.asarray(pc.cast(no_nulls(values, 0), pa.int64()).to_numpy(zero_copy_only=False), np.int64)
        f = pc.cast(arr, pa.float64())
        floats = np.asarray(pc.fill_null(f, np.nan).to_numpy(zero_copy_only=False), np.float64)
        bad = ~np.isfinite(floats)
        self._flag(bad, "missing value", column, f)
        wide = ~bad & (np.abs(floats) >= 2.0**63)
        self._flag(wide, _TIME_RANGE, column, f)
        return np.floor(np.where(bad | wide, 0.0, floats)).astype(np.int64)

    def _text_timestamps(self, arr: pa.ChunkedArray, column: str) -> np.ndarray:
        """Integer seconds or ISO-8601 text."""
        s, empty = self._text(arr, column)
        isint = mask(pc.match_substring_regex(s, INT_RE))
        out, _, wide = int_literals(s, isint)
        self._flag(wide, _TIME_RANGE, column, s)
        other = ~isint & ~empty
        if other.any():
            texts = pd.Series(np.asarray(s.to_numpy(zero_copy_only=False), dtype=object)[other])
            parsed = pd.to_datetime(texts, errors="coerce", utc=True, format="ISO8601")
            ok = parsed.notna().to_numpy()
            rows = np.flatnonzero(other)
            out[rows[ok]] = parsed[ok].to_numpy(dtype="datetime64[s]").astype(np.int64)
            bad = np.zeros(self.n, bool)
            bad[rows[~ok]] = True
            self._flag(bad, "unparsable timestamp", column, s)
        return out


def build_interactions(
    columns: dict[str, pa.ChunkedArray | None],
    validator: Validator,
    positions: Positions,
    *,
    id_type: str | Mapping[str, str] = "int",
    names: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Checked interactions (user, item, rating[, timestamp]) from raw arrow columns; bad rows flagged and dropped.

    `columns` maps user/item/rating/timestamp to arrow columns (rating None: implicit, 1.0 everywhere;
    timestamp None: no timestamp column). `names` gives the source's column names for messages.
    The index of the result holds each row's file position (line or row number). `id_type` applies to both id
    columns, or maps "user"/"item" to their own (a batched read that found text ids in one column).
    """
    names = names or {}
    users, items = columns["user"], columns["item"]
    if users is None or items is None:
        raise ValueError("build_interactions needs a user and an item column")
    n = len(users)
    check = ColumnChecker(validator, positions, n)
    data: dict[str, np.ndarray] = {
        "user": check.ids(users, names.get("user", "user"), _id_type(id_type, "user")),
        "item": check.ids(items, names.get("item", "item"), _id_type(id_type, "item")),
    }
    rating = columns.get("rating")
    data["rating"] = check.ratings(rating, names.get("rating", "rating")) if rating is not None else np.ones(n)
    ts = columns.get("timestamp")
    if ts is not None:
        data["timestamp"] = check.timestamps(ts, names.get("timestamp", "timestamp"))
    keep = ~check.bad if check.bad.any() else None
    if keep is not None:
        data = {k: v[keep] for k, v in data.items()}
    index = positions.index(keep, n, validator.unit)
    return pd.DataFrame(data, index=index, copy=False)


def _id_type(id_type: str | Mapping[str, str], column: str) -> str:
    return id_type if isinstance(id_type, str) else id_type.get(column, "auto")

"""Checks on raw interaction columns: errors that name file, line/row and column, or lenient quarantine."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

COLUMNS = ("user", "item", "rating", "timestamp")
DUPLICATE_RULES = ("max", "first", "error")
_INT_RE = r"^[+-]?[0-9]+$"
_FLOAT_RE = r"^[+-]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?)$"
_NAN_RE = r"^[+-]?(?i:nan)$"
_INF_RE = r"^[+-]?(?i:inf|infinity)$"
_MAX_VALUE_CHARS = 200


class DataValidationError(ValueError):
    """Input data is malformed; the message names the file, the line or row, and the column."""

    def __init__(
        self,
        message: str,
        *,
        source: str | Path | None = None,
        position: int | None = None,
        unit: str = "line",
        column: str | None = None,
    ) -> None:
        self.source = str(source) if source is not None else None
        self.position = position
        self.unit = unit
        self.column = column
        self.reason = message
        where = [self.source] if self.source else []
        if position is not None:
            where.append(f"{unit} {position}")
        if column:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


@dataclass
class ValidationReport:
    """What a lenient read dropped: counts per reason and where the quarantined rows went."""

    source: str
    unit: str = "line"
    n_rows: int = 0  # rows kept
    n_dropped: int = 0  # distinct rows dropped
    by_reason: dict[str, int] = field(default_factory=dict)  # problems per reason (a row may have several)
    quarantine: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "unit": self.unit,
            "rows_kept": self.n_rows,
            "rows_dropped": self.n_dropped,
            "by_reason": dict(self.by_reason),
            "quarantine": self.quarantine,
        }


class Validator:
    """Collects bad rows of one source; `finish` raises on the first one (strict) or reports them (lenient).

    Positions are 1-based line numbers of text files (the header, if any, is line 1) or 1-based row
    numbers of Parquet files and SQL results (`unit` says which).
    """

    def __init__(self, source: str | Path, *, lenient: bool = False, unit: str = "line") -> None:
        self.source = str(source)
        self.file = str(source)  # the file now being read (sources such as pro_sg span several files)
        self.lenient = lenient
        self.unit = unit
        self._chunks: list[pd.DataFrame] = []
        self._files: list[str] = []
        self.report: ValidationReport | None = None

    def start_file(self, path: str | Path) -> None:
        """Problems flagged from now on belong to file `path`."""
        self.file = str(path)

    def flag(
        self,
        positions: np.ndarray | Sequence[int],
        reason: str,
        *,
        column: str | None = None,
        values: np.ndarray | Sequence[Any] | None = None,
    ) -> None:
        """Record that the rows at `positions` are bad for `reason` (optionally with the offending values)."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size == 0:
            return
        if values is None:
            text = np.full(positions.size, "", dtype=object)
        else:
            text = np.array([_short(v) for v in values], dtype=object)
        if self.file not in self._files:
            self._files.append(self.file)
        self._chunks.append(
            pd.DataFrame(
                {
                    "file": self.file,
                    self.unit: positions,
                    "column": column or "",
                    "reason": reason,
                    "value": text,
                }
            )
        )

    @property
    def n_flagged(self) -> int:
        return int(sum(len(c) for c in self._chunks))

    def issues(self) -> pd.DataFrame:
        """Every recorded problem (file, position, column, reason, value), in file then position order."""
        if not self._chunks:
            return pd.DataFrame(
                {"file": [], self.unit: np.zeros(0, np.int64), "column": [], "reason": [], "value": []}
            )
        df = pd.concat(self._chunks, ignore_index=True)
        order = df["file"].map({f: i for i, f in enumerate(self._files)})
        df = df.assign(_order=order).sort_values(["_order", self.unit], kind="stable")
        return df.drop(columns="_order").reset_index(drop=True)

    def finish(self, n_rows: int, quarantine: str | Path | None = None) -> ValidationReport:
        """Raise DataValidationError for the earliest bad row (strict), or log counts and write the quarantine."""
        issues = self.issues()
        report = ValidationReport(source=self.source, unit=self.unit, n_rows=int(n_rows))
        if len(issues):
            first = issues.iloc[0]
            if not self.lenient:
                more = len(issues) - 1
                value = f" {first['value']!r}" if first["value"] != "" else ""
                tail = f" ({more} more problem(s); lenient mode drops and quarantines bad rows)" if more else ""
                raise DataValidationError(
                    f"{first['reason']}{value}{tail}",
                    source=first["file"],
                    position=int(first[self.unit]),
                    unit=self.unit,
                    column=first["column"] or None,
                )
            report.by_reason = {str(k): int(v) for k, v in issues["reason"].value_counts(sort=True).items()}
            report.n_dropped = int(len(issues[["file", self.unit]].drop_duplicates()))
            if quarantine is not None:
                report.quarantine = str(write_quarantine(issues, quarantine))
            logger.warning(
                "%s: dropped %d bad row(s): %s%s",
                self.source,
                report.n_dropped,
                ", ".join(f"{k}: {v}" for k, v in report.by_reason.items()),
                f"; quarantined in {report.quarantine}" if report.quarantine else "",
            )
        self.report = report
        return report


def write_quarantine(issues: pd.DataFrame, path: str | Path) -> Path:
    """Write bad rows (position, column, reason, value) as Parquet (.parquet) or CSV (anything else), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # never a half-written file under the real name
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            issues.to_parquet(tmp, index=False)
        else:
            issues.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _short(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


# --- column checks: arrow column -> numpy values + bad-row mask --------------------------------------


class Positions:
    """Maps row numbers of a column to file positions: `offset + row`, or an explicit array."""

    def __init__(self, offset: int = 1, explicit: np.ndarray | None = None) -> None:
        self.offset = offset
        self.explicit = explicit

    def of(self, mask: np.ndarray) -> np.ndarray:
        rows = np.flatnonzero(mask)
        return self.explicit[rows] if self.explicit is not None else rows + self.offset

    def index(self, keep: np.ndarray | None, n: int, name: str) -> pd.Index:
        """The DataFrame index (file positions) of the kept rows."""
        if self.explicit is None and keep is None:
            return pd.RangeIndex(self.offset, self.offset + n, name=name)
        pos = self.explicit if self.explicit is not None else np.arange(self.offset, self.offset + n, dtype=np.int64)
        return pd.Index(pos if keep is None else pos[keep], name=name)


def _mask(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean arrow array (nulls counted as False) as numpy."""
    if arr.null_count:
        arr = pc.fill_null(arr, False)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)


def _no_nulls(arr: pa.ChunkedArray | pa.Array, fill: Any) -> pa.ChunkedArray | pa.Array:
    return pc.fill_null(arr, fill) if arr.null_count else arr


def _values_at(arr: pa.ChunkedArray | pa.Array, mask: np.ndarray, limit: int = 100_000) -> np.ndarray:
    rows = np.flatnonzero(mask)[:limit]
    return np.asarray(pc.take(arr, pa.array(rows)).to_pylist(), dtype=object)


_INT64_MAX = 2**63 - 1
_TIME_RANGE = "timestamp beyond the int64 range of seconds"
_BEYOND_INT64 = f"id beyond the int64 range (at most {_INT64_MAX})"


def _decoded(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary-encoded column as plain values; any other column as it is."""
    return pc.cast(arr, arr.type.value_type) if pa.types.is_dictionary(arr.type) else arr


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _beyond_int64(arr: pa.ChunkedArray) -> np.ndarray:
    """Rows whose (numeric) value is above the int64 maximum; below-zero values are flagged elsewhere."""
    t = arr.type
    if pa.types.is_integer(t):
        if not pa.types.is_unsigned_integer(t) or t.bit_width < 64:
            return np.zeros(len(arr), bool)
        return _mask(pc.greater(arr, pa.scalar(_INT64_MAX, t)))
    if pa.types.is_floating(t):
        return _mask(pc.greater_equal(pc.cast(arr, pa.float64()), 2.0**63))  # every float below 2**63 fits
    return _mask(pc.greater(arr, pa.scalar(Decimal(_INT64_MAX), pa.decimal128(19, 0))))


def _integer_text(arr: pa.ChunkedArray, invalid: np.ndarray) -> np.ndarray:
    """The exact integer text of each value of a numeric column ('' where invalid): for ids beyond int64."""
    if pa.types.is_integer(arr.type):
        return np.asarray(pc.fill_null(pc.cast(arr, pa.string()), "").to_numpy(zero_copy_only=False), dtype=object)
    values = arr.to_pylist()  # floats and decimals: Python's int() is exact; only columns with huge ids come here
    return np.asarray(["" if bad else str(int(v)) for v, bad in zip(values, invalid)], dtype=object)


def integer_text_only(arr: pa.ChunkedArray) -> bool:
    """Whether every non-empty value of a text column is an integer literal."""
    s = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
    other = pc.invert(pc.or_kleene(pc.equal(s, ""), pc.match_substring_regex(s, _INT_RE)))
    return not _mask(other).any()


def _int_literals(s: pa.ChunkedArray, isint: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int64 values, negative, too wide for int64) of the integer literals `isint` of text column `s`; values are 0
    elsewhere and where too wide."""
    digits = pc.utf8_ltrim(s, "+-0")  # an integer literal: one optional sign, then digits
    n = np.asarray(pc.fill_null(pc.utf8_length(digits), 0).to_numpy(zero_copy_only=False), np.int64)
    top = _mask(pc.greater(digits, str(_INT64_MAX)))  # equal lengths compare as numbers
    wide = isint & ((n > 19) | ((n == 19) & top))
    negative = isint & _mask(pc.starts_with(s, "-")) & (n > 0)
    num = pc.cast(pc.if_else(pa.array(isint & ~wide), s, "0"), pa.int64())
    return np.array(num.to_numpy(zero_copy_only=False), np.int64), negative, wide  # a copy: callers write to it


class ColumnChecker:
    """Turns raw arrow columns into typed numpy arrays, flagging bad values on a Validator."""

    def __init__(self, validator: Validator, positions: Positions, n: int) -> None:
        self.validator = validator
        self.positions = positions
        self.n = n
        self.bad = np.zeros(n, dtype=bool)

    def _flag(self, mask: np.ndarray, reason: str, column: str, arr: Any = None) -> None:
        if not mask.any():
            return
        pos = self.positions.of(mask)
        values = _values_at(arr, mask) if arr is not None else None
        if values is not None and len(values) < len(pos):
            values = np.concatenate([values, np.full(len(pos) - len(values), "", dtype=object)])
        self.validator.flag(pos, reason, column=column, values=values)
        self.bad |= mask

    def ids(self, arr: pa.ChunkedArray, column: str, id_type: str = "int") -> np.ndarray:
        """int64 ids (id_type 'int'), str ids ('str'), or int when every value is an integer literal ('auto').

        Ids beyond the int64 range are never wrapped: they are flagged ('int') or make the column text ids."""
        arr = _decoded(arr)
        t = arr.type
        if pa.types.is_null(t):
            self._flag(np.ones(self.n, bool), "missing value", column)
            return np.zeros(self.n, np.int64)
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            return self._numeric_ids(arr, column, id_type)
        if _is_text(t):
            return self._text_ids(arr, column, id_type)
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            raise DataValidationError(
                "values are not valid UTF-8 text (give the file's encoding, e.g. latin-1)",
                source=self.validator.file, column=column,
            )
        raise DataValidationError(
            f"unsupported type {t} for an id column", source=self.validator.file, column=column
        )

    def _numeric_ids(self, arr: pa.ChunkedArray, column: str, id_type: str) -> np.ndarray:
        """Ids from an integer, float or decimal column: exact, never wrapped past int64."""
        if pa.types.is_floating(arr.type):
            arr = pc.cast(arr, pa.float64())  # float16/32 too: one float type for the checks below
        t = arr.type
        invalid = _mask(pc.is_null(arr, nan_is_null=True))
        self._flag(invalid, "missing value", column)
        if pa.types.is_floating(t):
            inf = _mask(pc.is_inf(arr))
            self._flag(inf, "infinite value", column, arr)
            invalid |= inf
        if not pa.types.is_integer(t):
            nonint = _mask(pc.not_equal(arr, pc.floor(arr))) & ~invalid
            self._flag(nonint, "non-integer id", column, arr)
            invalid |= nonint
        if not pa.types.is_unsigned_integer(t):
            negative = _mask(pc.less(arr, 0)) & ~invalid
            self._flag(negative, "negative id", column, arr)
            invalid |= negative
        big = _beyond_int64(arr) & ~invalid
        if big.any() and id_type == "int":
            self._flag(big, _BEYOND_INT64, column, arr)
        elif big.any():
            self._as_text_note(column)
            return _integer_text(arr, invalid)
        values = pc.if_else(pa.array(invalid | big), pa.scalar(0, t), arr) if (invalid | big).any() else arr
        values = np.asarray(pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False), np.int64)
        return values.astype(str).astype(object) if id_type == "str" else values

    def _text_ids(self, arr: pa.ChunkedArray, column: str, id_type: str) -> np.ndarray:
        """Ids from a text column: the trimmed text ('str', or 'auto' unless every value is an integer literal)."""
        s = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
        empty = _mask(pc.is_null(s)) | _mask(pc.equal(s, ""))
        self._flag(empty, "missing value", column)
        isint = _mask(pc.match_substring_regex(s, _INT_RE))
        text = lambda: np.asarray(pc.fill_null(s, "").to_numpy(zero_copy_only=False), dtype=object)  # noqa: E731
        if id_type == "str" or (id_type == "auto" and not (isint | empty).all()):
            return text()
        self._flag(~isint & ~empty, "non-numeric id", column, s)
        num, negative, wide = _int_literals(s, isint)
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
        t = arr.type
        if pa.types.is_dictionary(t):
            arr = pc.cast(arr, t.value_type)
            t = arr.type
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
            s = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
            empty = _mask(pc.is_null(s)) | _mask(pc.equal(s, ""))
            self._flag(empty, "missing value", column)
            isnum = _mask(pc.match_substring_regex(s, _FLOAT_RE))
            isnan = _mask(pc.match_substring_regex(s, _NAN_RE))
            isinf = _mask(pc.match_substring_regex(s, _INF_RE))
            self._flag(isnan, "NaN value", column, s)
            self._flag(isinf, "infinite value", column, s)
            self._flag(~(isnum | isnan | isinf | empty), "non-numeric value", column, s)
            return np.asarray(
                pc.cast(pc.if_else(pa.array(isnum), s, "0"), pa.float64()).to_numpy(zero_copy_only=False), np.float64
            )
        if pa.types.is_null(t):
            self._flag(np.ones(self.n, bool), "missing value", column)
            return np.zeros(self.n, np.float64)
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)):
            raise DataValidationError(f"unsupported type {t} for a rating column", source=self.validator.file, column=column)
        f = pc.cast(arr, pa.float64())
        null = _mask(pc.is_null(f))
        self._flag(null, "missing value", column)
        values = np.asarray(_no_nulls(f, 0.0).to_numpy(zero_copy_only=False), np.float64)
        self._flag(np.isnan(values) & ~null, "NaN value", column, f)
        self._flag(np.isinf(values), "infinite value", column, f)
        return values

    def timestamps(self, arr: pa.ChunkedArray, column: str) -> np.ndarray:
        """int64 seconds since the epoch from integers, floats (floored), timestamps, dates or ISO-8601 strings."""
        arr = _decoded(arr)
        t = arr.type
        if pa.types.is_null(t):  # every value empty (or no rows at all)
            self._flag(np.ones(self.n, bool), "missing value", column)
            return np.zeros(self.n, np.int64)
        if pa.types.is_date(t):
            arr = pc.cast(arr, pa.timestamp("s"))
            t = arr.type
        if pa.types.is_timestamp(t):
            self._flag(_mask(pc.is_null(arr)), "missing value", column)
            secs = pc.cast(pc.cast(arr, pa.timestamp("s", tz=t.tz), safe=False), pa.int64())
            return np.asarray(_no_nulls(secs, 0).to_numpy(zero_copy_only=False), np.int64)
        if pa.types.is_integer(t):
            self._flag(_mask(pc.is_null(arr)), "missing value", column)
            big = _beyond_int64(arr)
            self._flag(big, _TIME_RANGE, column, arr)
            values = pc.if_else(pa.array(big), pa.scalar(0, t), arr) if big.any() else arr
            return np.asarray(pc.cast(_no_nulls(values, 0), pa.int64()).to_numpy(zero_copy_only=False), np.int64)
        if pa.types.is_floating(t) or pa.types.is_decimal(t):
            f = pc.cast(arr, pa.float64())
            values = np.asarray(pc.fill_null(f, np.nan).to_numpy(zero_copy_only=False), np.float64)
            bad = ~np.isfinite(values)
            self._flag(bad, "missing value", column, f)
            wide = ~bad & (np.abs(values) >= 2.0**63)
            self._flag(wide, _TIME_RANGE, column, f)
            return np.floor(np.where(bad | wide, 0.0, values)).astype(np.int64)
        if _is_text(t):
            return self._text_timestamps(arr, column)
        raise DataValidationError(f"unsupported type {t} for a timestamp column", source=self.validator.file, column=column)

    def _text_timestamps(self, arr: pa.ChunkedArray, column: str) -> np.ndarray:
        """Integer seconds or ISO-8601 text."""
        s = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
        empty = _mask(pc.is_null(s)) | _mask(pc.equal(s, ""))
        self._flag(empty, "missing value", column)
        isint = _mask(pc.match_substring_regex(s, _INT_RE))
        out, _, wide = _int_literals(s, isint)
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
    id_type: str = "int",
    names: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Checked interactions (user, item, rating[, timestamp]) from raw arrow columns; bad rows flagged and dropped.

    `columns` maps user/item/rating/timestamp to arrow columns (rating None: implicit, 1.0 everywhere;
    timestamp None: no timestamp column). `names` gives the source's column names for messages.
    The index of the result holds each row's file position (line or row number).
    """
    names = names or {}
    n = len(columns["user"])
    check = ColumnChecker(validator, positions, n)
    data: dict[str, np.ndarray] = {
        "user": check.ids(columns["user"], names.get("user", "user"), id_type),
        "item": check.ids(columns["item"], names.get("item", "item"), id_type),
    }
    rating = columns.get("rating")
    data["rating"] = check.ratings(rating, names.get("rating", "rating")) if rating is not None else np.ones(n, np.float64)
    ts = columns.get("timestamp")
    if ts is not None:
        data["timestamp"] = check.timestamps(ts, names.get("timestamp", "timestamp"))
    keep = ~check.bad if check.bad.any() else None
    if keep is not None:
        data = {k: v[keep] for k, v in data.items()}
    index = positions.index(keep, n, validator.unit)
    return pd.DataFrame(data, index=index, copy=False)


def resolve_duplicates(df: pd.DataFrame, rule: str = "max", *, source: str | Path | None = None) -> tuple[pd.DataFrame, int]:
    """Resolve repeated (user, item) pairs; returns the frame and the number of rows removed.

    Rules (DataConfig.duplicates):
    - "max": one row per pair whose rating is the highest rating given to the pair and whose timestamp is
      the latest one; the row keeps the position (index) and place of the pair's first occurrence.
    - "first": the first occurrence in file order is kept as it is; later ones are dropped.
    - "error": raise DataValidationError naming the lines (rows) of the first repeated pair.
    """
    if rule not in DUPLICATE_RULES:
        raise ValueError(f"duplicates rule must be one of {', '.join(DUPLICATE_RULES)}; got {rule!r}")
    if len(df) == 0:
        return df, 0
    key = pair_keys(df["user"].to_numpy(), df["item"].to_numpy())
    if not has_repeats(key):
        return df, 0
    later = pd.Series(key).duplicated(keep="first").to_numpy()
    n_dup = int(later.sum())
    unit = df.index.name or "row"
    if rule == "error":
        j = int(np.flatnonzero(later)[0])
        i = int(np.flatnonzero(key == key[j])[0])
        raise DataValidationError(
            f"duplicate (user, item) pair ({df['user'].iat[j]!r}, {df['item'].iat[j]!r}), first at {unit} "
            f"{df.index[i]} ({n_dup} repeated row(s) in all; set data.duplicates to 'max' or 'first')",
            source=source,
            position=int(df.index[j]),
            unit=unit,
        )
    out = df[~later]
    if rule == "max":
        involved = pd.Series(key).duplicated(keep=False).to_numpy()
        agg_cols = [c for c in ("rating", "timestamp") if c in df.columns]
        agg = df.loc[involved, agg_cols].groupby(key[involved]).max()
        out = out.copy()
        kept_involved = involved[~later]
        kept_keys = key[~later][kept_involved]
        for c in agg_cols:
            values = out[c].to_numpy().copy()
            values[kept_involved] = agg[c].reindex(kept_keys).to_numpy()
            out[c] = values
    logger.info("%s: resolved %d duplicate (user, item) row(s) with rule %r", source or "data", n_dup, rule)
    return out, n_dup


def has_repeats(key: np.ndarray) -> bool:
    """Whether any value occurs twice; O(n) when already sorted (MovieLens files are), else one sort."""
    if len(key) < 2:
        return False
    if (key[1:] > key[:-1]).all():
        return False
    s = np.sort(key)
    return bool((s[1:] == s[:-1]).any())


def pair_keys(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """One int64 key per (user, item) pair; equal pairs get equal keys."""
    if users.dtype.kind in "iu" and items.dtype.kind in "iu" and len(users):
        umin, umax, imax, imin = users.min(), users.max(), items.max(), items.min()
        if umin >= 0 and imin >= 0 and (int(umax) + 1) * (int(imax) + 1) < 2**62:
            return users.astype(np.int64) * (int(imax) + 1) + items.astype(np.int64)
    u = pd.factorize(users)[0].astype(np.int64)
    i, uniq = pd.factorize(items)
    return u * max(1, len(uniq)) + i.astype(np.int64)

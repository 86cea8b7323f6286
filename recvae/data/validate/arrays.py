"""Pure helpers over arrow columns: masks as numpy, integer literals, and the int64 range."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

INT64_MAX = 2**63 - 1
INT_RE = r"^[+-]?[0-9]+$"
FLOAT_RE = r"^[+-]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?)$"
NAN_RE = r"^[+-]?(?i:nan)$"
INF_RE = r"^[+-]?(?i:inf|infinity)$"


def mask(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean arrow array (nulls counted as False) as numpy."""
    if arr.null_count:
        arr = pc.fill_null(arr, False)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)


def no_nulls(arr: pa.ChunkedArray | pa.Array, fill: Any) -> pa.ChunkedArray | pa.Array:
    """`arr` with nulls replaced by `fill` (the same array when it has none)."""
    return pc.fill_null(arr, fill) if arr.null_count else arr


def values_at(arr: pa.ChunkedArray | pa.Array, where: np.ndarray, limit: int = 100_000) -> np.ndarray:
    """The values of the first `limit` rows where `where` is true, as Python objects (for reports)."""
    rows = np.flatnonzero(where)[:limit]
    return np.asarray(pc.take(arr, pa.array(rows)).to_pylist(), dtype=object)


def decoded(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary-encoded column as plain values; any other column as it is."""
    return pc.cast(arr, arr.type.value_type) if pa.types.is_dictionary(arr.type) else arr


def is_text(t: pa.DataType) -> bool:
    """Whether `t` is one of arrow's string types."""
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def is_number(t: pa.DataType) -> bool:
    """Whether `t` is an integer, floating-point or decimal type."""
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def trimmed(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """A text column as strings without surrounding whitespace."""
    return pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))


def beyond_int64(arr: pa.ChunkedArray) -> np.ndarray:
    """Rows whose (numeric) value is above the int64 maximum; below-zero values are flagged elsewhere."""
    t = arr.type
    if pa.types.is_integer(t):
        if not pa.types.is_unsigned_integer(t) or t.bit_width < 64:
            return np.zeros(len(arr), bool)
        return mask(pc.greater(arr, pa.scalar(INT64_MAX, t)))
    if pa.types.is_floating(t):
        return mask(pc.greater_equal(pc.cast(arr, pa.float64()), 2.0**63))  # every float below 2**63 fits
    return mask(pc.greater(arr, pa.scalar(Decimal(INT64_MAX), pa.decimal128(19, 0))))


def integer_text(arr: pa.ChunkedArray, invalid: np.ndarray) -> np.ndarray:
    """The exact integer text of each value of a numeric column ('' where invalid): for ids beyond int64."""
    if pa.types.is_integer(arr.type):
        return np.asarray(pc.fill_null(pc.cast(arr, pa.string()), "").to_numpy(zero_copy_only=False), dtype=object)
    values = arr.to_pylist()  # floats and decimals: Python's int() is exact; only columns with huge ids come here
    return np.asarray(["" if bad else str(int(v)) for v, bad in zip(values, invalid, strict=True)], dtype=object)


def integer_text_only(arr: pa.ChunkedArray) -> bool:
    """Whether every non-empty value of a text column is an integer literal."""
    s = trimmed(arr)
    other = pc.invert(pc.or_kleene(pc.equal(s, ""), pc.match_substring_regex(s, INT_RE)))
    return not mask(other).any()


def int_literals(s: pa.ChunkedArray, isint: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int64 values, negative, too wide for int64) of the integer literals `isint` of text column `s`; values are 0
    elsewhere and where too wide."""
    digits = pc.utf8_ltrim(s, "+-0")  # an integer literal: one optional sign, then digits
    n = np.asarray(pc.fill_null(pc.utf8_length(digits), 0).to_numpy(zero_copy_only=False), np.int64)
    top = mask(pc.greater(digits, str(INT64_MAX)))  # equal lengths compare as numbers
    wide = isint & ((n > 19) | ((n == 19) & top))
    negative = isint & mask(pc.starts_with(s, "-")) & (n > 0)
    num = pc.cast(pc.if_else(pa.array(isint & ~wide), s, "0"), pa.int64())
    return np.array(num.to_numpy(zero_copy_only=False), np.int64), negative, wide  # a copy: callers write to it

"""Delimited text files through pyarrow's CSV parser: typed and fast, or line by line when some lines are bad."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recvae.data.validate import DataValidationError, Positions, Validator

logger = logging.getLogger(__name__)

_BLOCK_SIZE = 1 << 24


def first_line(path: Path, encoding: str = "utf-8") -> str:
    """The first line of a (possibly compressed) text file, without a UTF-8 byte order mark."""
    with pa.input_stream(str(path), compression="detect") as f:
        head = f.read(1 << 16)
    utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    text = head.decode("utf-8-sig" if utf8 else encoding, errors="replace")
    return text.splitlines()[0] if text else ""


def header_names(path: Path, sep: str, encoding: str = "utf-8") -> list[str]:
    """The column names of the header line."""
    line = first_line(path, encoding)
    if not line.strip():
        raise DataValidationError("empty file or empty header line", source=path, position=1)
    return [c.strip() for c in next(csv.reader([line], delimiter=sep))]


def read_text_table(
    path: Path,
    *,
    delimiter: str,
    column_names: list[str] | None,
    include: list[str],
    types: dict[str, pa.DataType],
    quoting: bool,
    validator: Validator,
    encoding: str = "utf-8",
) -> tuple[pa.Table, Positions]:
    """Fast typed read; on a parse error, re-read as strings and flag each unparsable line.

    `column_names` None: the first line is a header. Blank lines are skipped; the positions are line numbers.
    """
    if path.stat().st_size == 0:
        raise DataValidationError("empty file", source=path)
    first = 1 if column_names is not None else 2  # line number of the first data row
    read_opts: dict[str, Any] = dict(column_names=column_names, block_size=_BLOCK_SIZE, encoding=encoding)
    parse_opts: dict[str, Any] = dict(delimiter=delimiter, ignore_empty_lines=False, newlines_in_values=False)
    if not quoting:
        parse_opts["quote_char"] = False
    convert: dict[str, Any] = dict(
        include_columns=include, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False
    )
    try:
        table = pacsv.read_csv(
            str(path),
            read_options=pacsv.ReadOptions(**read_opts),
            parse_options=pacsv.ParseOptions(**parse_opts),
            convert_options=pacsv.ConvertOptions(column_types=types, **convert),
        )
        return _drop_blank_lines(table, Positions(offset=first))
    except pa.ArrowInvalid as exc:
        logger.debug("%s: fast read failed (%s); re-reading line by line", path, exc)
    convert["column_types"] = {c: pa.string() for c in include}  # every value parses: the checks flag bad ones
    return _read_line_by_line(path, first, read_opts, parse_opts, convert, validator)


def _read_line_by_line(
    path: Path,
    first: int,
    read_opts: dict[str, Any],
    parse_opts: dict[str, Any],
    convert: dict[str, Any],
    validator: Validator,
) -> tuple[pa.Table, Positions]:
    """Read as strings, single-threaded so pyarrow numbers the lines; lines with the wrong field count are flagged."""
    bad: list[tuple[int | None, str, int, int]] = []

    def on_invalid(row: Any) -> str:
        bad.append((row.number, row.text, row.expected_columns, row.actual_columns))
        return "skip"

    try:
        table = pacsv.read_csv(
            str(path),
            read_options=pacsv.ReadOptions(use_threads=False, **read_opts),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, **parse_opts),
            convert_options=pacsv.ConvertOptions(**convert),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError, LookupError) as exc:
        wrong_encoding = "UTF8" in str(exc) or isinstance(exc, (UnicodeDecodeError, LookupError))
        hint = " (is the encoding right?)" if wrong_encoding else ""
        raise DataValidationError(f"cannot parse the file: {str(exc).splitlines()[0]}{hint}", source=path) from exc
    if any(b[0] is None for b in bad):  # pragma: no cover - pyarrow computes numbers when single-threaded
        raise DataValidationError(f"{len(bad)} unparsable line(s)", source=path)
    numbers = np.asarray([b[0] for b in bad], dtype=np.int64)
    for number, (_, text, expected, actual) in zip(numbers.tolist(), bad, strict=True):
        validator.flag([number], "wrong number of fields", values=[f"expected {expected}, got {actual}: {text}"])
    total = table.num_rows + len(bad)
    all_lines = np.arange(first, first + total, dtype=np.int64)
    lines = np.setdiff1d(all_lines, numbers, assume_unique=True) if len(bad) else all_lines
    return _drop_blank_lines(table, Positions(explicit=lines))


def _drop_blank_lines(table: pa.Table, pos: Positions) -> tuple[pa.Table, Positions]:
    """Drop rows of blank lines (every column null), which text files may have, e.g. at the end."""
    if table.num_rows == 0 or table.column(0).null_count == 0:
        return table, pos
    blank = np.ones(table.num_rows, dtype=bool)
    for col in table.columns:
        blank &= np.asarray(pc.is_null(col).to_numpy(zero_copy_only=False), bool)
    if not blank.any():
        return table, pos
    logger.debug("skipping %d blank line(s)", int(blank.sum()))
    return table.filter(pa.array(~blank)), Positions(explicit=pos.of(~blank))

"""What every interactions reader shares: its own Validator when given none, and the column contract."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from recvae.data.validate import DataValidationError, ValidationReport, Validator

logger = logging.getLogger(__name__)

DEFAULT_TIME_COL = "timestamp"  # optional when left at this default: csv/parquet/sql without it have no timestamps


def own_validator(validator: Validator | None, source: str | Path, unit: str) -> tuple[bool, Validator]:
    """A strict Validator owned by the reader when the caller passes none."""
    if validator is None:
        return True, Validator(source, unit=unit)
    return False, validator


def finish_read(own: bool, validator: Validator, df: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    """`df`, after the reader's own Validator (if it owns one) raised for any bad row."""
    if own:
        validator.finish(len(df))
        logger.info("%s: read %d interactions", source, len(df))
    else:
        logger.debug("%s: parsed %d rows", source, len(df))
    return df


def require_file(path: Path) -> None:
    """Raise DataValidationError unless `path` is a file."""
    if not path.is_file():
        raise DataValidationError("file not found", source=path)


def wanted_columns(
    user_col: str, item_col: str, rating_col: str | None, time_col: str | None, found: list[str]
) -> dict[str, str]:
    """Contract column -> source column; the default time column 'timestamp' is optional (used when present)."""
    wanted = {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": time_col}
    if time_col == DEFAULT_TIME_COL and time_col not in found:
        wanted["timestamp"] = None
    return {k: v for k, v in wanted.items() if v}


def check_columns(source: str | Path, found: list[str], wanted: Iterable[str], unit: str = "line") -> None:
    """Raise DataValidationError naming the wanted columns the source lacks (on the header line of text)."""
    absent = [c for c in wanted if c not in found]
    if absent:
        raise DataValidationError(
            f"missing column(s) {', '.join(repr(c) for c in absent)} (found: {', '.join(found) or 'none'})",
            source=source,
            position=1 if unit == "line" else None,
            unit=unit,
            column=absent[0],
        )


def split_manifest(protocol: str, source_format: str, report: ValidationReport | None) -> dict[str, Any]:
    """The manifest of a snapshot read from an already-split format, with the reader's validation report."""
    manifest: dict[str, Any] = {"protocol": protocol, "source_format": source_format}
    if report is not None:
        manifest["validation"] = report.to_dict()
    return manifest

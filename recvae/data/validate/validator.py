"""Collecting bad rows of one source: the error that names file, line/row and column, or a lenient report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recvae.data.validate.quarantine import write_quarantine

logger = logging.getLogger(__name__)

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
        """JSON-ready form for the snapshot manifest."""
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

    def mark(self) -> tuple[int, int, str]:
        """Where the record stands now, for `rewind` (a source read again from the start)."""
        return len(self._chunks), len(self._files), self.file

    def rewind(self, mark: tuple[int, int, str]) -> None:
        """Forget what was flagged since `mark`: the rows are about to be read, and flagged, again."""
        n_chunks, n_files, file = mark
        del self._chunks[n_chunks:], self._files[n_files:]
        self.file = file

    @property
    def n_flagged(self) -> int:
        """How many problems were recorded so far."""
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
            if not self.lenient:
                raise self._first_error(issues)
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

    def _first_error(self, issues: pd.DataFrame) -> DataValidationError:
        """The error strict mode raises: the earliest problem, and how many more there are."""
        first = issues.iloc[0]
        more = len(issues) - 1
        value = f" {first['value']!r}" if first["value"] != "" else ""
        tail = f" ({more} more problem(s); lenient mode drops and quarantines bad rows)" if more else ""
        return DataValidationError(
            f"{first['reason']}{value}{tail}",
            source=first["file"],
            position=int(first[self.unit]),
            unit=self.unit,
            column=first["column"] or None,
        )


def _short(value: Any) -> str:
    """A value as text for a report, cut to a readable length."""
    text = "" if value is None else str(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


class Positions:
    """Maps row numbers of a column to file positions: `offset + row`, or an explicit array."""

    def __init__(self, offset: int = 1, explicit: np.ndarray | None = None) -> None:
        self.offset = offset
        self.explicit = explicit

    def of(self, mask: np.ndarray) -> np.ndarray:
        """The file positions of the rows where `mask` is true."""
        rows = np.flatnonzero(mask)
        return self.explicit[rows] if self.explicit is not None else rows + self.offset

    def index(self, keep: np.ndarray | None, n: int, name: str) -> pd.Index:
        """The DataFrame index (file positions) of the kept rows."""
        if self.explicit is None and keep is None:
            return pd.RangeIndex(self.offset, self.offset + n, name=name)
        pos = self.explicit if self.explicit is not None else np.arange(self.offset, self.offset + n, dtype=np.int64)
        return pd.Index(pos if keep is None else pos[keep], name=name)

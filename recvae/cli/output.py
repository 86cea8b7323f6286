"""Plain-text tables for the commands' output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def grid(rows: Sequence[tuple[str, ...]]) -> str:
    """Rows of cells (the first one the header) as left-aligned columns with a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Records (dicts) as an aligned text table; floats with 4 decimals."""
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    return grid([tuple(keys), *[tuple(_cell(r.get(k)) for k in keys) for r in records]])


def _cell(value: Any) -> str:
    """A table cell: floats with 4 decimals, None empty."""
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))

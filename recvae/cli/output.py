"""Plain-text tables for the commands' output."""

from __future__ import annotations

from typing import Any


def grid(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(records: list[dict[str, Any]]) -> str:
    """Records (dicts) as an aligned text table; floats with 4 decimals."""
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    return grid([tuple(keys), *[tuple(fmt(r.get(k)) for k in keys) for r in records]])

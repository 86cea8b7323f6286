"""Writing the rows a lenient read dropped, so nothing is lost silently."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


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

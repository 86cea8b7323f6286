"""What a source's content is: its input files, and a fingerprint a snapshot manifest records."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from recvae.data.readers.movielens import resolve_movielens_file
from recvae.data.readers.pro_sg import PRO_SG_PARTS
from recvae.data.readers.source import Source
from recvae.data.readers.sql import table_query
from recvae.digest import sha256_file


def source_files(source: Source) -> list[Path]:
    """The input files a file-based source reads (empty for sql and synthetic)."""
    if source.format in ("sql", "synthetic") or source.path is None:
        return []
    p = Path(source.path)
    if source.format == "movielens":
        return [resolve_movielens_file(p)]
    if source.format == "pro_sg":
        names = [*(f"{n}.csv" for n in PRO_SG_PARTS), "unique_sid.txt", "unique_uid.txt"]
        return [p / n for n in names if (p / n).exists()]
    if source.format == "lightgcn":
        return [p / n for n in ("train.txt", "test.txt") if (p / n).exists()]
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file())
    return [p]


def fingerprint(source: Source, n_rows: int | None = None) -> dict[str, Any]:
    """sha256 of the input file(s); of the SQL query text plus row count; or of the generator parameters."""
    h = hashlib.sha256()
    if source.format == "sql":
        text = table_query(source.query or "")
        h.update(text.encode())
        h.update(f"\x1f{n_rows}".encode())
        return {"kind": "sql", "query": text, "rows": n_rows, "sha256": h.hexdigest()}
    if source.format == "synthetic":
        h.update(json.dumps(source.synthetic, sort_keys=True, default=str).encode())
        return {"kind": "synthetic", "params": source.synthetic, "sha256": h.hexdigest()}
    files = {}
    paths = source_files(source)
    for f in paths:
        digest = sha256_file(f)
        # one file: its name; a folder's files: their paths inside it
        files[f.name if len(paths) == 1 else str(f.relative_to(Path(source.path or "")))] = digest
        h.update(f.name.encode() + b"\x1f" + digest.encode())
    return {"kind": "files", "files": files, "sha256": h.hexdigest()}

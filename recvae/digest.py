"""File digests: one sha256 for snapshots, saved models, checkpoints and downloads."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file (sha256 unless `algorithm` names another hashlib algorithm), read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

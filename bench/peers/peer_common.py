"""What every peer script shares: the exchange format with run.py (split in, result.json + scores out).

Imports only the standard library, numpy and scipy, so it runs unchanged inside each peer's own venv.

Input  (--data DIR): train.npz, validation_tr.npz, validation_te.npz, test_tr.npz, test_te.npz (scipy CSR,
        float32 ones, users x items; *_tr / *_te rows are the same users in the same order).
Output (--out DIR):  result.json (times per epoch, peak RSS, notes) and either scores.npy (float32,
        test users x items, unnormalised) or topk.npy (int32, test users x K, fold-in items already excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

PARTS = ("train", "validation_tr", "validation_te", "test_tr", "test_te")


def parser(description: str) -> argparse.ArgumentParser:
    """The command-line options every peer takes (run.py passes the same values to every system)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", type=Path, required=True, help="folder with the split as PART.npz")
    p.add_argument("--out", type=Path, required=True, help="folder for result.json and scores")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=600)
    p.add_argument("--latent", type=int, default=200)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--anneal-cap", type=float, default=0.2)
    p.add_argument("--total-anneal-steps", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=98765)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", choices=("scores", "topk", "none"), default="scores")
    p.add_argument("--topk", type=int, default=100)
    return p


def load_split(folder: Path) -> dict[str, sp.csr_matrix]:
    """The split's CSR matrices by part name."""
    out = {}
    for part in PARTS:
        f = folder / f"{part}.npz"
        if not f.exists():
            raise FileNotFoundError(f"{f}: missing split part {part}")
        out[part] = sp.load_npz(f).tocsr().astype(np.float32)
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class EpochTimer:
    """Collects wall seconds of each training epoch."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start: float | None = None

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self) -> None:
        if self._start is not None:
            self.times.append(time.perf_counter() - self._start)
            self._start = None


def topk_excluding(scores: np.ndarray, foldin: sp.csr_matrix, k: int) -> np.ndarray:
    """Indices of the k best items per row, best first, with the row's fold-in items excluded."""
    s = np.array(scores, dtype=np.float32, copy=True)
    rows = np.repeat(np.arange(foldin.shape[0]), np.diff(foldin.indptr))
    s[rows, foldin.indices] = -np.inf
    k = min(k, s.shape[1])
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int32)


class ScoreWriter:
    """Receives test-user score blocks in row order and writes scores.npy or topk.npy."""

    def __init__(self, out: Path, mode: str, n_rows: int, n_items: int, k: int) -> None:
        self.out, self.mode, self.k = out, mode, k
        self.pos = 0
        self.array: Any = None  # np.memmap when mode writes one
        if mode == "scores":
            self.array = np.lib.format.open_memmap(out / "scores.npy", mode="w+", dtype=np.float32,
                                                   shape=(n_rows, n_items))
        elif mode == "topk":
            self.array = np.lib.format.open_memmap(
                out / "topk.npy", mode="w+", dtype=np.int32, shape=(n_rows, min(k, n_items))
            )

    def add(self, block: np.ndarray, foldin_block: sp.csr_matrix) -> None:
        n = block.shape[0]
        if self.mode == "scores":
            self.array[self.pos : self.pos + n] = block
        elif self.mode == "topk":
            self.array[self.pos : self.pos + n] = topk_excluding(block, foldin_block, self.k)
        self.pos += n

    def close(self) -> str | None:
        if self.array is not None:
            self.array.flush()
            del self.array
            return "scores.npy" if self.mode == "scores" else "topk.npy"
        return None


def write_result(out: Path, result: dict[str, Any]) -> None:
    """Write result.json with the process's peak RSS and Python version added."""
    result = {
        **result,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "python": platform.python_version(),
        "argv": sys.argv[1:],
        "pid": os.getpid(),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))

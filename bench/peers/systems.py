"""The systems of the peer comparison, how each one is run (a subprocess writing result.json and its test users'
scores, see peer_common.py), and how their outputs are scored: all by the same recvae.evaluation.metrics."""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import harness
import numpy as np
import scipy.sparse as sp
import torch
from venvs import tail

from recvae.data.snapshot import Snapshot
from recvae.evaluation.metrics import DEFAULT_METRICS, evaluate

logger = logging.getLogger("bench.peers")

PEERS = {
    # name -> (script, venv folder, requirements file)
    "recbole": ("peer_recbole.py", ".venv-recbole", "requirements-recbole.txt"),
    "cornac": ("peer_cornac.py", ".venv-cornac", "requirements-cornac.txt"),
}
# our systems -> (train.amp, train.compile), passed as peer_ours.py --amp / --compile
OURS = {"ours": ("none", False), "ours-bf16": ("bf16", False), "ours-bf16-compile": ("bf16", True)}
SYSTEMS = ("ours", "ours-bf16", "ours-bf16-compile", "recbole", "cornac")
LABELS = {"ours": "ours (recvae MultVAE)", "ours-bf16": "ours (recvae MultVAE, bf16 autocast)",
          "ours-bf16-compile": "ours (recvae MultVAE, bf16 autocast, torch.compile)",
          "recbole": "RecBole MultiVAE", "cornac": "Cornac VAECF"}


def child_env(threads: int) -> dict[str, str]:
    """Environment of every system's process: the same thread counts for all."""
    env = dict(os.environ)
    env.update({
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": "1",  # STACK.md: implicit is slower with threaded OpenBLAS
        "TQDM_DISABLE": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    env.pop("PYTHONPATH", None)
    return env


def run_system(cmd: list[str], out: Path, env: dict[str, str], timeout: float, cwd: Path) -> dict[str, Any]:
    """Run one system's script; its result.json, or the error and the end of its log."""
    out.mkdir(parents=True, exist_ok=True)
    logger.info("running: %s", shlex.join(cmd))
    rc: int | str
    with open(out / "log.txt", "w") as log, harness.Timer() as t:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout,
                                cwd=cwd).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    log_text = (out / "log.txt").read_text(errors="replace")
    if rc != 0 or not (out / "result.json").exists():
        return {"ok": False, "error": f"exit {rc} after {t.seconds:.0f}s", "log_tail": tail(log_text, 25),
                "wall_s": t.seconds}
    result = json.loads((out / "result.json").read_text())
    return {"ok": True, "wall_s": t.seconds, **result}


class _RowScores:
    """score_fn for recvae.evaluation.metrics.evaluate over a system's saved test-user scores, consumed in row order."""

    def __init__(self, folder: Path, output: str, n_items: int) -> None:
        self.array = np.load(folder / output, mmap_mode="r")
        self.kind = "topk" if output.startswith("topk") else "scores"
        self.n_items, self.pos = n_items, 0

    def __call__(self, X: sp.csr_matrix) -> torch.Tensor:
        block = np.array(self.array[self.pos : self.pos + X.shape[0]])  # a writable copy: evaluate masks in place
        self.pos += X.shape[0]
        if self.kind == "scores":
            return torch.from_numpy(block.astype(np.float32, copy=False))
        # ranks to scores: the k-th best item gets K - k, every other item -inf
        s = torch.full((X.shape[0], self.n_items), -torch.inf)
        k = block.shape[1]
        ranks = torch.arange(k, 0, -1, dtype=torch.float32).expand(X.shape[0], k)
        s.scatter_(1, torch.from_numpy(block.astype(np.int64)), ranks)
        return s


def score_quality(result: dict[str, Any], folder: Path, snapshot: Snapshot) -> dict[str, Any] | None:
    """NDCG@100 / Recall@20 / Recall@50 (recvae.evaluation.metrics) of a system's test-user scores."""
    if not result.get("ok") or not result.get("output"):
        return None
    foldin, heldout = snapshot.heldout("test")
    fn = _RowScores(folder, result["output"], snapshot.n_items)
    if fn.array.shape[0] != foldin.shape[0]:
        raise ValueError(f"{folder / result['output']}: {fn.array.shape[0]} rows for {foldin.shape[0]} test users")
    ev = evaluate(fn, foldin, heldout, DEFAULT_METRICS)
    return {"means": ev.means, "stderr": ev.stderr, "n_users": ev.n_users}


def epoch_summary(times: list[float]) -> dict[str, Any]:
    """First epoch apart; median of the others (the steady state) when there are any."""
    if not times:
        return {"epochs": 0}
    steady = times[1:] if len(times) > 1 else times
    return {"epochs": len(times), "first_s": times[0], "median_s": float(np.median(steady)),
            "min_s": float(np.min(steady)), "total_s": float(np.sum(times))}


def one_line(r: dict[str, Any]) -> str:
    """A system's result in one log line."""
    if not r.get("ok"):
        return str(r.get("error", "failed"))
    q = (r.get("quality") or {}).get("means", {})
    text = f"median {r['epochs'].get('median_s', float('nan')):.2f}s/epoch, peak RSS {r.get('peak_rss_mb')} MB"
    return text + (f", NDCG@100 {q['ndcg@100']:.4f}" if "ndcg@100" in q else "")

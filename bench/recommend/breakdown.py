"""Where the scoring time goes: the cost of each step of scoring one chunk (model forward, copies, NaN check,
top-k), per user."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import numpy as np
import scipy.sparse as sp

from .child import run_worker
from .data import vae_recommender

logger = logging.getLogger("bench.recommend")


def chunk_steps(X: sp.csr_matrix, hidden: int, latent: int, top_n: int, reps: int) -> dict[str, float]:
    """Milliseconds per user of each step iter_topn and MultVAERecommender.scores take on the chunk X."""
    import torch

    from recvae.models.sparse import CSRBatch

    module = vae_recommender(X.shape[1], hidden, latent).module.eval()

    def timed(f: Callable[[], Any]) -> float:
        f()  # warm-up
        with harness.Timer() as t:
            for _ in range(reps):
                f()
        return t.seconds / reps / X.shape[0] * 1000

    with torch.no_grad():
        z = module.encode(CSRBatch.from_scipy(X))[0]
        logits = module.decode(z)
        return {
            "encode (sparse first layer)": timed(lambda: module.encode(CSRBatch.from_scipy(X))),
            "decode (latent -> hidden -> items)": timed(lambda: module.decode(z)),
            "torch.cat of the one batch (scores)": timed(lambda: torch.cat([logits])),
            "copy (.to(copy=True), iter_topn)": timed(lambda: logits.to(dtype=torch.float32, copy=True)),
            "torch.isnan(s).any()": timed(lambda: torch.isnan(logits).any()),
            f"topk {top_n}": timed(lambda: torch.topk(logits, top_n, dim=1)),
        }


def random_chunk(rng: np.random.Generator, n_users: int, n_items: int) -> sp.csr_matrix:
    """`n_users` random histories of 20-49 distinct items each."""
    lengths = rng.integers(20, 50, n_users)
    indptr = np.r_[0, np.cumsum(lengths)]
    indices = np.concatenate([np.sort(rng.choice(n_items, k, replace=False)) for k in lengths]).astype(np.int32)
    return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n_users, n_items))


def worker_breakdown(cfg: dict[str, Any]) -> dict[str, Any]:
    """The steps of one chunk, for each item count of cfg['items']."""
    rng = np.random.default_rng(0)
    rows = []
    c = cfg["chunk_size"]
    for n_items in cfg["items"]:
        steps = chunk_steps(random_chunk(rng, c, n_items), cfg["hidden"], cfg["latent"], cfg["top_n"], cfg["reps"])
        rows.append({"n_items": n_items, "chunk_size": c, "ms_per_user": {k: round(v, 4) for k, v in steps.items()},
                     "total_ms_per_user": round(sum(steps.values()), 4)})
        logger.info("  breakdown %s items: %.3f ms/user", f"{n_items:,}", sum(steps.values()))
    return {"rows": rows, "hidden": cfg["hidden"], "latent": cfg["latent"], "loadavg_end": harness.load_average()}


def part_breakdown(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The breakdown part in one child process."""
    logger.info("breakdown: per-step cost of one chunk")
    return run_worker("breakdown", args.bd_config, work)


def md_breakdown(r: dict[str, Any]) -> list[str]:
    """The breakdown part's section: one column per item count, one row per step."""
    rows = r["rows"]
    table = [[s, *(f"{x['ms_per_user'][s]:.3f}" for x in rows)] for s in rows[0]["ms_per_user"]]
    table.append(["total", *(f"**{x['total_ms_per_user']:.3f}**" for x in rows)])
    return [
        "### Where the scoring time goes (one chunk, ms per user)",
        "",
        f"Command: `{r['command']}` ({r['date']}); load average {r['loadavg_start']}. Mult-VAE "
        f"{r.get('hidden', 600)}-{r.get('latent', 200)}, chunk of {rows[0]['chunk_size']} users, each step timed "
        "alone.",
        "",
        *harness.markdown_table(["step", *(f"{x['n_items']:,} items" for x in rows)], table, "l" + "r" * len(rows)),
        "",
        "Every step but the two matrix products is a pass over the chunk's scores (memory bound).",
        "",
    ]

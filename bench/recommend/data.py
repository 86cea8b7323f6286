"""The data and model of the top-N benchmarks: synthetic histories as CSR (never a dense users x items array) and a
Mult-VAE with its initial weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import harness
import numpy as np
import scipy.sparse as sp


def csr_from_pairs(user: np.ndarray, item: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary users x items CSR from 0-based (user, item) pairs sorted by user (as the generator emits them)."""
    counts = np.bincount(user, minlength=n_users)
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    return sp.csr_matrix((np.ones(len(item), np.float32), item.astype(np.int32), indptr), shape=(n_users, n_items))


def history_stats(X: sp.csr_matrix) -> dict[str, Any]:
    """Users, items, interactions and the spread of history lengths."""
    lengths = np.diff(X.indptr)
    return {"users": int(X.shape[0]), "items": int(X.shape[1]), "interactions": int(X.nnz),
            "per_user_mean": round(float(lengths.mean()), 1), "per_user_median": float(np.median(lengths)),
            "per_user_p10": float(np.percentile(lengths, 10)), "per_user_p90": float(np.percentile(lengths, 90)),
            "per_user_max": int(lengths.max())}


def mem_data_dir(work: Path, n_users: int, n_items: int, mean_per_user: float, seed: int) -> Path:
    """Where the memory part's histories of these parameters are cached."""
    return work / f"mem-{n_users}x{n_items}-m{mean_per_user:g}-s{seed}"


def build_mem_data(work: Path, n_users: int, n_items: int, mean_per_user: float, seed: int) -> dict[str, Any]:
    """Generate the synthetic histories once and store them as raw CSR arrays (indptr int64, indices int32), so a
    scoring process can read exactly the first U users without touching the rest."""
    from recvae.data import synthetic

    d = mem_data_dir(work, n_users, n_items, mean_per_user, seed)
    meta_file = d / "meta.json"
    if meta_file.exists():
        return json.loads(meta_file.read_text())
    d.mkdir(parents=True, exist_ok=True)
    with harness.Timer() as t:
        df = synthetic.generate("ml-20m", n_users=n_users, n_items=n_items, mean_per_user=mean_per_user,
                                min_per_user=20, seed=seed)
        user, item = df["user"].to_numpy() - 1, df["item"].to_numpy() - 1
        del df
        X = csr_from_pairs(user, item, n_users, n_items)
        del user, item
        X.indptr.astype(np.int64).tofile(d / "indptr.i64")
        X.indices.astype(np.int32).tofile(d / "indices.i32")
    meta = {"preset": "ml-20m", "overrides": {"n_users": n_users, "n_items": n_items,
                                               "mean_per_user": mean_per_user, "min_per_user": 20, "seed": seed},
            "history": history_stats(X), "generate_s": round(t.seconds, 1)}
    meta_file.write_text(json.dumps(meta, indent=2))
    return meta


def load_mem_prefix(d: Path, n_users: int, n_items: int) -> sp.csr_matrix:
    """The first `n_users` rows of the stored CSR, read straight from the files (nothing else is loaded)."""
    indptr = np.fromfile(d / "indptr.i64", dtype=np.int64, count=n_users + 1)
    indices = np.fromfile(d / "indices.i32", dtype=np.int32, count=int(indptr[-1]))
    return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n_users, n_items))


def shaped_csr(work: Path, seed: int = 0, preset: str = "ml-20m", **overrides: Any) -> tuple[sp.csr_matrix, dict]:
    """Synthetic interactions of `preset` (default the ML-20M shape), kept as in the paper's preprocessing
    (rating > 3.5, users with >= 5), as a users x items CSR; cached under `work`."""
    from recvae.data import synthetic

    tag = preset + "".join(f"-{k}{v}" for k, v in sorted(overrides.items()))
    stem = f"ml20m-s{seed}" if tag == "ml-20m" else f"{tag}-s{seed}"
    cache, meta_file = work / f"{stem}.npz", work / f"{stem}.json"
    if cache.exists() and meta_file.exists():
        return sp.load_npz(cache).tocsr(), json.loads(meta_file.read_text())
    work.mkdir(parents=True, exist_ok=True)
    with harness.Timer() as t:
        df = synthetic.generate(preset, seed=seed, **overrides)
        n_ratings = len(df)
        df = df[df["rating"] > 3.5]
        df = df[df.groupby("user")["item"].transform("size") >= 5]
        users, user = np.unique(df["user"].to_numpy(), return_inverse=True)
        items, item = np.unique(df["item"].to_numpy(), return_inverse=True)
        X = csr_from_pairs(user, item, len(users), len(items))
        X.sort_indices()
    meta = {"preset": preset, "overrides": overrides, "seed": seed, "ratings": n_ratings,
            "kept": "rating > 3.5, users with >= 5", "history": history_stats(X), "generate_s": round(t.seconds, 1)}
    sp.save_npz(cache, X, compressed=False)
    meta_file.write_text(json.dumps(meta, indent=2))
    return X, meta


def vae_recommender(n_items: int, hidden: int, latent: int, seed: int = 0) -> Any:
    """A Mult-VAE recommender with its initial (random, Xavier) weights: scoring cost does not depend on them."""
    import torch

    from recvae.config import ModelConfig
    from recvae.models.neural import MultVAERecommender
    from recvae.models.vae import MultVAE

    torch.manual_seed(seed)
    module = MultVAE(n_items, (hidden,), latent)
    return MultVAERecommender(n_items, ModelConfig(hidden_dims=(hidden,), latent_dim=latent), module=module)


def n_params(rec: Any) -> int:
    """The recommender's parameter count."""
    return int(sum(p.numel() for p in rec.module.parameters()))

"""How close our training epoch comes to the machine's matmul peak: the measured GEMM rate, and the FLOPs of one
Mult-VAE epoch."""

from __future__ import annotations

from typing import Any

import harness
import torch

PEAK_DTYPE = {"none": "float32", "bf16": "bfloat16"}  # train.amp -> the dtype of the matmul peak it is compared with


def matmul_peak(threads: int, n: int = 4096, repeat: int = 5, dtype: str = "float32") -> dict[str, Any]:
    """Measured GEMM rate of torch.matmul (n x n, `dtype`) on `threads` threads: the machine's practical peak."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n, dtype=getattr(torch, dtype)), torch.randn(n, n, dtype=getattr(torch, dtype))
        torch.matmul(a, b)  # warm-up
        best, _ = harness.best_of(lambda: torch.matmul(a, b), repeat)
    finally:
        torch.set_num_threads(old)
    return {"n": n, "dtype": dtype, "threads": threads, "repeat": repeat, "best_s": best,
            "gflops": 2 * n**3 / best / 1e9}


def epoch_flops(n_users: int, n_items: int, nnz: int, hidden: int, latent: int) -> dict[str, float]:
    """FLOPs of one Mult-VAE training epoch (forward + backward), dense-equivalent and sparse-input-aware.

    Layers I-H, H-2L (mean and log-variance), L-H, H-I. Backward costs a weight gradient for every layer and an
    input gradient for every layer but the first. The sparse count replaces the first layer's dense products
    (forward and weight gradient) by their non-zero work, 2 * nnz * H each.
    """
    fwd = 2 * n_users * (n_items * hidden + hidden * 2 * latent + latent * hidden + hidden * n_items)
    first = 2 * n_users * n_items * hidden
    dense = 3 * fwd - first
    sparse = dense - 2 * first + 2 * (2 * nnz * hidden)
    return {"dense_equivalent": float(dense), "sparse_input": float(sparse)}


def epoch_rate(shape: tuple[int, int, int], epoch_s: float, peak: dict[str, Any] | None) -> dict[str, Any]:
    """GFLOP/s of an epoch of the paper's architecture on data of `shape` (users, items, nnz) that took `epoch_s`,
    and its share of `peak` (a matmul_peak result) when measured."""
    fl: dict[str, Any] = {**epoch_flops(*shape, 600, 200), "epoch_s": epoch_s}
    fl["dense_gflops"] = fl["dense_equivalent"] / epoch_s / 1e9
    fl["sparse_gflops"] = fl["sparse_input"] / epoch_s / 1e9
    if peak:
        fl.update({"peak_dtype": peak["dtype"], "peak_gflops": peak["gflops"],
                   "dense_ratio": fl["dense_gflops"] / peak["gflops"],
                   "sparse_ratio": fl["sparse_gflops"] / peak["gflops"]})
    return fl

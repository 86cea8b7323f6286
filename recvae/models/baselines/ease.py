"""EASE (Steck, WWW 2019): the embarrassingly shallow autoencoder, a closed-form item x item weight matrix."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recvae.models.baselines.common import Baseline, as_csr, require_fitted

logger = logging.getLogger(__name__)

# Share of the available memory EASE may plan to use; the rest is headroom for everything else.
MEMORY_HEADROOM = 0.8


def available_memory_bytes() -> int:
    """Memory available to a new allocation on this machine (Linux MemAvailable, else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


class EASE(Baseline):
    """Embarrassingly Shallow Autoencoder (Steck 2019): a closed-form item x item weight matrix.

    B = -P / diag(P) with P = (X^T X + lam I)^-1 and diag(B) = 0; a user's scores are x_u B.

    Parameters
    ----------
    lam : float, optional
        L2 regularisation lambda added to the Gram matrix's diagonal (> 0). Default 500.
    max_memory_bytes : int, optional
        Refuse to fit when the dense item x item matrices need more than this. Default: 80 % of the
        memory available when `fit` is called. Not a hyperparameter (not stored).

    Attributes
    ----------
    B : ndarray of float32, shape (n_items, n_items)
        The learned weights; zero diagonal.
    """

    kind = "ease"

    def __init__(self, lam: float = 500.0, max_memory_bytes: int | None = None) -> None:
        if not lam > 0:
            raise ValueError(f"EASE lam must be > 0; got {lam}")
        self.lam = float(lam)
        self.max_memory_bytes = max_memory_bytes
        self.B: np.ndarray | None = None
        self.n_items = 0

    @staticmethod
    def memory_needed(n_items: int, dtype: Any = np.float64) -> int:
        """Bytes EASE holds for `n_items` items: a float64 work matrix plus the float32 weights, or one float32
        matrix that becomes the weights in place."""
        return n_items * n_items * (8 + 4 if np.dtype(dtype) == np.float64 else 4)

    def work_dtype(self, n_items: int) -> type:
        """float64 when its work matrix fits, else float32 (the Gram matrix's counts are exact in it below 2^24, and
        lam > 0 bounds its condition number), else MemoryError naming both sizes."""
        limit = self.max_memory_bytes
        if limit is None:
            limit = int(available_memory_bytes() * MEMORY_HEADROOM)
        if self.memory_needed(n_items) <= limit:
            return np.float64
        needed = self.memory_needed(n_items, np.float32)
        if needed > limit:
            raise MemoryError(
                f"EASE needs dense {n_items:,} x {n_items:,} item matrices ({needed / 2**30:.1f} GiB in float32) but "
                f"only {limit / 2**30:.1f} GiB may be used; keep fewer items (data.min_item_count) or use ALS"
            )
        logger.info("EASE: a float32 work matrix for %d items (%.1f GiB; float64 would need %.1f GiB of %.1f)",
                    n_items, needed / 2**30, self.memory_needed(n_items) / 2**30, limit / 2**30)
        return np.float32

    def fit(self, train: sp.csr_matrix, **kwargs: Any) -> EASE:
        """Solve the closed form on `train`.

        Parameters
        ----------
        train : csr_matrix
            Users x items training interactions.

        Raises
        ------
        MemoryError
            When even a float32 item x item matrix would not fit in memory.
        """
        train = as_csr(train)
        n = int(train.shape[1])
        dtype = self.work_dtype(n)
        start = time.perf_counter()
        G = gram_matrix(train, dtype=dtype)
        G[np.diag_indices(n)] += self.lam
        P = spd_inverse(G)  # overwrites G
        P /= -np.diag(P)[None, :]
        np.fill_diagonal(P, 0.0)
        self.B = P if P.dtype == np.float32 else P.astype(np.float32)
        self.n_items = n
        logger.info("EASE lam=%g fitted on %d users x %d items in %.1fs (%s)", self.lam, train.shape[0], n,
                    time.perf_counter() - start, np.dtype(dtype).name)
        return self

    def scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """X @ B, shape (X.shape[0], n_items), float32."""
        B = require_fitted(self, "B")
        X = as_csr(X, self.n_items)
        return torch.from_numpy(np.ascontiguousarray(X @ B, dtype=np.float32))

    def ranking_scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """`scores(X)`: always a new tensor."""
        return self.scores(X)

    def params(self) -> dict[str, Any]:
        """{'lam': lambda}."""
        return {"lam": self.lam}

    def _save_state(self, path: Path) -> None:
        np.save(path / "B.npy", require_fitted(self, "B"), allow_pickle=False)

    @classmethod
    def _load_state(cls, path: Path, meta: dict[str, Any]) -> EASE:
        model = cls(**meta["params"])
        model.B = np.load(path / "B.npy", allow_pickle=False)
        model.n_items = int(model.B.shape[0])
        return model


def gram_matrix(X: sp.csr_matrix, block: int = 2048, dtype: Any = np.float64) -> np.ndarray:
    """Dense X^T X (float64 unless `dtype`), built a column block at a time so the sparse product stays small."""
    n = X.shape[1]
    Xt = X.T.tocsr().astype(dtype)
    Xc = X.tocsc().astype(dtype)
    G = np.empty((n, n), dtype=dtype)
    for j0 in range(0, n, block):
        j1 = min(n, j0 + block)
        G[:, j0:j1] = (Xt @ Xc[:, j0:j1]).toarray()
    return G


def spd_inverse(G: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite float64 or float32 matrix, in place (Cholesky, then the inverse
    from the factor).

    Through torch's LAPACK (MKL): scipy's bundled OpenBLAS crashes (SIGSEGV) in spotrf at 40,981 items (Gowalla)."""
    # LAPACK works in column-major order: a row-major symmetric matrix, seen transposed, is already in it (and a
    # column-major one's transpose is row-major), so no n x n copy is made
    rows = G if G.flags.c_contiguous else G.T if G.flags.f_contiguous else np.ascontiguousarray(G)
    A = torch.from_numpy(rows).mT
    info = torch.empty((), dtype=torch.int32)
    torch.linalg.cholesky_ex(A, upper=False, out=(A, info))
    if int(info) != 0:
        raise np.linalg.LinAlgError(f"Cholesky factorisation failed (LAPACK info={int(info)}): matrix not positive "
                                    "definite")
    torch.cholesky_inverse(A, upper=False, out=A)  # the whole symmetric inverse, over the factor
    return A.numpy()

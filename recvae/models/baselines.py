"""Baselines behind the same scoring contract as the Mult-VAE: popularity, EASE (Steck 2019) and ALS (implicit)."""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg.lapack as lapack
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from recvae.config import ConfigError
from recvae.data.idmap import IdMap
from recvae.data.snapshot import Snapshot
from recvae.evaluation.metrics import evaluate
from recvae.models.base import Recommender

logger = logging.getLogger(__name__)

# Share of the available memory EASE may plan to use; the rest is headroom for everything else.
MEMORY_HEADROOM = 0.8


def _as_csr(X: sp.spmatrix, n_items: int | None = None) -> sp.csr_matrix:
    """`X` as float32 CSR (copied only when needed), checking the item count when one is expected."""
    X = sp.csr_matrix(X, dtype=np.float32) if not (sp.issparse(X) and X.format == "csr") else X
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    if n_items is not None and X.shape[1] != n_items:
        raise ValueError(f"input has {X.shape[1]} item columns; the model was trained on {n_items} items")
    return X


def _require_fitted(model: Recommender, attr: str) -> Any:
    value = getattr(model, attr, None)
    if value is None:
        raise RuntimeError(f"{type(model).__name__} is not fitted: call fit(train) or load a saved model first")
    return value


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


class Popularity(Recommender):
    """Most-popular baseline: every user gets the items' training interaction counts as scores.

    Attributes
    ----------
    counts : ndarray of float32, shape (n_items,)
        Number of training users who interacted with each item.
    """

    kind = "popularity"

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None
        self.n_items = 0

    def fit(self, train: sp.csr_matrix, **kwargs: Any) -> Popularity:
        """Count each item's interactions in `train`.

        Parameters
        ----------
        train : csr_matrix
            Users x items training interactions; non-zero entries count once.
        """
        train = _as_csr(train)
        nonzero = train.data != 0
        self.counts = np.bincount(train.indices[nonzero], minlength=train.shape[1]).astype(np.float32)
        self.n_items = int(train.shape[1])
        return self

    def scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """Item counts repeated for each row of `X`, shape (X.shape[0], n_items), float32."""
        counts = _require_fitted(self, "counts")
        X = _as_csr(X, self.n_items)
        return torch.from_numpy(counts).unsqueeze(0).repeat(X.shape[0], 1)

    def ranking_scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """`scores(X)`: always a new tensor."""
        return self.scores(X)

    def params(self) -> dict[str, Any]:
        """No hyperparameters."""
        return {}

    def _save_state(self, path: Path) -> None:
        np.save(path / "counts.npy", _require_fitted(self, "counts"), allow_pickle=False)

    @classmethod
    def _load_state(cls, path: Path, meta: dict[str, Any]) -> Popularity:
        model = cls()
        model.counts = np.load(path / "counts.npy", allow_pickle=False)
        model.n_items = int(model.counts.shape[0])
        return model


class EASE(Recommender):
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
    def memory_needed(n_items: int) -> int:
        """Bytes of the dense float64 work matrix plus the float32 weights for `n_items` items."""
        return n_items * n_items * (8 + 4)

    def check_memory(self, n_items: int) -> None:
        """Raise MemoryError when the dense item x item matrices for `n_items` would not fit."""
        needed = self.memory_needed(n_items)
        limit = self.max_memory_bytes
        if limit is None:
            limit = int(available_memory_bytes() * MEMORY_HEADROOM)
        if needed > limit:
            raise MemoryError(
                f"EASE needs dense {n_items:,} x {n_items:,} item matrices ({needed / 2**30:.1f} GiB) but only "
                f"{limit / 2**30:.1f} GiB may be used; keep fewer items (data.min_item_count) or use ALS"
            )

    def fit(self, train: sp.csr_matrix, **kwargs: Any) -> EASE:
        """Solve the closed form on `train`.

        Parameters
        ----------
        train : csr_matrix
            Users x items training interactions.

        Raises
        ------
        MemoryError
            When the dense item x item matrices would not fit in memory.
        """
        train = _as_csr(train)
        n = int(train.shape[1])
        self.check_memory(n)
        start = time.perf_counter()
        G = gram_matrix(train)
        G[np.diag_indices(n)] += self.lam
        P = spd_inverse(G)  # overwrites G
        P /= -np.diag(P)[None, :]
        np.fill_diagonal(P, 0.0)
        self.B = P.astype(np.float32)
        self.n_items = n
        logger.info("EASE lam=%g fitted on %d users x %d items in %.1fs", self.lam, train.shape[0], n,
                    time.perf_counter() - start)
        return self

    def scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """X @ B, shape (X.shape[0], n_items), float32."""
        B = _require_fitted(self, "B")
        X = _as_csr(X, self.n_items)
        return torch.from_numpy(np.ascontiguousarray(X @ B, dtype=np.float32))

    def ranking_scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """`scores(X)`: always a new tensor."""
        return self.scores(X)

    def params(self) -> dict[str, Any]:
        """{'lam': lambda}."""
        return {"lam": self.lam}

    def _save_state(self, path: Path) -> None:
        np.save(path / "B.npy", _require_fitted(self, "B"), allow_pickle=False)

    @classmethod
    def _load_state(cls, path: Path, meta: dict[str, Any]) -> EASE:
        model = cls(**meta["params"])
        model.B = np.load(path / "B.npy", allow_pickle=False)
        model.n_items = int(model.B.shape[0])
        return model


def gram_matrix(X: sp.csr_matrix, block: int = 2048) -> np.ndarray:
    """Dense float64 X^T X, built a column block at a time so the sparse product stays small."""
    n = X.shape[1]
    Xt = X.T.tocsr().astype(np.float64)
    Xc = X.tocsc().astype(np.float64)
    G = np.empty((n, n), dtype=np.float64)
    for j0 in range(0, n, block):
        j1 = min(n, j0 + block)
        G[:, j0:j1] = (Xt @ Xc[:, j0:j1]).toarray()
    return G


def spd_inverse(G: np.ndarray, block: int = 2048) -> np.ndarray:
    """Inverse of a symmetric positive definite float64 matrix, in place (Cholesky: LAPACK potrf/potri)."""
    G = np.asfortranarray(G)
    c, info = lapack.dpotrf(G, lower=False, overwrite_a=True, clean=False)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky factorisation failed (LAPACK info={info}): matrix not positive definite")
    P, info = lapack.dpotri(c, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"inverse from the Cholesky factor failed (LAPACK info={info})")
    # potri fills the upper triangle only; mirror it block by block to avoid an n x n temporary.
    n = P.shape[0]
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        P[i0:i1, :i0] = P[:i0, i0:i1].T
        sub = P[i0:i1, i0:i1]
        P[i0:i1, i0:i1] = np.triu(sub) + np.triu(sub, 1).T
    return P


class ALS(Recommender):
    """Implicit-feedback matrix factorisation (Hu, Koren, Volinsky 2008) fitted with `implicit`'s CPU ALS.

    Users in the scoring input are folded in: their factors are solved from their rows against the
    fixed item factors (`recalculate_user`), then scores = U V^T.

    Parameters
    ----------
    factors : int, optional
        Number of latent factors.
    regularization : float, optional
        L2 regularisation of the factors.
    alpha : float, optional
        Confidence of an observed interaction (implicit's C = alpha * r; unobserved entries weigh 1).
    iterations : int, optional
        ALS sweeps over users and items.
    random_state : int, optional
        Seed of the factors' initialisation.
    num_threads : int, optional
        implicit's own worker threads (0: all cores). Not a hyperparameter (not stored).

    Attributes
    ----------
    item_factors : ndarray of float32, shape (n_items, factors)
    """

    kind = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        random_state: int = 0,
        num_threads: int = 0,
    ) -> None:
        if int(factors) < 1 or int(iterations) < 1:
            raise ValueError(f"ALS factors and iterations must be >= 1; got {factors}, {iterations}")
        if regularization < 0 or alpha <= 0:
            raise ValueError(f"ALS needs regularization >= 0 and alpha > 0; got {regularization}, {alpha}")
        self.factors = int(factors)
        self.regularization = float(regularization)
        self.alpha = float(alpha)
        self.iterations = int(iterations)
        self.random_state = int(random_state)
        self.num_threads = int(num_threads)
        self.item_factors: np.ndarray | None = None
        self._model: Any = None
        self.n_items = 0

    def _new_model(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares  # CPU class on purpose: never the GPU one

        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            random_state=self.random_state,
            dtype=np.float32,
            num_threads=self.num_threads,
        )

    def fit(self, train: sp.csr_matrix, **kwargs: Any) -> ALS:
        """Factorise `train`.

        Parameters
        ----------
        train : csr_matrix
            Users x items training interactions (values are confidences before `alpha`).
        """
        train = _as_csr(train)
        start = time.perf_counter()
        with threadpool_limits(1, "blas"):  # implicit parallelises itself; OpenBLAS threads slow it down
            model = self._new_model()
            model.fit(train, show_progress=False)
        self._model = model
        self.item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self.n_items = int(train.shape[1])
        logger.info("ALS %s fitted on %d users x %d items in %.1fs", self.params(), train.shape[0], self.n_items,
                    time.perf_counter() - start)
        return self

    def user_factors(self, X: sp.csr_matrix) -> np.ndarray:
        """Factors of the users whose rows are `X`, solved against the fixed item factors."""
        _require_fitted(self, "item_factors")
        X = _as_csr(X, self.n_items)
        if X.shape[0] == 0:
            return np.zeros((0, self.factors), dtype=np.float32)
        with threadpool_limits(1, "blas"):
            return np.asarray(self._model.recalculate_user(np.arange(X.shape[0]), X), dtype=np.float32)

    def scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """U V^T for fold-in users `X`, shape (X.shape[0], n_items), float32."""
        U = self.user_factors(X)
        return torch.from_numpy(U) @ torch.from_numpy(self.item_factors).T

    def ranking_scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """`scores(X)`: always a new tensor."""
        return self.scores(X)

    def params(self) -> dict[str, Any]:
        """factors, regularization, alpha, iterations, random_state."""
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "iterations": self.iterations,
            "random_state": self.random_state,
        }

    def _save_state(self, path: Path) -> None:
        np.save(path / "item_factors.npy", _require_fitted(self, "item_factors"), allow_pickle=False)

    @classmethod
    def _load_state(cls, path: Path, meta: dict[str, Any]) -> ALS:
        model = cls(**meta["params"])
        V = np.load(path / "item_factors.npy", allow_pickle=False)
        with threadpool_limits(1, "blas"):
            model._model = model._new_model()
        model._model.item_factors = V
        model.item_factors = V
        model.n_items = int(V.shape[0])
        return model


BASELINES: dict[str, type[Recommender]] = {"popularity": Popularity, "ease": EASE, "als": ALS}


def make_baseline(kind: str, **params: Any) -> Recommender:
    """An unfitted baseline of `kind` ('popularity', 'ease', 'als') with `params`; ConfigError names a bad one."""
    if kind not in BASELINES:
        raise ConfigError(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")
    cls = BASELINES[kind]
    signature = inspect.signature(cls.__init__).parameters
    known = [p for p in signature if p != "self"]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"{kind}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(known) or 'none'}")
    for name, value in params.items():
        default = signature[name].default
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise ConfigError(f"{kind}: parameter {name} must be a finite number; got {value!r}")
    try:
        return cls(**params)
    except ValueError as exc:  # the constructor's own range checks
        raise ConfigError(str(exc)) from None


def fit_baseline(kind: str, train: sp.csr_matrix, *, items: IdMap | None = None, **params: Any) -> Recommender:
    """A baseline of `kind` fitted on `train`, with the item id map attached when given."""
    model = make_baseline(kind, **params).fit(train)
    if items is not None:
        if len(items) != model.n_items:
            raise ValueError(f"item id map has {len(items)} ids but the training matrix {model.n_items} columns")
        model.items = items
    return model


def param_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the grid's key order (one empty dict for an empty grid)."""
    keys = list(grid)
    for k in keys:
        if not isinstance(grid[k], (list, tuple)) or len(grid[k]) == 0:
            raise ValueError(f"grid[{k!r}] must be a non-empty list; got {grid[k]!r}")
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def tune(
    kind: str,
    snapshot: Snapshot,
    grid: dict[str, list[Any]],
    *,
    metric: str = "ndcg@100",
    batch_size: int = 2_000,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Choose the grid point with the best validation `metric` (fit on train, score validation users only).

    Parameters
    ----------
    kind : str
        'popularity', 'ease' or 'als'.
    snapshot : Snapshot
        Must hold `train` and validation users; test users are never touched.
    grid : dict of str to list
        Candidate values per hyperparameter; every combination is tried.
    metric : str, optional
        Selection metric (recvae.evaluation.metrics name), default NDCG@100.

    Returns
    -------
    best_params : dict
        The winning grid point (the first one on ties).
    table : list of dict
        One row per grid point: the params, the metric's mean and standard error, users and fit seconds.
    """
    foldin, heldout = snapshot.heldout("validation")
    points = param_grid(grid)
    for p in points:
        make_baseline(kind, **p)  # fail on a bad name or value before any fitting
    table: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any]] | None = None
    for point in points:
        start = time.perf_counter()
        model = fit_baseline(kind, snapshot.train, **point)
        fit_s = time.perf_counter() - start
        res = evaluate(model.scores, foldin, heldout, metrics=(metric,), batch_size=batch_size)
        value = res.means[metric]
        table.append({**point, metric: value, f"{metric}_stderr": res.stderr[metric], "n_users": res.n_users,
                      "fit_seconds": round(fit_s, 3)})
        logger.info("tune %s %s: validation %s = %.4f (fit %.1fs)", kind, point, metric, value, fit_s)
        if not math.isnan(value) and (best is None or value > best[0]):
            best = (value, point)
    if best is None:
        raise ValueError(f"tune {kind}: validation {metric} is NaN for every grid point (no held-out items?)")
    return dict(best[1]), table

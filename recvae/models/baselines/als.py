"""Implicit-feedback matrix factorisation (Hu, Koren, Volinsky 2008), fitted with `implicit`'s CPU ALS."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from recvae.models.baselines.common import Baseline, as_csr, require_fitted

logger = logging.getLogger(__name__)


class ALS(Baseline):
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
        train = as_csr(train)
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
        require_fitted(self, "item_factors")
        X = as_csr(X, self.n_items)
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
        np.save(path / "item_factors.npy", require_fitted(self, "item_factors"), allow_pickle=False)

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

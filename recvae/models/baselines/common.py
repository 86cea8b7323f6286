"""What the baselines share: being their own estimator, their input as float32 CSR and the not-fitted check."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from recvae.models.base import Recommender


class Baseline(Recommender):
    """A recommender that is its own estimator (`recvae.models.base.Estimator`): `fit` learns in place."""

    @abstractmethod
    def fit(self, train: sp.csr_matrix, **kwargs: Any) -> Self:
        """Learn from a users x items training matrix; returns the model itself."""


def as_csr(X: sp.spmatrix, n_items: int | None = None) -> sp.csr_matrix:
    """`X` as float32 CSR (copied only when needed), checking the item count when one is expected."""
    X = sp.csr_matrix(X, dtype=np.float32) if not (sp.issparse(X) and X.format == "csr") else X
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    if n_items is not None and X.shape[1] != n_items:
        raise ValueError(f"input has {X.shape[1]} item columns; the model was trained on {n_items} items")
    return X


def require_fitted(model: Recommender, attr: str) -> Any:
    """`model.attr`, or RuntimeError when it is None (the model was neither fitted nor loaded)."""
    value = getattr(model, attr, None)
    if value is None:
        raise RuntimeError(f"{type(model).__name__} is not fitted: call fit(train) or load a saved model first")
    return value

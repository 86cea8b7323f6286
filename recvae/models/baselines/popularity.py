"""Most-popular baseline: every user gets the items' training interaction counts as scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recvae.models.baselines.common import Baseline, as_csr, require_fitted


class Popularity(Baseline):
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
        train = as_csr(train)
        nonzero = train.data != 0
        self.counts = np.bincount(train.indices[nonzero], minlength=train.shape[1]).astype(np.float32)
        self.n_items = int(train.shape[1])
        return self

    def scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """Item counts repeated for each row of `X`, shape (X.shape[0], n_items), float32."""
        counts = require_fitted(self, "counts")
        X = as_csr(X, self.n_items)
        return torch.from_numpy(counts).unsqueeze(0).repeat(X.shape[0], 1)

    def ranking_scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """`scores(X)`: always a new tensor."""
        return self.scores(X)

    def params(self) -> dict[str, Any]:
        """No hyperparameters."""
        return {}

    def _save_state(self, path: Path) -> None:
        np.save(path / "counts.npy", require_fitted(self, "counts"), allow_pickle=False)

    @classmethod
    def _load_state(cls, path: Path, meta: dict[str, Any]) -> Popularity:
        model = cls()
        model.counts = np.load(path / "counts.npy", allow_pickle=False)
        model.n_items = int(model.counts.shape[0])
        return model

"""A tiny item co-occurrence recommender and random histories, shared by the serving tests (top-N, batch job)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recvae.models.base import Recommender

N_ITEMS = 25


class Cooc(Recommender):
    """Item co-occurrence scores (X @ C, C = train'train without the diagonal); distinct per item via a tiny offset."""

    kind = "cooc-test"

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.n_items = 0

    def fit(self, train: sp.csr_matrix, **kwargs: Any) -> Cooc:
        c = (train.T @ train).toarray().astype(np.float32)
        np.fill_diagonal(c, 0.0)
        self.c = torch.from_numpy(c)
        self.n_items = train.shape[1]
        # Distinct offsets (< 0.01, far above float32 resolution here) so every ranking is unique.
        perm = np.random.default_rng(7).permutation(self.n_items).astype(np.float32)
        self.offset = torch.from_numpy(perm * 0.01 / self.n_items)
        return self

    def scores(self, X: sp.csr_matrix) -> torch.Tensor:
        self.calls += 1
        if self.fail_on_call is not None and self.calls >= self.fail_on_call:
            raise RuntimeError("model crashed")
        return torch.from_numpy(X.toarray().astype(np.float32)) @ self.c + self.offset

    def params(self) -> dict[str, Any]:
        return {}

    def _save_state(self, path: Path) -> None:  # pragma: no cover - not saved in these tests
        raise NotImplementedError

    @classmethod
    def _load_state(cls, path: Path, meta: dict[str, Any]) -> Cooc:  # pragma: no cover
        raise NotImplementedError


class MasksOddItems(Cooc):
    """Gives -inf to odd items: they are not candidates and must never be emitted."""

    def scores(self, X: sp.csr_matrix) -> torch.Tensor:
        s = super().scores(X)
        s[:, 1::2] = float("-inf")
        return s


def random_history(rng: np.random.Generator, n_users: int, density: float = 0.3) -> sp.csr_matrix:
    m = (rng.random((n_users, N_ITEMS)) < density).astype(np.float32)
    m[0, :] = 1.0  # has seen everything: no candidate left
    m[1, :] = 1.0
    m[1, :2] = 0.0  # two candidates left
    m[2, :] = 0.0  # no history at all
    return sp.csr_matrix(m)


def reference_topn(scores: np.ndarray, history: sp.csr_matrix, n: int) -> list[list[int]]:
    """Brute force: per user, unseen items by decreasing score, at most n."""
    seen = history.toarray() > 0
    out = []
    for s, row_seen in zip(scores, seen, strict=True):
        order = [int(i) for i in np.argsort(-s, kind="stable") if not row_seen[i]]
        out.append(order[:n])
    return out

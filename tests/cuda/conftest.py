"""The CUDA tests: selected only with `-m cuda` (the default addopts deselect them; bench/gpu_check.sh runs them)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The cuda tests are skipped with a reason where torch sees no CUDA device (when selected at all)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def interactions() -> sp.csr_matrix:
    """A small random 0/1 users x items matrix, every user with at least three items."""
    rng = np.random.default_rng(0)
    X = sp.random(300, 120, density=0.08, format="csr", random_state=rng, data_rvs=np.ones)
    X = (X + sp.csr_matrix((np.ones(300), (np.arange(300), rng.integers(0, 120, 300))), shape=X.shape)).tocsr()
    X.data[:] = 1.0
    return X

"""Models saved by earlier versions still load and score the same (tests/fixtures/models_v0_1, made by
tests/fixtures/make_models_v0_1.py with version 0.1's code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recvae.models.base import load_recommender

FIXTURES = Path(__file__).parent / "fixtures" / "models_v0_1"


@pytest.mark.parametrize("kind", ["multvae", "popularity"])
def test_a_model_saved_by_version_0_1_loads_and_scores_the_same(kind):
    rec = load_recommender(FIXTURES / kind)
    probe = sp.load_npz(FIXTURES / "probe.npz")
    expected = np.load(FIXTURES / f"probe_scores_{kind}.npy")
    np.testing.assert_allclose(rec.scores(probe).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert rec.items is not None and rec.items.raw_ids[0] == 100

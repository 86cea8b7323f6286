"""The Recommender contract's save / load: every saved file checked, and the layers' import direction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from vae_helpers import random_csr

from recvae.models.base import load_recommender


def test_every_saved_file_is_checked_on_load(tmp_path: Path) -> None:
    """A baseline's arrays have no format-level check: bytes zeroed in the middle of counts.npy loaded as other
    (wrong but plausible) counts before the save recorded each file's sha256."""
    from recvae.models.base import FILES_KEY, META_FILE, ModelLoadError
    from recvae.models.baselines import Popularity

    X = random_csr(np.random.default_rng(3), 40)
    Popularity().fit(X).save(tmp_path / "p")
    f = tmp_path / "p" / "counts.npy"
    data = bytearray(f.read_bytes())
    data[-8:] = bytes(8)
    f.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="counts.npy: sha256 does not match"):
        load_recommender(tmp_path / "p")
    f.unlink()
    with pytest.raises(ModelLoadError, match="counts.npy: missing"):
        load_recommender(tmp_path / "p")
    # a model saved before digests existed (no "files" in its metadata) still loads
    Popularity().fit(X).save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / META_FILE).read_text())
    del meta[FILES_KEY]
    (tmp_path / "old" / META_FILE).write_text(json.dumps(meta))
    assert load_recommender(tmp_path / "old").n_items == X.shape[1]


def test_the_models_layer_never_imports_training() -> None:
    """Training builds on the models, never the reverse: loading and scoring every kind imports no recvae.training."""
    import subprocess
    import sys

    code = ("import sys, recvae.models.base, recvae.models.neural, recvae.models.baselines, recvae.models.ensemble; "
            "print(sorted(m for m in sys.modules if m.startswith('recvae.training')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

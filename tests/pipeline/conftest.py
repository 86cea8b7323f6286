"""Snapshots the pipeline tests share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recvae import pipeline


@pytest.fixture
def lightgcn_snapshot(mlflow_store, tmp_path: Path) -> str:
    """A LightGCN-protocol snapshot (every user trains, a test part per user, no validation users) of 300 users of
    two tastes over 120 items: a structure a model can learn."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "lightgcn"
    folder.mkdir()
    train, test = [], []
    for u in range(300):
        items = rng.choice(60, size=12, replace=False) + (0 if u % 2 else 60)
        train.append(f"{u} " + " ".join(map(str, items[:9])))
        test.append(f"{u} " + " ".join(map(str, items[9:])))
    (folder / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "test.txt").write_text("\n".join(test) + "\n")
    return pipeline.prepare_step(input_path=str(folder), input_format="lightgcn").snapshot_dir

"""Data steps: build a snapshot under the local home (idempotent: the same data gives the same snapshot), find one."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from recvae import paths
from recvae.pipeline.common import config_from
from recvae.pipeline.results import SnapshotResult

logger = logging.getLogger(__name__)


def latest_snapshot() -> Path | None:
    """The most recently built snapshot (its id maps seed the next build so item indices stay stable)."""
    pointer = paths.snapshots_dir() / "LATEST"
    if pointer.exists():
        path = paths.snapshots_dir() / pointer.read_text().strip()
        if (path / "manifest.json").exists():
            return path
    return None


def _mark_latest(path: Path) -> None:
    tmp = paths.snapshots_dir() / ".LATEST.tmp"
    tmp.write_text(path.name)
    os.replace(tmp, paths.snapshots_dir() / "LATEST")


def prepare_step(
    *,
    dataset: str | None = "synthetic",
    input_path: str | None = None,
    input_format: str | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    run_key: str | None = None,
) -> SnapshotResult:
    """Ingest, validate and split into a snapshot under `paths.snapshots_dir()`; same data, same snapshot."""
    from recvae.data.prepare import Source, prepare

    config = config_from(overrides)
    source = Source(dataset=None if input_path else dataset, path=input_path, format=input_format)
    previous = latest_snapshot()
    snap = prepare(source, None, config, previous=previous)
    out = paths.snapshots_dir() / snap.snapshot_id
    snap.save(out)
    _mark_latest(out)
    logger.info("snapshot %s at %s (run %s)", snap.snapshot_id, out, run_key)
    return SnapshotResult(snapshot_dir=str(out), snapshot_id=snap.snapshot_id, n_users=len(snap.users),
                          n_items=snap.n_items)


def load_snapshot(snapshot_dir: str | Path | None):
    from recvae.data.snapshot import Snapshot, SnapshotError

    path = Path(snapshot_dir) if snapshot_dir else latest_snapshot()
    if path is None:
        raise SnapshotError(
            f"no snapshot given and none built yet under {paths.snapshots_dir()}: pass --snapshot DIR (the folder "
            "`recvae prepare --out DIR` wrote), or run `recvae prepare` without --out")
    return Snapshot.load(path)

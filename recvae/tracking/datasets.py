"""The snapshot a run used, logged as params, its manifest and MLflow datasets (digest: the snapshot id)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.types.schema import ColSpec, Schema

from recvae.log import mask_secrets
from recvae.tracking.models import id_type
from recvae.tracking.runs import log_params
from recvae.urls import mask_url

logger = logging.getLogger(__name__)


TAG_SNAPSHOT_ID = "snapshot_id"


def log_snapshot(snapshot: Any) -> dict[str, str]:
    """Log a Snapshot's id, counts and file hashes (params/tags), its splits as input datasets and its manifest.json."""
    manifest = dict(snapshot.manifest or {})
    sid = snapshot.snapshot_id
    params: dict[str, Any] = {"snapshot.id": sid, "snapshot.n_users": len(snapshot.users),
                              "snapshot.n_items": snapshot.n_items,
                              "snapshot.source": _source_text(manifest.get("source"))}
    for part, counts in snapshot.summary().items():
        params[f"snapshot.{part}.users"] = counts["users"]
        params[f"snapshot.{part}.interactions"] = counts["interactions"]
    for fname, digest in sorted(manifest.get("files", {}).items()):
        params[f"snapshot.sha256.{fname}"] = digest
    logged = log_params(params)
    tags = {TAG_SNAPSHOT_ID: sid}
    if snapshot.path:
        tags["snapshot_path"] = mask_secrets(str(snapshot.path))
    mlflow.set_tags(tags)
    log_datasets(snapshot)
    saved = Path(snapshot.path) / "manifest.json" if snapshot.path is not None else None
    if saved is not None and saved.exists():
        text = saved.read_text()
    else:
        text = json.dumps({**manifest, "snapshot_id": sid}, indent=2, sort_keys=True, default=str)
    mlflow.log_text(mask_secrets(text), "snapshot/manifest.json")  # a source URL's password never reaches MLflow
    return logged


def _source_text(source: Any) -> str:
    """One line naming a manifest's data source: the dataset name, else format and path (or URL), else '?'."""
    if not isinstance(source, Mapping):
        return str(source) if source else "?"
    parts = [str(source[k]) for k in ("dataset", "format", "path") if source.get(k)]
    return " ".join(dict.fromkeys(parts)) or "?"


class SnapshotDataset(MetaDataset):
    """One split of a snapshot as an MLflow dataset: metadata and counts only, never the interactions."""

    def __init__(self, source: DatasetSource, name: str, digest: str, schema: Schema, profile: dict[str, Any]) -> None:
        self._profile = profile
        super().__init__(source, name=name, digest=digest, schema=schema)

    @property
    def profile(self) -> dict[str, Any]:
        """Users and interaction counts of the split."""
        return self._profile

    def to_dict(self) -> dict[str, str]:
        """MetaDataset's fields plus the profile (MetaDataset itself logs none)."""
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def _dataset_source(snapshot: Any) -> DatasetSource:
    """Where the snapshot's data came from: its file, URL (password masked) or data set name, else its folder."""
    src = (snapshot.manifest or {}).get("source") or {}
    text = str(src.get("path") or src.get("dataset") or snapshot.path or "")
    if not text:
        return CodeDatasetSource(tags={})  # built in memory: MLflow's "made by code" source
    if "://" in text:
        text = mask_url(text)
    if re.match(r"^https?://", text):
        return HTTPDatasetSource(text)
    # MLflow has no SQL source type: a file, a folder, a dataset name or a database URL is a "local" uri.
    return get_dataset_source_from_json(json.dumps({"uri": text}), "local")


def _dataset_base_name(snapshot: Any) -> str:
    src = (snapshot.manifest or {}).get("source") or {}
    path = str(src.get("path") or "")
    if src.get("dataset"):
        return str(src["dataset"])
    if path and "://" not in path:
        return Path(path).name or path
    return str(src.get("format") or "snapshot")


def snapshot_datasets(snapshot: Any) -> list[tuple[SnapshotDataset, str]]:
    """(dataset, context) for each split the snapshot has: train ('training'), validation and test users."""
    sid = snapshot.snapshot_id
    source, base = _dataset_source(snapshot), _dataset_base_name(snapshot)
    schema = Schema([ColSpec(id_type(snapshot.users.raw_ids), "user"),
                     ColSpec(id_type(snapshot.items.raw_ids), "item")])
    out = []
    if "train" in snapshot.matrices:
        m = snapshot.train
        profile = {"users": int(m.shape[0]), "items": int(snapshot.n_items), "interactions": int(m.nnz)}
        out.append((SnapshotDataset(source, f"{base}/train", sid, schema, profile), "training"))
    for split in ("validation", "test"):
        if snapshot.has(split):
            fold_in, held_out = snapshot.heldout(split)
            profile = {"users": int(fold_in.shape[0]), "items": int(snapshot.n_items),
                       "fold_in_interactions": int(fold_in.nnz), "held_out_interactions": int(held_out.nnz)}
            out.append((SnapshotDataset(source, f"{base}/{split}", sid, schema, profile), split))
    return out


def log_datasets(snapshot: Any) -> list[str]:
    """Log the snapshot's splits as the active run's input datasets (digest: the snapshot id); returns the contexts."""
    pairs = snapshot_datasets(snapshot)
    if pairs:
        mlflow.log_inputs([d for d, _ in pairs], contexts=[c for _, c in pairs], tags_list=[None] * len(pairs))
    return [c for _, c in pairs]

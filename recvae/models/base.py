"""The contract every model follows, in two halves, and saving/loading by kind.

`Recommender` is the scoring half: score users given as rows, save, load. It is all that serving, evaluation and
ensembles need. `Estimator` is the fitting half: `fit(train)` returns a fitted `Recommender`. A baseline is its own
estimator (its `fit` returns itself). The neural models are fitted by `recvae.training` (the epoch loop, checkpoints,
resume), which builds on this layer; a `fit` method here calling it would make models and training import each other,
and a trainer registered here by the training layer would make `fit` work only once that layer was imported. So their
estimator is `recvae.training.VAETrainer`; tests/recommender_contract.py checks both halves together.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Protocol

import scipy.sparse as sp
import torch

from recvae.data.idmap import IdMap
from recvae.digest import sha256_file
from recvae.models.kinds import LOADERS, load_class

META_FILE = "recommender.json"
FILES_KEY = "files"  # in the metadata: the sha256 of every file saved beside it, checked on load
KINDS = LOADERS  # recommender kind -> "module:Class"; a kind's module is imported only when it is loaded


class ModelLoadError(ValueError):
    """A saved model is missing files, was altered or is corrupt, or does not match what it claims to be."""


class Recommender(ABC):
    """Scores every item for users given as rows of an interaction matrix (fold-in, no retraining)."""

    kind: str  # a class attribute; per instance where one class serves several kinds (MultVAERecommender)

    n_items: int
    items: IdMap | None = None  # raw item ids of the columns, attached when trained on a snapshot

    @abstractmethod
    def scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """(X.shape[0], n_items) unnormalised float32 scores; seen items are not masked here."""

    def ranking_scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """Scores to rank by (batch top-N): a tensor the caller owns and may overwrite, in float32 or the lower
        precision the model computed in. The default copies `scores(X)`; models that always build a new tensor
        return it as it is."""
        return self.scores(X).clone()

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Hyperparameters, JSON-serializable (logged to MLflow, stored with the model)."""

    @abstractmethod
    def _save_state(self, path: Path) -> None:
        """Write learned state (tensors/arrays only; never pickles) into directory `path`."""

    @classmethod
    @abstractmethod
    def _load_state(cls, path: Path, meta: dict[str, Any]) -> Recommender:
        """Rebuild from `path` and the metadata written by `save`."""

    def save(self, path: str | Path, **extra: Any) -> Path:
        """Write the model, its params, item ids and `extra` metadata (e.g. snapshot id) to directory `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._save_state(path)
        if self.items is not None:
            self.items.save(path / "items.parquet")
        files = {f.name: sha256_file(f) for f in sorted(path.iterdir()) if f.is_file() and f.name != META_FILE}
        meta = {"kind": self.kind, "n_items": self.n_items, "params": self.params(), **extra, FILES_KEY: files}
        (path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        return path


class Estimator(Protocol):
    """The fitting half of the contract: learns from a users x items training matrix."""

    def fit(self, train: sp.csr_matrix) -> Recommender:
        """A recommender fitted on `train`."""
        ...


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a saved recommender directory."""
    f = Path(path) / META_FILE
    if not f.exists():
        raise FileNotFoundError(f"{path}: not a saved recommender (no {META_FILE})")
    try:
        meta = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{f}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{f}: expected a JSON object")
    return meta


def verify_files(path: Path, meta: dict[str, Any]) -> None:
    """Check every file recorded at save time against its sha256 (models saved before digests have none)."""
    for name, digest in (meta.get(FILES_KEY) or {}).items():
        f = path / name
        if f.parent != path:
            raise ModelLoadError(f"{path / META_FILE}: file name {name!r} points outside the model folder")
        if not f.is_file():
            raise ModelLoadError(f"{f}: missing (listed in {META_FILE})")
        if sha256_file(f) != digest:
            raise ModelLoadError(f"{f}: sha256 does not match the digest in {META_FILE} (file altered or corrupt)")


def load_recommender(path: str | Path) -> Recommender:
    """Load any saved recommender by the kind recorded in its metadata (no code execution from the files)."""
    path = Path(path)
    meta = read_meta(path)
    kind = meta.get("kind")
    if kind not in KINDS:
        raise ModelLoadError(f"{path}: unknown recommender kind {kind!r}; known: {', '.join(KINDS)}")
    verify_files(path, meta)
    rec: Recommender = load_class(KINDS[kind])._load_state(path, meta)
    if (path / "items.parquet").exists():
        rec.items = IdMap.load(path / "items.parquet")
    return rec

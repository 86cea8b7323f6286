"""best.pt and last.pt: what they hold, their sha256 files, writing them without a half-written pair, and resuming.

best.pt is a recommender state (`MultVAERecommender.from_state` loads it) plus the epoch and its metrics; last.pt
holds everything an exact resume needs: weights, optimizer, grad scaler, RNG states, history and a fingerprint of
the run (snapshot, configuration, protocol) that a resumed run must match.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from recvae.config import Config, ConfigError
from recvae.digest import sha256_file
from recvae.models.base import ModelLoadError
from recvae.models.neural import MultVAERecommender, load_state_file, plain
from recvae.models.vae import LatentAutoencoder

logger = logging.getLogger(__name__)

BEST_FILE = "best.pt"
LAST_FILE = "last.pt"
DIGEST_SUFFIX = ".sha256"  # last.pt.sha256: the checkpoint's sha256, then the one of the file it replaced
CHECKPOINT_FORMAT = 1
# TrainConfig fields that may change between a run and its resumption: they do not alter the trajectory
# (epochs and patience only say when to stop, unless the lr schedule spans the epochs; a new device or number of
# processes continues, though not bit for bit).
RESUME_MAY_CHANGE = frozenset({"epochs", "patience", "eval_batch_size", "num_threads", "device", "compile", "nproc",
                               "dist_timeout_s"})


class CheckpointMismatchError(ConfigError):
    """A checkpoint to resume from belongs to another snapshot, configuration or protocol."""


class CheckpointCorruptError(CheckpointMismatchError):
    """A checkpoint does not match the sha256 written beside it, or cannot be read (altered, truncated, corrupt)."""


@dataclass
class TrainState:
    """Everything that evolves during training, apart from the module and the optimizer."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed updates
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_value: float = -math.inf
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_beta: float | None = None
    best_state: dict[str, torch.Tensor] | None = None


@dataclass
class Resumable:
    """The objects last.pt saves and restores besides the TrainState."""

    module: LatentAutoencoder
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    shuffle_gen: torch.Generator


def fingerprint(config: Config, snapshot_id: str | None, select_on: str | None,
                shape: tuple[int, int]) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed."""
    may_change = RESUME_MAY_CHANGE - ({"epochs"} if config.train.lr_schedule != "constant" else set())
    train = {k: v for k, v in dataclasses.asdict(config.train).items() if k not in may_change}
    return {
        "snapshot_id": snapshot_id,
        "select_on": select_on,
        "train_shape": [int(shape[0]), int(shape[1])],
        "model": plain(dataclasses.asdict(config.model)),
        "train": train,
    }


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current)):
            name = f"{prefix}.{key}" if prefix else str(key)
            out += _differences(saved.get(key), current.get(key), name)
        return out
    return [] if saved == current else [f"{prefix}: checkpoint has {saved!r}, this run has {current!r}"]


def _rng_states(shuffle_gen: torch.Generator) -> dict[str, Any]:
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    kind, keys, pos, has_gauss, gauss = legacy
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
        "shuffle": shuffle_gen.get_state(),
    }


def _set_rng_states(states: dict[str, Any], shuffle_gen: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    shuffle_gen.set_state(states["shuffle"])


def best_payload(module: LatentAutoencoder, config: Config, state: TrainState,
                 snapshot_id: str | None) -> dict[str, Any]:
    """A best.pt: loadable as a recommender state (MultVAERecommender.from_state)."""
    rec = MultVAERecommender(module.n_items, config.model, config.train, module)
    return {
        **rec.state(),
        "format": CHECKPOINT_FORMAT,
        "snapshot_id": snapshot_id,
        "epoch": state.best_epoch,
        "metrics": dict(state.best_metrics),
        "beta": state.best_beta,
    }


def last_payload(run: Resumable, fingerprint: dict[str, Any], state: TrainState) -> dict[str, Any]:
    """A last.pt: everything an exact resume needs."""
    best = {"epoch": state.best_epoch, "value": state.best_value, "metrics": state.best_metrics,
            "beta": state.best_beta}
    return {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "model_args": run.module.model_args(),
        "model": {k: v.detach().cpu() for k, v in run.module.state_dict().items()},
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "epoch": state.epoch,
        "step": state.step,
        "history": state.history,
        "best": best,
        "rng": _rng_states(run.shuffle_gen),
    }


def restore(last_path: Path, best_path: Path, fingerprint: dict[str, Any], run: Resumable,
            device: torch.device) -> TrainState:
    """Load last.pt (and the best weights from best.pt) into the module, optimizer and RNGs."""
    ckpt = load_checkpoint(last_path)
    diffs = _differences(ckpt.get("fingerprint"), fingerprint)
    if diffs:
        raise CheckpointMismatchError(f"{last_path} was written by another run; refusing to resume: "
                                      + "; ".join(diffs))
    run.module.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.scaler is not None and ckpt.get("scaler") is not None:
        run.scaler.load_state_dict(ckpt["scaler"])
    _set_rng_states(ckpt["rng"], run.shuffle_gen)
    best = ckpt["best"]
    state = TrainState(
        epoch=int(ckpt["epoch"]),
        step=int(ckpt["step"]),
        history=list(ckpt["history"]),
        best_epoch=int(best["epoch"]),
        best_value=float(best["value"]),
        best_metrics=dict(best["metrics"]),
        best_beta=best["beta"],
    )
    if state.best_epoch > 0:
        saved = load_checkpoint(best_path)
        if saved.get("epoch") != state.best_epoch:
            raise CheckpointMismatchError(f"{best_path} holds epoch {saved.get('epoch')} but {last_path} says the best "
                                          f"epoch is {state.best_epoch}")
        state.best_state = {k: v.to(device) for k, v in saved["state_dict"].items()}
    return state


def save_checkpoints(checkpoints: list[tuple[dict[str, Any], Path]]) -> None:
    """Write each checkpoint to a temporary file beside it, then its digest and rename them all: the slow writes
    come first, so a kill leaves the previous best.pt/last.pt pair (all but a few system calls' time)."""
    staged = []
    for obj, path in checkpoints:
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(obj, tmp)
        staged.append((tmp, path, sha256_file(tmp)))
    for tmp, path, digest in staged:
        _write_digest(path, digest)
        os.replace(tmp, path)


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def _write_digest(path: Path, digest: str) -> None:
    """`path`.sha256: the new file's digest, then the current one's, so a kill before the rename still verifies."""
    sidecar = _digest_path(path)
    previous = sidecar.read_text().split()[:1] if sidecar.exists() else []
    tmp = sidecar.with_name(f".{sidecar.name}.tmp")
    tmp.write_text("\n".join([digest, *previous]) + "\n")
    os.replace(tmp, sidecar)


def _verify_digest(path: Path) -> None:
    """CheckpointCorruptError unless `path` has a sha256 written beside it (none: an older checkpoint, warned about)."""
    sidecar = _digest_path(path)
    if not sidecar.exists():
        logger.warning("%s has no sha256 beside it (written before checkpoints had digests): loaded unchecked", path)
        return
    actual = sha256_file(path)
    if actual not in sidecar.read_text().split():
        raise CheckpointCorruptError(
            f"{path}: sha256 {actual[:16]}... does not match {sidecar.name}: the checkpoint was altered or is corrupt; "
            f"restore it, or delete {path.parent} to train from scratch"
        )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint dict, checked against its sha256 file and read with torch.load(weights_only=True)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointMismatchError(f"{path}: file not found")
    _verify_digest(path)
    try:
        state = load_state_file(path)
    except ModelLoadError as exc:
        raise CheckpointCorruptError(str(exc)) from exc
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(f"{path}: checkpoint format {state.get('format')!r}, "
                                      f"expected {CHECKPOINT_FORMAT}")
    return state


def load_best(path: str | Path) -> MultVAERecommender:
    """The recommender stored in a best.pt checkpoint (or a run directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST_FILE
    return MultVAERecommender.from_state(load_checkpoint(path), source=path)

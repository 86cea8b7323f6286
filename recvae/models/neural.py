"""Mult-VAE, Mult-DAE and RecVAE behind the `Recommender` contract, and their weight files (model.pt, read with
torch.load(weights_only=True) and checked against its sha256).

Training is not here: `recvae.training` trains a network and wraps it in a `MultVAERecommender` (see
`recvae.models.base` for why the contract's fitting half lives there).
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import scipy.sparse as sp
import torch

from recvae.config import Config, ModelConfig, TrainConfig, from_dict
from recvae.digest import sha256_file
from recvae.models.amp import amp_dtype_for, autocast
from recvae.models.base import ModelLoadError, Recommender
from recvae.models.kinds import NETWORKS, RECOMMENDER_KINDS, load_class
from recvae.models.sparse import CSRBatch
from recvae.models.vae import LatentAutoencoder

STATE_FILE = "model.pt"
DIGEST_FILE = "model.pt.sha256"
STATE_FORMAT = 1


def build_module(n_items: int, model_config: ModelConfig) -> LatentAutoencoder:
    """The network of `model_config.kind` (MultVAE, MultDAE or RecVAE) from a validated ModelConfig."""
    model_config.validate()
    cls = load_class(NETWORKS[model_config.kind])
    extra = {"prior": model_config.prior, "n_pseudo_inputs": model_config.n_pseudo_inputs} \
        if model_config.prior != "normal" else {}
    module: LatentAutoencoder = cls(n_items, model_config.hidden_dims, model_config.latent_dim, model_config.activation,
                                    model_config.dropout, latent_activation=model_config.latent_activation, **extra)
    return module


def plain(d: dict[str, Any]) -> dict[str, Any]:
    """Tuples to lists so that the dict is JSON- and weights_only-friendly and compares equal after a round trip."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


class MultVAERecommender(Recommender):
    """A trained Mult-VAE / Mult-DAE / RecVAE network scoring users (kind 'multvae', 'multdae' or 'recvae')."""

    kind = "multvae"

    def __init__(
        self,
        n_items: int = 0,
        model_config: ModelConfig | None = None,
        train_config: TrainConfig | None = None,
        module: LatentAutoencoder | None = None,
    ) -> None:
        self.model_config = model_config or ModelConfig()
        self.train_config = train_config or TrainConfig()
        self.model_config.validate()
        self.train_config.validate()
        self.kind = RECOMMENDER_KINDS[self.model_config.kind]
        self.n_items = int(n_items)
        self.module = module
        if module is not None:
            self.n_items = module.n_items

    @property
    def device(self) -> torch.device:
        """Where the network's weights are (the CPU before there is one)."""
        if self.module is None:
            return torch.device("cpu")
        return next(self.module.parameters()).device

    def config(self) -> Config:
        """A Config holding this model's model and train sections."""
        return Config(model=self.model_config, train=self.train_config)

    def _require_module(self) -> LatentAutoencoder:
        if self.module is None:
            raise RuntimeError("MultVAERecommender is not fitted: train one (recvae.training) or load a saved model")
        return self.module

    def scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """(X.shape[0], n_items) float32 logits on the CPU; the mean of q(z|x) is decoded (no sampling)."""
        return self._logits(X).float()

    def ranking_scores(self, X: sp.csr_matrix) -> torch.Tensor:
        """The logits in the precision they were computed in (bfloat16 with train.amp=bf16), a new tensor."""
        return self._logits(X)

    def _logits(self, X: sp.csr_matrix) -> torch.Tensor:
        module = self._require_module()
        if X.shape[1] != self.n_items:
            raise ValueError(f"input has {X.shape[1]} item columns; the model was trained on {self.n_items} items")
        X = sp.csr_matrix(X)
        was_training = module.training
        module.eval()
        out = []
        amp = amp_dtype_for(self.train_config.amp, self.device)  # score as the model was validated in training
        batch_size = self.train_config.eval_batch_size
        try:
            with torch.no_grad(), autocast(self.device, amp):
                for start in range(0, X.shape[0], batch_size):
                    out.append(module.predict(CSRBatch.from_scipy(X[start : start + batch_size], self.device)).cpu())
        finally:
            module.train(was_training)
        if len(out) == 1:
            return out[0]  # no chunk-sized copy for a single batch
        return torch.cat(out) if out else torch.zeros(0, self.n_items)

    def params(self) -> dict[str, Any]:
        """{'model': ModelConfig fields, 'train': TrainConfig fields}."""
        return {"model": plain(dataclasses.asdict(self.model_config)),
                "train": plain(dataclasses.asdict(self.train_config))}

    def state(self) -> dict[str, Any]:
        """What model.pt holds: the kind, the network's arguments, both config sections and the weights (CPU)."""
        module = self._require_module()
        params = self.params()
        return {
            "format": STATE_FORMAT,
            "kind": self.kind,
            "model_args": module.model_args(),
            "model_config": params["model"],
            "train_config": params["train"],
            "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        }

    def _save_state(self, path: Path) -> None:
        torch.save(self.state(), path / STATE_FILE)
        (path / DIGEST_FILE).write_text(sha256_file(path / STATE_FILE) + "\n")

    @classmethod
    def _load_state(cls, path: Path, meta: dict[str, Any]) -> MultVAERecommender:
        state = load_state_file(path / STATE_FILE, expected_sha256=_read_digest(path / DIGEST_FILE))
        rec = cls.from_state(state, source=path / STATE_FILE)
        kind, n_items = meta.get("kind"), meta.get("n_items")
        if kind not in (None, rec.kind):
            raise ModelLoadError(f"{path}: metadata says kind {kind!r} but {STATE_FILE} holds {rec.kind!r}")
        if n_items not in (None, rec.n_items):
            raise ModelLoadError(f"{path}: metadata says {n_items} items but {STATE_FILE} holds {rec.n_items}")
        return rec

    @classmethod
    def from_state(cls, state: dict[str, Any], source: str | Path = "<state>") -> MultVAERecommender:
        """Rebuild from a dict holding model_args, model_config, train_config and state_dict."""
        try:
            model_config = from_dict(ModelConfig, state["model_config"])
            train_config = from_dict(TrainConfig, state["train_config"])
            args = dict(state["model_args"])
            sd = state["state_dict"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{source}: not a Mult-VAE state ({exc})") from exc
        expect = {"hidden_dims": list(model_config.hidden_dims), "latent_dim": model_config.latent_dim,
                  "activation": model_config.activation, "dropout": model_config.dropout,
                  "latent_activation": model_config.latent_activation, "prior": model_config.prior}
        if model_config.prior == "vamp":
            expect["n_pseudo_inputs"] = model_config.n_pseudo_inputs
        args.setdefault("latent_activation", False)  # saved before the option existed
        args.setdefault("prior", "normal")  # saved before the VampPrior existed (and RecVAE's, which has its own)
        differ = [k for k, v in expect.items() if args.get(k) != v]
        if differ:
            raise ModelLoadError(f"{source}: model_args and model_config disagree on {', '.join(differ)}")
        module = build_module(int(args["n_items"]), model_config)
        try:
            module.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"{source}: weights do not match the stored architecture: {exc}") from exc
        module.eval()
        return cls(module.n_items, model_config, train_config, module)


def load_state_file(path: Path, expected_sha256: str | None = None) -> dict[str, Any]:
    """torch.load(weights_only=True) of a saved state, refusing altered files and anything needing pickled code."""
    if not path.exists():
        raise ModelLoadError(f"{path}: file not found")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise ModelLoadError(f"{path}: sha256 does not match {DIGEST_FILE} (file altered or corrupt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot be loaded safely (weights_only): {exc}") from exc
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: expected a dict, got {type(state).__name__}")
    return state


def _read_digest(path: Path) -> str:
    if not path.exists():
        raise ModelLoadError(f"{path}: missing (the sha256 of {STATE_FILE} written at save time)")
    return path.read_text().strip()

"""Typed configuration; every default equals the paper's (Liang et al. 2018) unless stated."""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from recvae.models.kinds import MODEL_KINDS


class ConfigError(ValueError):
    """A configuration value is invalid; raised before any work starts."""


def _check_finite(part: Any, section: str) -> None:
    """Every float field of a config part a finite number: NaN passes comparisons such as `lr <= 0` unnoticed."""
    for f in dataclasses.fields(part):
        value = getattr(part, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{section}.{f.name} must be a finite number; got {value}")


MAX_SEED = 2**32 - 1  # numpy's legacy generators, implicit and torch's manual_seed all take 32-bit seeds


def _check_seed(part: Any, section: str) -> None:
    """The seed of a section, in the range every library it is passed to accepts."""
    if not 0 <= part.seed <= MAX_SEED:
        raise ConfigError(f"{section}.seed must be in [0, {MAX_SEED}]; got {part.seed}")


def _check_at_least(part: Any, section: str, minimum: int, *names: str) -> None:
    """Integer fields (None allowed: 'not set') that must be >= `minimum`."""
    for name in names:
        value = getattr(part, name)
        if value is not None and value < minimum:
            raise ConfigError(f"{section}.{name} must be >= {minimum}; got {value}")


@dataclass
class DataConfig:
    """How raw interactions become a binarized, filtered interaction list."""

    threshold: float | None = 3.5  # keep rating > threshold; None keeps every row (implicit data)
    min_user_count: int = 5
    min_item_count: int = 0
    duplicates: str = "max"  # rule for repeated (user, item): "max" rating / latest timestamp, "first", "error"
    lenient: bool = False  # quarantine bad rows instead of failing

    def validate(self) -> None:
        _check_finite(self, "data")
        _check_at_least(self, "data", 0, "min_user_count", "min_item_count")
        if self.duplicates not in ("max", "first", "error"):
            raise ConfigError(f"data.duplicates must be one of max, first, error; got {self.duplicates!r}")


@dataclass
class SplitConfig:
    """Strong generalization (held-out users, 80/20 fold-in) or a temporal split."""

    kind: str = "strong"  # "strong" | "temporal"
    n_heldout_users: int | None = None  # None: 10,000 at ML-20M scale, proportionally fewer on small data
    test_prop: float = 0.2  # share of a held-out user's items held out for evaluation
    seed: int = 98765  # the paper notebook's seed
    temporal_test_prop: float = 0.2  # temporal: share of each user's latest interactions held out

    def validate(self) -> None:
        _check_finite(self, "split")
        if self.kind not in ("strong", "temporal"):
            raise ConfigError(f"split.kind: split kind must be 'strong' or 'temporal'; got {self.kind!r}")
        if not 0.0 < self.test_prop < 1.0:
            raise ConfigError(f"split.test_prop must be in (0, 1); got {self.test_prop}")
        if not 0.0 < self.temporal_test_prop < 1.0:
            raise ConfigError(f"split.temporal_test_prop must be in (0, 1); got {self.temporal_test_prop}")
        _check_at_least(self, "split", 1, "n_heldout_users")
        _check_seed(self, "split")


PRIORS = ("normal", "vamp")  # model.prior: the paper's N(0, I), or the VampPrior (Tomczak & Welling 2018)


@dataclass
class ModelConfig:
    """Mult-VAE / Mult-DAE architecture: I-600-200-600-I, tanh, input dropout 0.5 (RecVAE: see `preset`)."""

    kind: str = "vae"  # "vae" | "dae" | "recvae" (Shenbin et al. 2020; hidden_dims are its encoder layers)
    hidden_dims: tuple[int, ...] = (600,)
    latent_dim: int = 200
    activation: str = "tanh"
    dropout: float = 0.5
    # Not in the paper: the decoder reads activation(z) rather than z, as the Mult-DAE's decoder reads its tanh code.
    # It lifts the one-layer Mult-VAE by ~0.008 validation NDCG@100 on ML-1M (bench/results/vae_tuning.md).
    latent_activation: bool = False
    # Not in the paper: "vamp" is the VampPrior, a mixture of the posteriors of n_pseudo_inputs learned pseudo-inputs
    # (Mult-VAE only; RecVAE has its own composite prior, the DAE none)
    prior: str = "normal"
    n_pseudo_inputs: int = 500

    def validate(self) -> None:
        _check_finite(self, "model")
        if self.prior not in PRIORS:
            raise ConfigError(f"model.prior must be one of {', '.join(PRIORS)}; got {self.prior!r}")
        if self.prior != "normal" and self.kind != "vae":
            raise ConfigError(f"model.prior={self.prior} is for kind 'vae' (RecVAE has its own composite prior, the "
                              f"Mult-DAE none); got kind {self.kind!r}")
        _check_at_least(self, "model", 1, "n_pseudo_inputs")
        if self.kind not in MODEL_KINDS:
            known = ", ".join(repr(k) for k in MODEL_KINDS[:-1]) + f" or {MODEL_KINDS[-1]!r}"
            raise ConfigError(f"model.kind must be {known}; got {self.kind!r}")
        if self.latent_activation and self.kind != "vae":
            raise ConfigError(f"model.latent_activation is for kind 'vae' (the Mult-DAE's code already goes "
                              f"through the activation; RecVAE's decoder reads z); got kind {self.kind!r}")
        if self.kind == "recvae" and (not self.hidden_dims or len(set(self.hidden_dims)) != 1):
            raise ConfigError("model.hidden_dims: recvae's hidden_dims are densely connected layers of one width; "
                              f"got {list(self.hidden_dims)}")
        if any(int(h) < 1 for h in self.hidden_dims):
            raise ConfigError(f"model.hidden_dims: layer sizes must be >= 1; got {list(self.hidden_dims)}")
        if self.latent_dim < 1:
            raise ConfigError(f"model.latent_dim: layer sizes must be >= 1; got {self.latent_dim}")
        if self.activation not in ("tanh", "relu", "sigmoid", "elu", "selu", "swish"):
            raise ConfigError(f"model.activation: unknown activation {self.activation!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1); got {self.dropout}")


@dataclass
class TrainConfig:
    """Optimisation and KL annealing; paper: batch 500, Adam 1e-3, 200 epochs, beta to 0.2 over 200k steps."""

    epochs: int = 200
    batch_size: int = 500
    lr: float = 1e-3
    weight_decay: float = 0.0  # the reference notebook's lam=0.0 (L2 on weights)
    # "constant" is the paper's; "cosine" (not in the paper) decays lr to 0 over all updates of `epochs`,
    # which smooths the end of a run whose test curve is noisy at the top (Gowalla: bench/results/)
    lr_schedule: str = "constant"
    beta_schedule: str = "anneal"  # "anneal" (linear to cap) | "constant" | "anneal_to_1" (paper's search)
    total_anneal_steps: int = 200_000
    # The paper's 200,000 steps are ML-20M's (234 updates an epoch): beta hits the cap near epoch 171 of 200.
    # True rescales them by this data's updates per epoch, so beta reaches the cap at the same point of training
    # on any data set (exactly 200,000 on ML-20M); False takes total_anneal_steps literally.
    scale_anneal_to_data: bool = True
    anneal_cap: float = 0.2
    beta: float = 0.2  # used by the "constant" schedule
    # Optional (not in the paper; RecVAE): each user's KL weight is beta x their item count, beta then being
    # RecVAE's gamma (0.005 there). False is the paper's single beta for every user.
    beta_per_item: bool = False
    # RecVAE only (model.kind=recvae): an epoch is this many passes updating the encoder, then the decoder
    encoder_epochs: int = 3
    decoder_epochs: int = 1
    patience: int | None = None  # early stopping on validation NDCG@100; None trains all epochs
    eval_batch_size: int = 2_000
    seed: int = 98765
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    amp: str = "none"  # "none" | "bf16" (CPU or CUDA autocast) | "fp16" (CUDA only)
    num_threads: int | None = None
    # torch.compile the training forward pass and likelihood; its first epoch pays the compilation (about 3 s on
    # ML-1M here). It gained 4-10 % on this CPU before the likelihood became one log_softmax kernel and no longer
    # does (bench/results/train_speed.md): measure it on your machine (and on a GPU) before turning it on
    compile: bool = False
    # Data-parallel processes (not in the paper): > 1 makes `recvae train` and the pipeline's train step start
    # themselves under torchrun on this machine (gloo on CPU, NCCL on GPUs); each rank trains on its share of every
    # global batch of `batch_size` users, so the schedules mean what they mean in one process (docs/distributed.md)
    nproc: int = 1
    # How long a collective waits for the other ranks before the run fails (a dead or stuck rank): it must cover
    # rank 0's evaluation, checkpoints and MLflow logging, which the other ranks wait for
    dist_timeout_s: float = 600.0

    def validate(self) -> None:
        _check_finite(self, "train")
        _check_at_least(self, "train", 1, "epochs", "batch_size", "eval_batch_size", "total_anneal_steps",
                        "encoder_epochs", "decoder_epochs", "patience", "num_threads", "nproc")
        if self.dist_timeout_s <= 0:
            raise ConfigError(f"train.dist_timeout_s must be > 0; got {self.dist_timeout_s}")
        _check_seed(self, "train")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0; got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0; got {self.weight_decay}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"train.lr_schedule must be constant or cosine; got {self.lr_schedule!r}")
        if self.beta_schedule not in ("anneal", "constant", "anneal_to_1"):
            raise ConfigError(
                f"train.beta_schedule must be anneal, constant or anneal_to_1; got {self.beta_schedule!r}")
        if not 0.0 <= self.anneal_cap <= 1.0:
            raise ConfigError(f"train.anneal_cap must be in [0, 1]; got {self.anneal_cap}")
        if not 0.0 <= self.beta <= 1.0:
            raise ConfigError(f"train.beta must be in [0, 1]; got {self.beta}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be auto, cpu or cuda; got {self.device!r}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"train.amp must be none, bf16 or fp16; got {self.amp!r}")


@dataclass
class Config:
    """Everything one pipeline run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> Config:
        for part in (self.data, self.split, self.model, self.train):
            part.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Config:
        d = d or {}
        return cls(
            data=from_dict(DataConfig, d.get("data", {})),
            split=from_dict(SplitConfig, d.get("split", {})),
            model=from_dict(ModelConfig, d.get("model", {})),
            train=from_dict(TrainConfig, d.get("train", {})),
        )


# Settings a model kind starts from before overrides: the published ones (RecVAE: its code's defaults for ML-20M).
PRESETS: dict[str, dict[str, Any]] = {
    "vae": {},
    "dae": {},
    "recvae": {
        "model.hidden_dims": [600] * 5,
        "model.activation": "swish",
        "train.epochs": 50,
        "train.lr": 5e-4,
        "train.beta_schedule": "constant",
        "train.beta": 0.005,  # RecVAE's gamma: a user's KL weight is 0.005 x their item count
        "train.beta_per_item": True,
    },
}


def preset(kind: str) -> Config:
    """The default Config for a model kind: the paper's for vae/dae, RecVAE's published settings for recvae."""
    if kind not in PRESETS:
        raise ConfigError(f"unknown model kind {kind!r}; known: {', '.join(PRESETS)}")
    return apply_overrides(Config(), {"model.kind": kind, **PRESETS[kind]})


T = typing.TypeVar("T")


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Convert a CLI/DAG string or JSON value to the dataclass field's type."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"tuple": tuple, "int": int, "float": float, "str": str, "bool": bool})  # noqa: S307 - our own annotations
    if value is None:
        return None
    text = str(value).strip()
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if text.lower() in ("none", "null", ""):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, name)
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else text.strip("[]()").replace(",", " ").split()
        try:
            return tuple(int(v) for v in items)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}: cannot read {value!r} as a list of integers") from exc
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if annotation is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(text)
            return int(float(text)) if isinstance(value, str) and "e" in text.lower() else int(value)
        if annotation is float:
            return float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"{name}: cannot read {value!r} as {annotation.__name__}") from exc
    return value


def from_dict(cls: type[T], d: dict[str, Any]) -> T:
    """Build a config dataclass from a dict, coercing strings and rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(names))}")
    section = cls.__name__.removesuffix("Config").lower()  # TrainConfig -> train, as the user writes it
    return cls(**{k: _coerce(v, hints[k], f"{section}.{k}") for k, v in d.items()})


def apply_overrides(config: Config, overrides: list[str] | dict[str, Any]) -> Config:
    """Apply `section.field=value` overrides (CLI `--set`, DAG params) to a copy of `config`."""
    items = overrides.items() if isinstance(overrides, dict) else (_split_override(o) for o in overrides)
    d = config.to_dict()
    for key, value in items:
        section, _, name = key.partition(".")
        if section not in d or not name:
            raise ConfigError(f"override {key!r}: expected SECTION.FIELD with SECTION in {', '.join(d)}")
        if name not in d[section]:
            close = difflib.get_close_matches(name, d[section], n=1)
            hint = f"; did you mean {section}.{close[0]}?" if close else ""
            raise ConfigError(f"override {key!r}: no field {name!r} in section {section}{hint} "
                              f"(known: {', '.join(sorted(d[section]))})")
        d[section][name] = value
    return Config.from_dict(d)


def split_assignment(text: str, expected: str = "NAME=VALUE") -> tuple[str, str]:
    """(name, value) of a `NAME=VALUE` argument, both stripped; ConfigError naming `expected` when there is no '='
    or no name. The one parser of the CLI's --set, --param and the environment's KIND=VALUE lists."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"expected {expected}, got {text!r}")
    return key.strip(), value.strip()


def _split_override(text: str) -> tuple[str, str]:
    return split_assignment(text, "SECTION.FIELD=VALUE")

"""The search space of `recvae tune`: each dimension a config field (or the depth and width of the hidden layers),
its default range per model kind, conditions between them, and the user's narrowing from a YAML or JSON file.

A space is a mapping `SECTION.FIELD -> Dimension` plus fixed values. The defaults cover what mattered in
bench/results/vae_tuning.md (depth, width, latent size, latent_activation, beta and its schedule, weight decay) and
what the literature varies (dropout, learning rate and its schedule, batch size, the prior; RecVAE's gamma and its
encoder/decoder update ratio); epochs are a fixed ceiling with early stopping on validation NDCG@100.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from recvae.config import Config, ConfigError, apply_overrides, preset

# not config fields: with WIDTH they make model.hidden_dims (0 layers: the input layer goes straight to the latent
# code, the one-layer model of bench/results/vae_tuning.md)
DEPTH = "model.n_hidden_layers"
WIDTH = "model.hidden_width"


class Suggests(Protocol):
    """What a dimension asks of an Optuna trial (optuna.Trial has these three)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class Dimension:
    """One searched value: a float or int range (`log` for a log scale), or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial: Suggests, name: str) -> Any:
        """The trial's value for this dimension."""
        if self.choices is not None:
            return trial.suggest_categorical(name, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)

    def corners(self) -> list[Any]:
        """The values a check of the space tries: the ends of a range, every choice."""
        if self.choices is not None:
            return list(self.choices)
        ends = [self.low, self.high]
        return [int(v) if self.integer and v is not None else v for v in ends]

    def to_dict(self) -> dict[str, Any]:
        """The form a space file writes this dimension in."""
        if self.choices is not None:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log, "int": self.integer}


def floats(low: float, high: float, log: bool = False) -> Dimension:
    return Dimension(low=low, high=high, log=log)


def ints(low: int, high: int, log: bool = False) -> Dimension:
    return Dimension(low=low, high=high, log=log, integer=True)


def choice(*options: Any) -> Dimension:
    return Dimension(choices=tuple(options))


# searched only when another value holds: key -> (the key it depends on, the values that switch it on)
CONDITIONS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "train.beta": ("train.beta_schedule", ("constant",)),
    "train.anneal_cap": ("train.beta_schedule", ("anneal",)),
    "train.total_anneal_steps": ("train.beta_schedule", ("anneal", "anneal_to_1")),
    "model.n_pseudo_inputs": ("model.prior", ("vamp",)),
}

_SHARED: dict[str, Dimension] = {
    "model.latent_dim": choice(64, 100, 200, 300),
    "model.dropout": floats(0.2, 0.7),
    "train.lr": floats(1e-4, 3e-3, log=True),
    "train.lr_schedule": choice("constant", "cosine"),
    "train.weight_decay": floats(1e-7, 1e-3, log=True),
    "train.batch_size": choice(128, 256, 500),
}
DEFAULT_DIMENSIONS: dict[str, dict[str, Dimension]] = {
    "vae": {
        DEPTH: ints(0, 2), WIDTH: choice(200, 400, 600), **_SHARED,
        "model.latent_activation": choice(False, True),
        "model.prior": choice("normal", "vamp"),
        "model.n_pseudo_inputs": choice(100, 300, 1000),
        "train.beta_schedule": choice("constant", "anneal", "anneal_to_1"),
        "train.beta": floats(0.005, 0.5, log=True),
        "train.anneal_cap": floats(0.05, 1.0, log=True),
        # in ML-20M's updates (rescaled to the data's, train.scale_anneal_to_data): beta reaches 1 after 43 to 855
        # of the paper's epochs, the cap at cap x that; the paper's 200,000 alone leaves beta near 0 in short trials
        "train.total_anneal_steps": ints(10_000, 200_000, log=True),
    },
    "dae": {DEPTH: ints(0, 2), WIDTH: choice(200, 400, 600), **_SHARED},
    "recvae": {
        DEPTH: ints(1, 5), WIDTH: choice(300, 600), **_SHARED,
        "train.lr": floats(1e-4, 2e-3, log=True),
        "train.beta": floats(0.001, 0.02, log=True),  # RecVAE's gamma: each user's KL weight per item
        "train.encoder_epochs": ints(1, 3),
        "train.decoder_epochs": ints(1, 2),
    },
}
# every trial's ceiling on epochs, stopped early when validation NDCG@100 has not improved for `patience` epochs
DEFAULT_FIXED: dict[str, dict[str, Any]] = {
    "vae": {"train.epochs": 200, "train.patience": 20},
    "dae": {"train.epochs": 200, "train.patience": 20},
    "recvae": {"train.epochs": 50, "train.patience": 10},
}


@dataclass
class SearchSpace:
    """The searched dimensions of one model kind and the values every trial shares."""

    kind: str
    dimensions: dict[str, Dimension]
    fixed: dict[str, Any] = field(default_factory=dict)
    source: str = "the default search space"  # named in errors: the space file, when there is one

    def suggest(self, trial: Suggests) -> dict[str, Any]:
        """One trial's overrides (config keys), conditional dimensions only where their condition holds."""
        values: dict[str, Any] = {}
        # the dimensions others depend on first, whatever order a space file gave them in
        for key in sorted(self.dimensions, key=lambda k: k in CONDITIONS):
            parent = CONDITIONS.get(key)
            if parent is not None and self._value(parent[0], values) not in parent[1]:
                continue
            values[key] = self.dimensions[key].suggest(trial, key)
        return self.overrides(values)

    def _value(self, key: str, values: Mapping[str, Any]) -> Any:
        """A key's value in this trial: searched, else fixed, else the kind's preset."""
        if key in values:
            return values[key]
        if key in self.fixed:
            return self.fixed[key]
        section, _, name = key.partition(".")
        return getattr(getattr(preset(self.kind), section), name)

    def overrides(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Searched values (trial params) plus the fixed ones as config overrides: depth and width become
        model.hidden_dims."""
        out = {**self.fixed, **values}
        depth, width = out.pop(DEPTH, None), out.pop(WIDTH, None)
        if depth is not None or width is not None:
            base = preset(self.kind).model.hidden_dims
            out["model.hidden_dims"] = [int(width or base[0])] * int(depth if depth is not None else len(base))
        return out

    def config(self, values: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Config:
        """The validated Config of one trial's values (on the kind's preset, then `extra`, then the values)."""
        return apply_overrides(preset(self.kind), {**(extra or {}), **self.overrides(values)}).validate()

    def check(self, extra: Mapping[str, Any] | None = None) -> None:
        """ConfigError naming the space's source and the entry when a fixed value, or one of a dimension's ends or
        choices, is not a valid setting."""
        try:
            self.config({}, extra)
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: fixed values: {exc}") from exc
        for key, dim in self.dimensions.items():
            for value in dim.corners():
                try:
                    self.config({key: value}, extra)
                except ConfigError as exc:
                    raise ConfigError(f"{self.source}: {key}={value!r}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The space as a space file would write it (what the parent run logs)."""
        return {**{k: d.to_dict() for k, d in self.dimensions.items()}, **self.fixed}


def default_space(kind: str) -> SearchSpace:
    """The kind's default search space."""
    if kind not in DEFAULT_DIMENSIONS:
        raise ConfigError(f"no search space for model kind {kind!r}; known: {', '.join(DEFAULT_DIMENSIONS)}")
    return SearchSpace(kind, dict(DEFAULT_DIMENSIONS[kind]), dict(DEFAULT_FIXED[kind]))


def parse_dimension(key: str, spec: Any, source: str) -> Dimension | None:
    """A space file's entry: a list (choices), {low, high[, log][, int]} (a range), {choices: [...]}; None for a
    fixed value (scalar), which the caller moves to the fixed values."""
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{source}: {key}: an empty list of choices")
        return choice(*spec)
    if isinstance(spec, dict):
        if set(spec) == {"choices"} and isinstance(spec["choices"], list) and spec["choices"]:
            return choice(*spec["choices"])
        unknown = set(spec) - {"low", "high", "log", "int"}
        if unknown or not {"low", "high"} <= set(spec):
            raise ConfigError(f"{source}: {key}: expected a list of choices or {{low, high[, log][, int]}}; got {spec}")
        low, high = spec["low"], spec["high"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)) or low > high:
            raise ConfigError(f"{source}: {key}: low and high must be numbers with low <= high; got {low}, {high}")
        if spec.get("log") and low <= 0:
            raise ConfigError(f"{source}: {key}: a log range needs low > 0; got {low}")
        integer = bool(spec.get("int", isinstance(low, int) and isinstance(high, int)))
        return Dimension(low=low, high=high, log=bool(spec.get("log", False)), integer=integer)
    return None


def load_space(kind: str, path: str | Path | Mapping[str, Any] | None) -> SearchSpace:
    """The kind's default space with a file's (or a mapping's) entries replacing or fixing its dimensions; an entry
    set to null removes a dimension (the preset's value is then used)."""
    space = default_space(kind)
    if path is None:
        return space
    source = "the search space" if isinstance(path, Mapping) else str(path)
    space.source = source
    entries = dict(path) if isinstance(path, Mapping) else _read_file(Path(path))
    known = set(Config().to_dict()["model"]) | set(Config().to_dict()["train"])
    for key, spec in entries.items():
        section, _, name = str(key).partition(".")
        if key not in (DEPTH, WIDTH) and (section not in ("model", "train") or name not in known):
            raise ConfigError(f"{source}: {key}: not a searchable field (model.* or train.*, or {DEPTH}, {WIDTH})")
        space.dimensions.pop(key, None)
        space.fixed.pop(key, None)
        if spec is None:
            continue
        dim = parse_dimension(key, spec, source)
        if dim is None:
            space.fixed[key] = spec
        else:
            space.dimensions[key] = dim
    return space


def space_from_dict(kind: str, entries: Mapping[str, Any]) -> SearchSpace:
    """The space a study recorded (`SearchSpace.to_dict`), exactly: no default dimension added back."""
    space = SearchSpace(kind, {}, {})
    for key, spec in entries.items():
        dim = parse_dimension(key, spec, "the study's space")
        if dim is None:
            space.fixed[key] = spec
        else:
            space.dimensions[key] = dim
    return space


def _read_file(path: Path) -> dict[str, Any]:
    """A YAML or JSON mapping; ConfigError naming the file (and line, where the parser says) otherwise."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the search space: {exc.strerror or exc}") from exc
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from exc
    except Exception as exc:  # yaml.YAMLError, whose mark gives the line
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"{path}: {where}not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a search space is a mapping of SECTION.FIELD to a range, choices or a value")
    return data

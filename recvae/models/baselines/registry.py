"""The baselines by kind: an unfitted one with checked parameters, or one fitted on a training matrix."""

from __future__ import annotations

import inspect
import math
from typing import Any

import scipy.sparse as sp

from recvae.config import ConfigError
from recvae.data.idmap import IdMap
from recvae.models.baselines.common import Baseline
from recvae.models.kinds import BASELINE_KINDS, LOADERS, load_class

# kind -> class, in the order recvae.models.kinds lists them
BASELINES: dict[str, type[Baseline]] = {kind: load_class(LOADERS[kind]) for kind in BASELINE_KINDS}


def make_baseline(kind: str, **params: Any) -> Baseline:
    """An unfitted baseline of `kind` ('popularity', 'ease', 'als') with `params`; ConfigError names a bad one."""
    if kind not in BASELINES:
        raise ConfigError(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")
    cls = BASELINES[kind]
    signature = inspect.signature(cls.__init__).parameters
    known = [p for p in signature if p != "self"]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"{kind}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(known) or 'none'}")
    for name, value in params.items():
        default = signature[name].default
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise ConfigError(f"{kind}: parameter {name} must be a finite number; got {value!r}")
    try:
        return cls(**params)
    except ValueError as exc:  # the constructor's own range checks
        raise ConfigError(str(exc)) from None


def fit_baseline(kind: str, train: sp.csr_matrix, *, items: IdMap | None = None, **params: Any) -> Baseline:
    """A baseline of `kind` fitted on `train`, with the item id map attached when given."""
    model = make_baseline(kind, **params).fit(train)
    if items is not None:
        if len(items) != model.n_items:
            raise ValueError(f"item id map has {len(items)} ids but the training matrix {model.n_items} columns")
        model.items = items
    return model

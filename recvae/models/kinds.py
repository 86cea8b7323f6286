"""Every model kind and its names, defined once: what the config, the loader, the CLI, the DAGs and MLflow read.

A neural model has three names: its `model.kind` in the config, the CLI's `--model` and the DAG's `model` param
('vae'), the kind its trained recommender is saved and tagged as ('multvae') and its MLflow run name ('mult-vae',
as before RecVAE). Baselines and the ensemble have one name for all three. This module imports nothing of the
package (classes are named by "module:Class" and imported by `load_class` when needed), so that the config, the CLI
and the DAG files read it without importing torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelKind:
    """One kind of model and every name it goes by."""

    name: str  # the recommender kind: saved in recommender.json, tagged in MLflow
    recommender: str  # "module:Class" that loads a saved model of this kind (imported only then)
    config_name: str | None = None  # model.kind, --model and the DAG's `model` param; neural kinds only
    network: str | None = None  # "module:Class" of the torch network; neural kinds only
    run_name: str | None = None  # the MLflow run name when it differs from `name`
    baseline: bool = False  # trained beside the challenger (`recvae baseline`, the pipeline's baselines)
    requirements: tuple[str, ...] = ()  # pip distributions its loading imports beyond the base ones


_NEURAL = "recvae.models.neural:MultVAERecommender"

KINDS: tuple[ModelKind, ...] = (
    ModelKind("multvae", _NEURAL, config_name="vae", network="recvae.models.vae:MultVAE", run_name="mult-vae"),
    ModelKind("multdae", _NEURAL, config_name="dae", network="recvae.models.vae:MultDAE", run_name="mult-dae"),
    ModelKind("recvae", _NEURAL, config_name="recvae", network="recvae.models.recvae_net:RecVAE"),
    ModelKind("popularity", "recvae.models.baselines.popularity:Popularity", baseline=True),
    ModelKind("als", "recvae.models.baselines.als:ALS", baseline=True, requirements=("implicit",)),
    ModelKind("ease", "recvae.models.baselines.ease:EASE", baseline=True),
    ModelKind("ensemble", "recvae.models.ensemble:Ensemble"),
)

# model.kind values (the CLI's --model choices, the DAG's enum), in the order the CLI lists them
MODEL_KINDS: tuple[str, ...] = tuple(k.config_name for k in KINDS if k.config_name is not None)
# model.kind -> the recommender kind its trained model is saved and registered as
RECOMMENDER_KINDS: dict[str, str] = {k.config_name: k.name for k in KINDS if k.config_name is not None}
# model.kind -> "module:Class" of its network
NETWORKS: dict[str, str] = {k.config_name: k.network for k in KINDS if k.config_name is not None and k.network}
# model.kind -> MLflow run name
RUN_NAMES: dict[str, str] = {k.config_name: k.run_name or k.name for k in KINDS if k.config_name is not None}
# baseline kinds, in the order the CLI and the pipeline train them
BASELINE_KINDS: tuple[str, ...] = tuple(k.name for k in KINDS if k.baseline)
# recommender kind -> "module:Class" of its loader
LOADERS: dict[str, str] = {k.name: k.recommender for k in KINDS}
# recommender kind -> extra pip distributions logged with such a model
EXTRA_REQUIREMENTS: dict[str, tuple[str, ...]] = {k.name: k.requirements for k in KINDS if k.requirements}


def load_class(target: str) -> Any:
    """The class named by a "module:Class" string, its module imported now."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)

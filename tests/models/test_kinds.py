"""The model kinds, defined once, and everything that reads them: loaders, networks, config, CLI and baselines."""

from __future__ import annotations

import argparse

import pytest

from recvae import cli
from recvae.config import PRESETS, ConfigError, ModelConfig
from recvae.models import kinds
from recvae.models.base import KINDS, Recommender
from recvae.models.baselines import BASELINES
from recvae.models.vae import LatentAutoencoder


def test_every_kind_names_a_loadable_class_of_that_kind() -> None:
    assert KINDS is kinds.LOADERS
    for kind in kinds.KINDS:
        cls = kinds.load_class(kind.recommender)
        assert issubclass(cls, Recommender)
        if kind.config_name is None:
            assert cls.kind == kind.name  # its saved recommender.json says the same name
        else:
            assert issubclass(kinds.load_class(kind.network), LatentAutoencoder)


def test_the_saved_names_of_earlier_versions_are_all_known() -> None:
    assert set(kinds.LOADERS) == {"multvae", "multdae", "recvae", "popularity", "ease", "als", "ensemble"}
    assert kinds.RECOMMENDER_KINDS == {"vae": "multvae", "dae": "multdae", "recvae": "recvae"}
    assert kinds.RUN_NAMES == {"vae": "mult-vae", "dae": "mult-dae", "recvae": "recvae"}


def test_config_presets_baselines_and_the_cli_follow_the_kinds() -> None:
    assert tuple(PRESETS) == kinds.MODEL_KINDS
    assert tuple(BASELINES) == kinds.BASELINE_KINDS == ("popularity", "als", "ease")
    for kind in kinds.MODEL_KINDS:
        ModelConfig(kind=kind, hidden_dims=(8,)).validate()
    with pytest.raises(ConfigError, match="model.kind must be 'vae', 'dae' or 'recvae'; got 'lightgcn'"):
        ModelConfig(kind="lightgcn").validate()
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command in ("train", "pipeline"):
        model = next(a for a in commands[command]._actions if a.dest == "model")
        assert tuple(model.choices) == kinds.MODEL_KINDS
    baseline = next(a for a in commands["baseline"]._actions if a.dest == "kind")
    assert tuple(baseline.choices) == kinds.BASELINE_KINDS

"""The search space: defaults per kind, conditions, the user's narrowing from YAML/JSON, and what a trial gets."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from recvae.config import ConfigError
from recvae.tuning.space import DEPTH, WIDTH, default_space, load_space, space_from_dict


def _ask(space, seed: int = 0) -> dict:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return space.suggest(study.ask())


@pytest.mark.parametrize("kind", ["vae", "dae", "recvae"])
def test_every_default_space_gives_valid_configs(kind: str) -> None:
    space = default_space(kind)
    space.check()
    for seed in range(20):
        overrides = _ask(space, seed)
        config = space.config({}, overrides)
        assert config.model.kind == kind
        assert config.train.patience is not None and config.train.epochs >= config.train.patience
        assert DEPTH not in overrides and WIDTH not in overrides and "model.hidden_dims" in overrides


def test_conditional_dimensions_follow_their_parent() -> None:
    space = default_space("vae")
    seen = []
    for seed in range(40):
        o = _ask(space, seed)
        seen.append(o)
        assert ("train.beta" in o) == (o["train.beta_schedule"] == "constant")
        assert ("train.anneal_cap" in o) == (o["train.beta_schedule"] == "anneal")
        # the anneal's length too: with a trial's epochs below the length, beta never reaches the cap it searched
        assert ("train.total_anneal_steps" in o) == (o["train.beta_schedule"] in ("anneal", "anneal_to_1"))
        assert ("model.n_pseudo_inputs" in o) == (o["model.prior"] == "vamp")
    assert {o["model.prior"] for o in seen} == {"normal", "vamp"}
    # RecVAE searches its gamma (train.beta) and its update ratio, never the VampPrior
    o = _ask(default_space("recvae"))
    assert {"train.beta", "train.encoder_epochs", "train.decoder_epochs"} <= set(o) and "model.prior" not in o


def test_a_space_file_narrows_fixes_and_drops(tmp_path: Path) -> None:
    f = tmp_path / "space.yaml"
    f.write_text("model.latent_dim: [100]\ntrain.lr: {low: 0.0005, high: 0.001, log: true}\n"
                 "train.epochs: 30\nmodel.prior: null\ntrain.beta_schedule: [constant]\n")
    space = load_space("vae", f)
    assert space.fixed["train.epochs"] == 30 and "model.prior" not in space.dimensions
    for seed in range(10):
        o = _ask(space, seed)
        assert o["model.latent_dim"] == 100 and 0.0005 <= o["train.lr"] <= 0.001 and o["train.epochs"] == 30
        assert "train.beta" in o  # the narrowed parent still switches its child on, listed after it or not
        assert "model.n_pseudo_inputs" not in o  # the preset's prior is the normal one
    # what a study records comes back exactly (JSON round trip, no default added back)
    again = space_from_dict("vae", json.loads(json.dumps(space.to_dict())))
    assert again.to_dict() == space.to_dict()


@pytest.mark.parametrize("text, match", [
    ("model.latent_dims: [1]\n", "model.latent_dims: not a searchable field"),
    ("data.threshold: [1]\n", "data.threshold: not a searchable field"),
    ("train.lr: {low: 0.1, high: 0.01}\n", "low <= high"),
    ("train.lr: {low: 0, high: 0.01, log: true}\n", "log range needs low > 0"),
    ("train.lr: []\n", "empty list"),
    ("[1, 2]\n", "a mapping"),
    ("train.lr: [0.1\n", "line"),
])
def test_bad_space_files_name_the_file_and_the_entry(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "space.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_space("vae", f)
    assert "space.yaml" in str(info.value)


def test_a_space_value_the_config_refuses_is_found_before_any_trial(tmp_path: Path) -> None:
    space = load_space("vae", {"model.dropout": [0.5, 1.5]})
    with pytest.raises(ConfigError, match=r"the search space: model.dropout=1.5: model.dropout must be in \[0, 1\)"):
        space.check()
    with pytest.raises(ConfigError, match="the search space: fixed values: train.epochs: cannot read 'five'"):
        load_space("vae", {"train.epochs": "five"}).check()
    with pytest.raises(ConfigError, match="model.prior=vamp is for kind 'vae'"):
        load_space("dae", {"model.prior": ["vamp"]}).check()


"""Config: coercion of CLI/DAG strings, overrides and their errors."""

from __future__ import annotations

import pytest

from recvae.config import Config, ConfigError, DataConfig, SplitConfig, apply_overrides, from_dict


def test_defaults_are_the_papers():
    c = Config().validate()
    assert (c.data.threshold, c.data.min_user_count) == (3.5, 5)
    assert (c.split.seed, c.split.test_prop, c.split.n_heldout_users) == (98765, 0.2, None)


@pytest.mark.parametrize(
    "override, check",
    [
        ("data.threshold=4", lambda c: c.data.threshold == 4.0),
        ("data.threshold=none", lambda c: c.data.threshold is None),
        ("data.lenient=yes", lambda c: c.data.lenient is True),
        ("data.lenient=0", lambda c: c.data.lenient is False),
        ("split.n_heldout_users=1000", lambda c: c.split.n_heldout_users == 1000),
        ("split.n_heldout_users=null", lambda c: c.split.n_heldout_users is None),
        ("train.epochs=2e2", lambda c: c.train.epochs == 200),
        ("model.hidden_dims=600,300", lambda c: c.model.hidden_dims == (600, 300)),
        ("split.kind=temporal", lambda c: c.split.kind == "temporal"),
    ],
)
def test_overrides_are_coerced(override, check):
    c = apply_overrides(Config(), [override])
    assert check(c)
    c.validate()


def test_dict_overrides_and_original_untouched():
    base = Config()
    c = apply_overrides(base, {"data.min_user_count": "3", "split.seed": 7})
    assert (c.data.min_user_count, c.split.seed) == (3, 7)
    assert (base.data.min_user_count, base.split.seed) == (5, 98765)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.threshold=abc", "data.threshold: cannot read 'abc' as float"),
        ("train.epochs=1.5", "train.epochs: cannot read"),
        ("data.lenient=maybe", "data.lenient: cannot read 'maybe' as bool"),
        ("data.treshold=3", "no field 'treshold' in section data; did you mean data.threshold?"),
        ("nosection.x=1", "expected SECTION.FIELD with SECTION in"),
        ("data", "expected SECTION.FIELD=VALUE"),
        # regression: a bad list used to escape as a bare ValueError
        ("model.hidden_dims=a,b", "model.hidden_dims: cannot read 'a,b' as a list of integers"),
    ],
)
def test_override_errors_are_config_errors(override, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), [override])
    assert message in str(info.value)


@pytest.mark.parametrize(
    "cfg, message",
    [
        (DataConfig(duplicates="sum"), "duplicates must be one of"),
        (DataConfig(min_user_count=-1), "must be >= 0"),
        (SplitConfig(kind="random"), "split kind"),
        (SplitConfig(test_prop=1.0), "test_prop"),
        (SplitConfig(n_heldout_users=0), "n_heldout_users"),
    ],
)
def test_validate_rejects_bad_values(cfg, message):
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_round_trip_through_dict():
    c = apply_overrides(Config(), ["data.threshold=none", "split.kind=temporal"])
    assert Config.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown SplitConfig"):
        from_dict(SplitConfig, {"sed": 1})


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.lr=nan", "train.lr"),  # NaN slips through `lr <= 0`
        ("train.lr=inf", "train.lr"),
        ("train.lr=0", "train.lr"),
        ("train.lr=-1e-3", "train.lr"),
        ("train.weight_decay=nan", "train.weight_decay"),
        ("train.weight_decay=inf", "train.weight_decay"),
        ("train.weight_decay=-1", "train.weight_decay"),
        ("train.beta=nan", "train.beta"),
        ("train.anneal_cap=-inf", "train.anneal_cap"),
        ("train.epochs=0", "train.epochs"),
        ("train.epochs=-1", "train.epochs"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.eval_batch_size=-5", "train.eval_batch_size"),
        ("train.total_anneal_steps=0", "train.total_anneal_steps"),
        ("train.num_threads=0", "train.num_threads"),
        ("train.seed=-1", "train.seed"),
        ("train.patience=0", "train.patience"),
        ("model.dropout=1", "model.dropout"),
        ("model.dropout=-0.1", "model.dropout"),
        ("model.dropout=nan", "model.dropout"),
        ("model.latent_dim=0", "model.latent_dim"),
        ("model.hidden_dims=600,-1", "model.hidden_dims"),
        ("data.threshold=inf", "data.threshold"),
        ("data.threshold=nan", "data.threshold"),
        ("data.min_user_count=-1", "data.min_user_count"),
        ("split.test_prop=nan", "split.test_prop"),
        ("split.temporal_test_prop=inf", "split.temporal_test_prop"),
        ("split.n_heldout_users=0", "split.n_heldout_users"),
        ("split.seed=-3", "split.seed"),
    ],
)
def test_validate_names_the_field_of_a_non_finite_or_meaningless_value(override, field):
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), [override]).validate()
    assert str(info.value).startswith(field), str(info.value)


def test_every_float_field_is_checked_for_finiteness():
    """A float field added later is covered too: validate() walks the fields rather than listing them."""
    import dataclasses
    import math

    from recvae.config import ModelConfig, TrainConfig

    for part in (DataConfig(), SplitConfig(), ModelConfig(), TrainConfig()):
        for f in dataclasses.fields(part):
            if isinstance(getattr(part, f.name), float):
                for bad in (math.nan, math.inf, -math.inf):
                    broken = dataclasses.replace(part, **{f.name: bad})
                    with pytest.raises(ConfigError, match=f.name):
                        broken.validate()

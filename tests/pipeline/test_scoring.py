"""The scoring shard plan: the shard count follows the users (`users_per_shard`), or an explicit `n_shards`."""

from __future__ import annotations

import logging

import pytest

from recvae.config import ConfigError
from recvae.pipeline import plan_shards
from recvae.pipeline.scoring import DEFAULT_USERS_PER_SHARD, MAX_SHARDS


@pytest.mark.parametrize(("users", "per_shard", "shards"), [
    (0, 10, 1),  # nobody to score still makes one (empty) shard: publish expects at least one
    (1, 10, 1),
    (10, 10, 1),
    (11, 10, 2),
    (138_493, 50_000, 3),  # ML-20M's users at the default
    (10_000_000, 50_000, 200),  # ten million users: two hundred small tasks
])
def test_shard_count_follows_the_users(users, per_shard, shards):
    assert plan_shards(users, users_per_shard=per_shard) == shards


def test_default_users_per_shard():
    assert plan_shards(DEFAULT_USERS_PER_SHARD + 1) == 2


def test_shard_count_is_capped_at_airflow_map_length(caplog):
    with caplog.at_level(logging.WARNING, logger="recvae.pipeline.scoring"):
        assert plan_shards(100_000_000, users_per_shard=1_000) == MAX_SHARDS == 1024
    assert "capped at 1024" in caplog.text
    assert plan_shards(100, users_per_shard=1, max_shards=8) == 8


def test_explicit_n_shards_wins():
    assert plan_shards(10_000_000, users_per_shard=50_000, n_shards=4) == 4
    assert plan_shards(3, n_shards=7) == 7  # more shards than users: some shards are empty, which is allowed


@pytest.mark.parametrize("kwargs", [{"users_per_shard": 0}, {"users_per_shard": -5}, {"n_shards": 0}])
def test_nonsense_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        plan_shards(100, **kwargs)

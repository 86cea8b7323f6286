"""The memory estimate checked before training allocates anything."""

from __future__ import annotations

from recvae.config import Config, ModelConfig, TrainConfig
from recvae.training.memory import training_memory_bytes


def config() -> Config:
    return Config(model=ModelConfig(hidden_dims=(32,), latent_dim=16), train=TrainConfig(batch_size=32))


def test_training_memory_estimate_counts_weights_gradients_and_adam_moments() -> None:
    c = config()
    # I-32-16(x2 for mu and logvar)-32-I with I = 100 items: weights and biases
    n = (100 * 32 + 32) + (32 * 32 + 32) + (16 * 32 + 32) + (32 * 100 + 100)
    estimate = training_memory_bytes(c, 100, n_users=10)
    assert 5 * 4 * n <= estimate < 5 * 4 * n + 10 * 100 * 4 * 8

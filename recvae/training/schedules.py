"""The KL weight (beta) and learning-rate schedules, per update."""

from __future__ import annotations

import dataclasses
import math

from recvae.config import TrainConfig


def beta_at(step: int, config: TrainConfig) -> float:
    """KL weight of update number `step` (0-based): linear to the cap, constant, or linear to 1 ('anneal_to_1')."""
    if config.beta_schedule == "constant":
        return float(config.beta)
    cap = 1.0 if config.beta_schedule == "anneal_to_1" else config.anneal_cap
    return float(min(cap, step / config.total_anneal_steps))


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Learning rate of update number `step` (0-based) of `total_steps`: constant, or cosine from lr to 0."""
    if config.lr_schedule == "constant":
        return float(config.lr)
    return float(0.5 * config.lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)))


def paper_equivalent_anneal_steps(n_train_users: int, batch_size: int = 500, paper_steps: int = 200_000) -> int:
    """total_anneal_steps that puts beta where the paper's `paper_steps` put it on ML-20M, at the same epoch.

    On ML-20M (116,677 training users, batch 500: 234 updates per epoch) beta reaches 0.2 at epoch ~171 of 200;
    on a smaller data set the constant 200,000 leaves beta near 0 for the whole run.
    """
    ml20m_steps_per_epoch = math.ceil(116_677 / 500)
    steps_per_epoch = math.ceil(n_train_users / batch_size)
    return max(1, round(paper_steps * steps_per_epoch / ml20m_steps_per_epoch))


def effective_anneal_steps(config: TrainConfig, n_train_users: int) -> int:
    """The anneal length used on this data: rescaled from ML-20M's updates per epoch unless scaling is off."""
    if not config.scale_anneal_to_data:
        return config.total_anneal_steps
    return paper_equivalent_anneal_steps(n_train_users, config.batch_size, config.total_anneal_steps)


def on_data(config: TrainConfig, n_train_users: int) -> TrainConfig:
    """`config` with the anneal length this data set gets (`effective_anneal_steps`), for `beta_at`."""
    steps = effective_anneal_steps(config, n_train_users)
    return dataclasses.replace(config, total_anneal_steps=steps, scale_anneal_to_data=False)

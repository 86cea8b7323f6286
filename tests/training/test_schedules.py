"""The beta and learning-rate schedules, per update."""

from __future__ import annotations

import math

import pytest

from recvae.config import TrainConfig
from recvae.training.schedules import beta_at, lr_at, paper_equivalent_anneal_steps


def test_beta_schedules() -> None:
    anneal = TrainConfig(beta_schedule="anneal", total_anneal_steps=200_000, anneal_cap=0.2)
    assert beta_at(0, anneal) == 0.0
    assert beta_at(20_000, anneal) == pytest.approx(0.1)
    assert beta_at(40_000, anneal) == pytest.approx(0.2)
    assert beta_at(1_000_000, anneal) == pytest.approx(0.2)
    to_one = TrainConfig(beta_schedule="anneal_to_1", total_anneal_steps=1_000, anneal_cap=0.2)
    assert beta_at(500, to_one) == pytest.approx(0.5)
    assert beta_at(5_000, to_one) == 1.0
    constant = TrainConfig(beta_schedule="constant", beta=0.3)
    assert beta_at(0, constant) == beta_at(10**6, constant) == 0.3


def test_lr_schedules() -> None:
    assert lr_at(0, 100, TrainConfig(lr=1e-3)) == lr_at(99, 100, TrainConfig(lr=1e-3)) == 1e-3
    cosine = TrainConfig(lr=1e-3, lr_schedule="cosine")
    assert lr_at(0, 100, cosine) == pytest.approx(1e-3)
    assert lr_at(50, 100, cosine) == pytest.approx(5e-4)
    assert lr_at(25, 100, cosine) == pytest.approx(1e-3 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr_at(100, 100, cosine) == pytest.approx(0.0, abs=1e-12)
    values = [lr_at(s, 100, cosine) for s in range(101)]
    assert all(a > b for a, b in zip(values[:-1], values[1:], strict=True))


def test_paper_equivalent_anneal_steps() -> None:
    assert paper_equivalent_anneal_steps(116_677, 500) == 200_000  # ML-20M: the paper's constant
    steps = paper_equivalent_anneal_steps(4_034, 500)  # ML-1M pro_sg: 9 updates per epoch
    assert steps == round(200_000 * 9 / 234)
    c = TrainConfig(total_anneal_steps=steps)
    assert beta_at(170 * 9, c) < 0.2 <= beta_at(172 * 9, c)  # the cap is reached at epoch ~171 as on ML-20M

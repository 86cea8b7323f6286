"""What training refuses: inputs that would fail or mean nothing (before any work), and a diverging run."""

from __future__ import annotations

import math
from pathlib import Path

import scipy.sparse as sp
import torch

from recvae.config import ConfigError, TrainConfig
from recvae.models.vae import LatentAutoencoder

SELECT_ON = ("validation", "test", None)


class NonFiniteLossError(ConfigError):
    """Training diverged (a NaN/inf loss or weights): the settings, most often train.lr, do not suit this data."""


def check_select_on(select_on: str | None) -> None:
    """ConfigError unless `select_on` is 'validation', 'test' or None."""
    if select_on not in SELECT_ON:
        raise ConfigError(f"select_on must be 'validation', 'test' or None; got {select_on!r}")


def check_inputs(
    train_matrix: sp.spmatrix,
    validation: tuple[sp.spmatrix, sp.spmatrix] | None,
    tc: TrainConfig,
    select_on: str | None,
    out_dir: str | Path | None,
    resume: bool,
) -> None:
    """ConfigError for anything that would fail or be meaningless, before any work starts."""
    check_select_on(select_on)
    if not sp.issparse(train_matrix):
        raise ConfigError(f"the training matrix must be a scipy sparse matrix; got {type(train_matrix).__name__}")
    if train_matrix.shape[0] == 0 or train_matrix.nnz == 0:
        raise ConfigError(f"the training matrix {train_matrix.shape} has no interactions")
    if select_on is not None and validation is None:
        raise ConfigError(f"select_on={select_on!r} needs (fold-in, held-out) matrices; none were given")
    if validation is not None:
        _check_validation(train_matrix, validation, select_on)
    else:
        if tc.patience is not None:
            raise ConfigError("train.patience (early stopping) needs evaluation; use select_on='validation' or 'test'")
        if tc.beta_schedule == "anneal_to_1":
            raise ConfigError("beta_schedule 'anneal_to_1' picks beta by evaluation; "
                              "use select_on='validation' or 'test'")
    if resume and out_dir is None:
        raise ConfigError("resume=True needs out_dir (where last.pt is)")
    if tc.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available")


def _check_validation(train_matrix: sp.spmatrix, validation: tuple[sp.spmatrix, sp.spmatrix],
                      select_on: str | None) -> None:
    """ConfigError unless the (fold-in, held-out) pair has users and matches the training matrix's items."""
    foldin, heldout = validation
    if foldin.shape[0] == 0:
        raise ConfigError(f"no {select_on or 'validation'} users to evaluate on; "
                          "use select_on=None to train without evaluation")
    for name, m in (("fold-in", foldin), ("held-out", heldout)):
        if m.shape[1] != train_matrix.shape[1]:
            raise ConfigError(f"{name} matrix has {m.shape[1]} items; the training matrix has {train_matrix.shape[1]}")
    if foldin.shape != heldout.shape:
        raise ConfigError(f"fold-in {foldin.shape} and held-out {heldout.shape} shapes differ")


def weight_sum(module: LatentAutoencoder) -> torch.Tensor:
    """Sum of every weight, as a 1-element tensor: finite unless a weight is NaN or inf."""
    return torch.stack([p.detach().float().sum() for p in module.parameters()]).sum().reshape(1)


def stop_if_diverged(epoch: int, means: list[float], weight_sum: float, batch_losses: list[torch.Tensor],
                      tc: TrainConfig) -> None:
    """NonFiniteLossError when the epoch's loss or the weights are NaN/inf, naming the first bad batch."""
    if all(math.isfinite(v) for v in means) and math.isfinite(weight_sum):
        return
    losses = torch.stack(batch_losses).float().cpu()
    bad = torch.nonzero(~torch.isfinite(losses)).flatten().tolist()
    advice = f"nothing of epoch {epoch} was saved; lower train.lr (now {tc.lr:g}) or check the data"
    if bad:
        where = f"at epoch {epoch}, batch {bad[0] + 1} of {len(losses)}"
        raise NonFiniteLossError(f"training diverged: the loss is {losses[bad[0]].item()} {where}; {advice}")
    raise NonFiniteLossError(f"training diverged: the weights became nan or inf in epoch {epoch} "
                             f"(every batch's loss was finite); {advice}")

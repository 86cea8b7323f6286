"""How a model is updated: one optimizer step on a batch, and the passes over the training users an epoch makes.

Mult-VAE and Mult-DAE update every parameter in one pass an epoch (`JointUpdates`). RecVAE alternates: passes that
update the encoder only, then passes that update the decoder only, its composite prior taking the encoder's weights
in between (`AlternatingUpdates`). The epoch loop only iterates over `passes()`, whatever the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from recvae.config import TrainConfig
from recvae.models.amp import autocast
from recvae.models.recvae_net import RecVAE
from recvae.models.sparse import CSRBatch
from recvae.models.vae import LatentAutoencoder, Likelihood, Loss, negative_elbo
from recvae.training.distributed import Ranks, sum_gradients

Forward = Callable[[CSRBatch], tuple[torch.Tensor, torch.Tensor]]


class JointUpdates:
    """Every parameter updated in one pass over the training users an epoch (Mult-VAE, Mult-DAE)."""

    n_passes = 1

    def passes(self) -> Iterator[None]:
        """One pass; nothing to prepare."""
        yield


class AlternatingUpdates:
    """RecVAE: `encoder_passes` passes updating the encoder, then `decoder_passes` updating the decoder."""

    def __init__(self, module: RecVAE, encoder_passes: int, decoder_passes: int) -> None:
        self.module = module
        self.phases = ["encoder"] * encoder_passes + ["decoder"] * decoder_passes
        self.n_passes = len(self.phases)

    def passes(self) -> Iterator[None]:
        """Freeze the other half before each pass; after the epoch, everything is trainable again."""
        for phase in self.phases:
            if phase == "decoder" and self.module.phase == "encoder":
                self.module.update_prior()  # the prior follows the encoder after each encoder phase
            self.module.set_phase(phase)
            yield
        self.module.set_phase(None)


def updates_for(module: LatentAutoencoder, tc: TrainConfig) -> JointUpdates | AlternatingUpdates:
    """The epoch's passes for this model."""
    if isinstance(module, RecVAE):
        return AlternatingUpdates(module, tc.encoder_epochs, tc.decoder_epochs)
    return JointUpdates()


@dataclass
class UpdateStep:
    """One optimizer update on a batch: the negative ELBO, the reference's L2 term, backward and Adam.

    `forward` and `nll` are the module's forward pass and likelihood, or torch.compile'd versions of them
    (`build`): the module itself is never altered, so the trained model is a plain one.

    Over several ranks (`ranks.world > 1`) each one backpropagates its share of the global batch's objective and the
    gradients are summed before Adam: the update is the one-process update of the global batch. A manual all_reduce,
    not DistributedDataParallel: RecVAE freezes half the network pass by pass (DDP fixes the parameters it reduces
    when wrapped), the last batch's unequal shares must be weighted by their users (DDP averages ranks equally), and
    the step calls the module's forward and likelihood directly (compiled or not), not a wrapper's forward.
    """

    module: LatentAutoencoder
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    device: torch.device
    amp_dtype: torch.dtype | None
    tc: TrainConfig
    forward: Forward
    nll: Likelihood
    ranks: Ranks = Ranks()

    @classmethod
    def build(cls, module: LatentAutoencoder, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
              device: torch.device, amp_dtype: torch.dtype | None, tc: TrainConfig,
              ranks: Ranks = Ranks()) -> UpdateStep:  # noqa: B008 - frozen, so sharing the default is safe
        """A step through torch.compile when `tc.compile`, else through the module's own methods."""
        forward: Forward = module.forward
        nll = module.nll
        if tc.compile:
            forward = torch.compile(module.forward, dynamic=True)
            nll = torch.compile(module.nll, dynamic=True)
        return cls(module, optimizer, scaler, device, amp_dtype, tc, forward, nll, ranks)

    def __call__(self, batch: CSRBatch, beta: float, lr: float, share: float = 1.0) -> Loss:
        """Update the weights on `batch` with KL weight `beta` and learning rate `lr`; the loss parts, detached.
        `share`: this rank's rows over the global batch's (1 in one process)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        parts = self._loss(batch, beta)
        loss, objective = parts.loss, parts.loss
        if self.tc.weight_decay > 0:
            # the reference's L2 term: lam * sum of squared weights (biases excluded)
            penalty = self.tc.weight_decay * sum(w.pow(2).sum() for w in self.module.weights())
            loss = loss + penalty
            objective = loss if self.ranks.world == 1 else objective * share + penalty / self.ranks.world
        elif self.ranks.world > 1:
            objective = objective * share  # the users' mean over the global batch is the shares' weighted sum
        self.optimizer.zero_grad(set_to_none=True)
        if objective.requires_grad:  # not on a rank without users in the last batch (and no L2 term)
            (self.scaler.scale(objective) if self.scaler is not None else objective).backward()
        if self.ranks.world > 1:
            sum_gradients([p for p in self.module.parameters() if p.requires_grad], self.ranks)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()  # parameters frozen in this pass have no gradient and are skipped
        return Loss(loss.detach(), parts.neg_ll.detach(), parts.kl.detach())

    def _loss(self, batch: CSRBatch, beta: float) -> Loss:
        """The negative ELBO's parts on `batch`; zeros for an empty batch (a rank with no user in the last one)."""
        if batch.n_rows == 0:
            zero = torch.zeros((), device=self.device)
            return Loss(zero, zero, zero)
        with autocast(self.device, self.amp_dtype):
            logits, kl = self.forward(batch)
            return negative_elbo(logits, kl, batch, beta, self.tc.beta_per_item, self.nll)

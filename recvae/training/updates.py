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
    """

    module: LatentAutoencoder
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    device: torch.device
    amp_dtype: torch.dtype | None
    tc: TrainConfig
    forward: Forward
    nll: Likelihood

    @classmethod
    def build(cls, module: LatentAutoencoder, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                 device: torch.device, amp_dtype: torch.dtype | None, tc: TrainConfig) -> UpdateStep:
        """A step through torch.compile when `tc.compile`, else through the module's own methods."""
        forward: Forward = module.forward
        nll = module.nll
        if tc.compile:
            forward = torch.compile(module.forward, dynamic=True)
            nll = torch.compile(module.nll, dynamic=True)
        return cls(module, optimizer, scaler, device, amp_dtype, tc, forward, nll)

    def __call__(self, batch: CSRBatch, beta: float, lr: float) -> Loss:
        """Update the weights on `batch` with KL weight `beta` and learning rate `lr`; the loss parts, detached."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.amp_dtype):
            logits, kl = self.forward(batch)
            parts = negative_elbo(logits, kl, batch, beta, self.tc.beta_per_item, self.nll)
        loss = parts.loss
        if self.tc.weight_decay > 0:
            # the reference's L2 term: lam * sum of squared weights (biases excluded)
            loss = loss + self.tc.weight_decay * sum(w.pow(2).sum() for w in self.module.weights())
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()  # parameters frozen in this pass have no gradient and are skipped
        return Loss(loss.detach(), parts.neg_ll.detach(), parts.kl.detach())

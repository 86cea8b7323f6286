"""Mult-VAE and Mult-DAE (Liang et al., WWW 2018; dawenl/vae_cf): the networks and their loss.

A user's click row x_u is L2-normalized and dropped out, encoded to q(z|x_u) = N(mu, diag(sigma^2)) (the DAE: a
point code) and decoded to logits whose softmax is the multinomial pi(z) over the items. Training minimises the
negative ELBO, -E_q[log Mult(x_u; pi(z))] + beta KL(q(z|x_u) || N(0, I)), with one reparameterized sample of z;
scoring decodes the mean of q. `LatentAutoencoder` is what these networks share with RecVAE (recvae_net.py).

The prior is N(0, I) as in the paper, or (`prior="vamp"`) the VampPrior of Tomczak & Welling (AISTATS 2018):
p(z) = 1/K sum_k q(z|u_k), the mixture of the encoder's posteriors at K learned pseudo-inputs u_k; its KL has no
closed form and is estimated at the sampled z, log q(z|x) - log p(z).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from recvae.config import PRIORS
from recvae.models.sparse import CSRBatch, SparseLinear, normalized_dropout

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh, "relu": F.relu, "sigmoid": torch.sigmoid, "elu": F.elu, "selu": F.selu, "swish": F.silu,
}
Likelihood = Callable[[torch.Tensor, CSRBatch], torch.Tensor]
WeightedLayer = nn.Linear | SparseLinear  # a layer with a weight matrix and a bias


class Loss(NamedTuple):
    """The objective of one batch and its parts (per-user averages)."""

    loss: torch.Tensor
    neg_ll: torch.Tensor
    kl: torch.Tensor


def multinomial_nll(logits: torch.Tensor, x: CSRBatch) -> torch.Tensor:
    """-sum_i x_ui log softmax(logits_u)_i averaged over users, gathered at the non-zeros only."""
    # one fused kernel each way: float32 inside, bfloat16 logits in and their gradient out under bf16 autocast
    log_pi = torch.log_softmax(logits, dim=1, dtype=torch.float32)
    ll = torch.sum(x.values * log_pi[x.rows, x.indices])
    return -ll / max(x.n_rows, 1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per user, in closed form."""
    return 0.5 * torch.sum(-logvar + torch.exp(logvar) + mu.pow(2) - 1.0, dim=1)


LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) per row, summed over the latent dimensions."""
    return -0.5 * torch.sum(LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar), dim=1)


def mixture_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log (1/K sum_k N(z; mu_k, diag(exp(logvar_k)))) for each row of z (B, d) and K components (K, d).

    The squared distances are expanded into matmuls, so no (B, K, d) tensor is built; in float32 even under
    autocast, whose bf16 matmuls would cost the expansion's cancellation its precision."""
    with torch.autocast(z.device.type, enabled=False):
        return _mixture_log_density(z.float(), mu.float(), logvar.float())


def _mixture_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    precision = torch.exp(-logvar)  # (K, d)
    quad = (z * z) @ precision.T - 2.0 * z @ (mu * precision).T + torch.sum(mu * mu * precision, dim=1)
    log_k = -0.5 * (LOG_2PI * z.shape[1] + torch.sum(logvar, dim=1) + quad)  # (B, K)
    return torch.logsumexp(log_k, dim=1) - math.log(mu.shape[0])


class VampPrior(nn.Module):
    """K learned pseudo-inputs over the items; the prior is the mixture of the encoder's posteriors at them."""

    def __init__(self, n_items: int, n_pseudo_inputs: int) -> None:
        super().__init__()
        if n_pseudo_inputs < 1:
            raise ValueError(f"n_pseudo_inputs must be >= 1; got {n_pseudo_inputs}")
        self.pseudo_inputs = nn.Parameter(torch.empty(n_pseudo_inputs, n_items))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small positive values, as click rows are (the encoder sees them L2-normalized, as it sees users)."""
        nn.init.uniform_(self.pseudo_inputs, 0.0, 0.01)

    def inputs(self) -> torch.Tensor:
        """The pseudo-inputs L2-normalized like a user's row, ready for the encoder's dense path."""
        return F.normalize(self.pseudo_inputs, dim=1)


def negative_elbo(logits: torch.Tensor, kl: torch.Tensor, x: CSRBatch, beta: float, beta_per_item: bool = False,
                  nll: Likelihood = multinomial_nll) -> Loss:
    """-(log-likelihood of x) + beta * KL, averaged over the users of the batch.

    With `beta_per_item` (RecVAE, Shenbin et al. 2020) a user's KL weight is beta x the user's item count,
    so the prior's pull keeps pace with the likelihood, which is a sum over the user's items.
    `Loss.kl` is the plain per-user mean KL either way.
    """
    neg_ll = nll(logits, x)
    kl = kl.float()
    if beta_per_item:
        counts = torch.zeros(x.n_rows, device=kl.device).index_add_(0, x.rows, x.values.float())
        penalty = beta * (kl * counts).mean()
    else:
        penalty = beta * kl.mean()
    return Loss(neg_ll + penalty, neg_ll, kl.mean())


class LatentAutoencoder(nn.Module):
    """What Mult-VAE, Mult-DAE and RecVAE share: the constructor arguments, q(z|x) sampled by reparameterization,
    scoring by the mean of q, and the negative ELBO as the loss. A subclass supplies encode, decode and kl."""

    variational = True
    # the likelihood, a class attribute: Liang et al. compare the multinomial with Gaussian and logistic ones
    nll: Likelihood = staticmethod(multinomial_nll)

    def __init__(self, n_items: int, hidden_dims: Sequence[int], latent_dim: int, activation: str, dropout: float,
                 latent_activation: bool = False) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1; got {n_items}")
        self.n_items = int(n_items)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.latent_dim = int(latent_dim)
        self.activation = activation
        self.dropout = float(dropout)
        self.latent_activation = bool(latent_activation)
        self.act = ACTIVATIONS[activation]

    def model_args(self) -> dict[str, Any]:
        """Constructor arguments (plain types): enough to rebuild the module before loading its weights."""
        return {
            "n_items": self.n_items,
            "hidden_dims": list(self.hidden_dims),
            "latent_dim": self.latent_dim,
            "activation": self.activation,
            "dropout": self.dropout,
            "latent_activation": self.latent_activation,
        }

    @abstractmethod
    def weighted_layers(self) -> list[WeightedLayer]:
        """The trained layers with a weight and a bias (not layer norms), in initialisation order."""

    def weights(self) -> list[torch.Tensor]:
        """Weight matrices (not biases): what the reference's L2 term `lam` penalises."""
        return [layer.weight for layer in self.weighted_layers()]

    def reset_parameters(self) -> None:
        """Xavier weights and biases from N(0, 0.001^2) truncated at 2 sd, as the reference notebook."""
        for layer in self.weighted_layers():
            nn.init.xavier_uniform_(layer.weight)
            nn.init.trunc_normal_(layer.bias, std=0.001, a=-0.002, b=0.002)

    @abstractmethod
    def encode(self, x: CSRBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, log-variance) of q(z|x); the log-variance is None for a deterministic code."""

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unnormalised logits over all items; their softmax is the multinomial pi(z)."""

    @abstractmethod
    def kl(self, x: CSRBatch, mu: torch.Tensor, logvar: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || prior) per user (exact or estimated at the sample z)."""

    def sample(self, mu: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
        """z = mu + eps * sigma in training (reparameterization), the mean at inference."""
        if logvar is None or not self.training:
            return mu
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: CSRBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, KL per user) for a batch of user rows."""
        mu, logvar = self.encode(x)
        z = self.sample(mu, logvar)
        return self.decode(z), self.kl(x, mu, logvar, z)

    def predict(self, x: CSRBatch) -> torch.Tensor:
        """Logits decoded from the mean of q(z|x) (no sampling, no KL): what scoring uses."""
        return self.decode(self.encode(x)[0])

    def loss(self, x: CSRBatch, beta: float, beta_per_item: bool = False) -> Loss:
        """The negative ELBO of a batch (see `negative_elbo`)."""
        logits, kl = self(x)
        return negative_elbo(logits, kl, x, beta, beta_per_item, self.nll)


class MultVAE(LatentAutoencoder):
    """Mult-VAE^PR: encoder [I-600-200] tanh to a Gaussian q(z|x), decoder [200-600-I], multinomial likelihood.

    With `latent_activation` (not in the paper) the decoder reads activation(z), as the Mult-DAE's reads its code.
    """

    def __init__(
        self,
        n_items: int,
        hidden_dims: Sequence[int] = (600,),
        latent_dim: int = 200,
        activation: str = "tanh",
        dropout: float = 0.5,
        latent_activation: bool = False,
        prior: str = "normal",
        n_pseudo_inputs: int = 500,
    ) -> None:
        super().__init__(n_items, hidden_dims, latent_dim, activation, dropout, latent_activation)
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}; got {prior!r}")
        if prior == "vamp" and not self.variational:
            raise ValueError("the VampPrior is a prior of the variational model; the Mult-DAE has none")
        self.prior = prior
        self.n_pseudo_inputs = int(n_pseudo_inputs)
        q_dims = [self.n_items, *self.hidden_dims, self.latent_dim]
        p_dims = q_dims[::-1]
        # the last encoder layer outputs the mean and the log-variance side by side
        q_out = [*q_dims[1:-1], self.latent_dim * (2 if self.variational else 1)]
        self.input_layer = SparseLinear(q_dims[0], q_out[0])
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(q_out[:-1], q_out[1:], strict=True))
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(p_dims[:-1], p_dims[1:], strict=True))
        self.vamp = VampPrior(self.n_items, self.n_pseudo_inputs) if prior == "vamp" else None
        self.reset_parameters()

    def model_args(self) -> dict[str, Any]:
        """The shared arguments plus the prior (and its pseudo-input count when it has them)."""
        args = {**super().model_args(), "prior": self.prior}
        if self.vamp is not None:
            args["n_pseudo_inputs"] = self.n_pseudo_inputs
        return args

    def reset_parameters(self) -> None:
        """The layers as Mult-VAE's; the pseudo-inputs small and positive."""
        super().reset_parameters()
        if getattr(self, "vamp", None) is not None:
            self.vamp.reset_parameters()  # type: ignore[union-attr]

    def weighted_layers(self) -> list[WeightedLayer]:
        """The sparse input layer, the encoder's and the decoder's layers."""
        return [self.input_layer, *self.encoder, *self.decoder]

    def encode(self, x: CSRBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, log-variance) of q(z|x); the log-variance is None for the DAE."""
        return self._encode_hidden(self.input_layer(x, normalized_dropout(x, self.dropout, self.training)))

    def _encode_hidden(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The encoder from the input layer's output on."""
        for layer in self.encoder:
            h = layer(self.act(h))
        if not self.variational:
            return self.act(h), None  # the DAE applies the activation to its code too
        return h[:, : self.latent_dim], h[:, self.latent_dim :]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unnormalised logits over all items."""
        h = self.act(z) if self.latent_activation else z
        for i, layer in enumerate(self.decoder):
            h = layer(h)
            if i < len(self.decoder) - 1:
                h = self.act(h)
        return h

    def kl(self, x: CSRBatch, mu: torch.Tensor, logvar: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per user in closed form; zero for the DAE. With the VampPrior, its one-sample
        estimate log q(z|x) - log p(z) at the sampled z (at the mean when not training)."""
        if logvar is None:
            return torch.zeros(x.n_rows, device=mu.device)
        if self.vamp is None:
            return gaussian_kl(mu, logvar)
        pseudo = self.vamp.inputs()
        mu_k, logvar_k = self._encode_hidden(pseudo @ self.input_layer.weight + self.input_layer.bias)
        assert logvar_k is not None  # variational
        return gaussian_log_density(z.float(), mu.float(), logvar.float()) - mixture_log_density(z, mu_k, logvar_k)


class MultDAE(MultVAE):
    """Mult-DAE: the same network with a deterministic code and no KL term (the paper's ablation)."""

    variational = False

"""RecVAE (Shenbin et al., WSDM 2020; ilya-shenbin/RecVAE): Mult-VAE with a densely connected encoder, a composite
prior and a one-layer decoder, trained by alternating encoder and decoder updates (see `RecVAE.set_phase`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recvae.models.sparse import CSRBatch, SparseLinear, normalized_dropout
from recvae.models.vae import ACTIVATIONS, LatentAutoencoder, WeightedLayer

PHASES = (None, "encoder", "decoder")


class DenseEncoder(nn.Module):
    """RecVAE's encoder: each layer adds the outputs of all earlier ones, then activation and layer norm."""

    def __init__(self, n_items: int, width: int, n_layers: int, latent_dim: int, activation: str) -> None:
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.input_layer = SparseLinear(n_items, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(n_layers - 1))
        self.norms = nn.ModuleList(nn.LayerNorm(width, eps=0.1) for _ in range(n_layers))  # RecVAE's eps
        self.head = nn.Linear(width, 2 * latent_dim)  # mean and log-variance side by side

    def forward(self, x: CSRBatch, dropout: float, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of q(z|x) for input dropout rate `dropout`."""
        h = self.norms[0](self.act(self.input_layer(x, normalized_dropout(x, dropout, training))))
        total = h
        for layer, norm in zip(self.hidden, self.norms[1:], strict=True):
            h = norm(self.act(layer(h) + total))
            total = total + h
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar

    def weighted_layers(self) -> list[WeightedLayer]:
        """Its layers with a weight and a bias (not the layer norms)."""
        return [self.input_layer, *self.hidden, self.head]


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Element-wise log N(z; mu, exp(logvar))."""
    return -0.5 * (logvar + math.log(2 * math.pi) + (z - mu).pow(2) / logvar.exp())


class RecVAE(LatentAutoencoder):
    """RecVAE: a densely connected encoder (`DenseEncoder`), a composite prior and a one-layer decoder.

    The prior mixes N(0, I), the posterior of the encoder as it was after the last encoder phase (`update_prior`)
    and a wide N(0, e^10 I), weighted 3/20, 3/4, 1/10; its KL term is a one-sample estimate. Scoring decodes the
    mean of q(z|x) as Mult-VAE does. `hidden_dims` are the encoder's layers (one width, RecVAE: 600 x 5).
    """

    PRIOR_WEIGHTS = (3 / 20, 3 / 4, 1 / 10)
    WIDE_LOGVAR = 10.0

    def __init__(
        self,
        n_items: int,
        hidden_dims: Sequence[int] = (600,) * 5,
        latent_dim: int = 200,
        activation: str = "swish",
        dropout: float = 0.5,
        latent_activation: bool = False,
    ) -> None:
        super().__init__(n_items, hidden_dims, latent_dim, activation, dropout, latent_activation)
        if self.latent_activation:
            raise ValueError("RecVAE's decoder reads z itself; latent_activation is a Mult-VAE option")
        if not self.hidden_dims or len(set(self.hidden_dims)) != 1:
            raise ValueError(f"RecVAE's encoder layers must share one width; got {list(self.hidden_dims)}")
        args = (self.n_items, self.hidden_dims[0], len(self.hidden_dims), self.latent_dim, activation)
        self.encoder = DenseEncoder(*args)
        self.prior_encoder = DenseEncoder(*args).requires_grad_(False)
        self.decoder = nn.ModuleList([nn.Linear(self.latent_dim, self.n_items)])
        self.phase: str | None = None
        self.reset_parameters()

    def weighted_layers(self) -> list[WeightedLayer]:
        """The encoder's layers (not its norms) and the decoder; the prior's copy is not trained."""
        return [*self.encoder.weighted_layers(), *self.decoder]

    def reset_parameters(self) -> None:
        """Initialised as Mult-VAE; layer norms at identity; the prior copies the encoder."""
        super().reset_parameters()
        self.update_prior()

    def set_phase(self, phase: str | None) -> None:
        """'encoder' trains the encoder only, 'decoder' the decoder only (input dropout off, as RecVAE), None both."""
        if phase not in PHASES:
            raise ValueError(f"phase must be None, 'encoder' or 'decoder'; got {phase!r}")
        self.phase = phase
        self.encoder.requires_grad_(phase != "decoder")
        self.decoder.requires_grad_(phase != "encoder")

    def update_prior(self) -> None:
        """The prior's posterior component takes the encoder's current weights."""
        self.prior_encoder.load_state_dict(self.encoder.state_dict())

    def encode(self, x: CSRBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of q(z|x)."""
        dropout = 0.0 if self.phase == "decoder" else self.dropout
        mu, logvar = self.encoder(x, dropout, self.training)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unnormalised logits over all items."""
        logits: torch.Tensor = self.decoder[0](z)
        return logits

    def log_prior(self, x: CSRBatch, z: torch.Tensor) -> torch.Tensor:
        """Element-wise log density of the composite prior at z."""
        with torch.no_grad():
            post_mu, post_logvar = self.prior_encoder(x, 0.0, False)
        zeros = torch.zeros_like(z)
        parts = [
            log_normal(z, zeros, zeros),
            log_normal(z, post_mu.to(z.dtype), post_logvar.to(z.dtype)),
            log_normal(z, zeros, torch.full_like(z, self.WIDE_LOGVAR)),
        ]
        weighted = [p + math.log(w) for p, w in zip(parts, self.PRIOR_WEIGHTS, strict=True)]
        return torch.logsumexp(torch.stack(weighted, dim=-1), dim=-1)

    def kl(self, x: CSRBatch, mu: torch.Tensor, logvar: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        """One-sample estimate of KL(q(z|x) || composite prior) per user: log q(z|x) - log p(z), in float32."""
        assert logvar is not None  # RecVAE's posterior is always Gaussian
        mu, logvar, z = mu.float(), logvar.float(), z.float()
        return (log_normal(z, mu, logvar) - self.log_prior(x, z)).sum(dim=1)

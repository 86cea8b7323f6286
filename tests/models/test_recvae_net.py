"""RecVAE: the densely connected encoder, the composite prior and the encoder / decoder phases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from vae_helpers import N_ITEMS, random_csr

from recvae.config import ConfigError, ModelConfig
from recvae.models.recvae_net import RecVAE, log_normal
from recvae.models.sparse import CSRBatch


def test_recvae_shapes_and_dense_encoder(rng) -> None:
    x = CSRBatch.from_scipy(random_csr(rng, 5))
    model = RecVAE(N_ITEMS, hidden_dims=(12, 12, 12), latent_dim=4)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 4)
    logits, kl = model(x)
    assert logits.shape == (5, N_ITEMS) and kl.shape == (5,) and torch.isfinite(kl).all()
    assert len(model.encoder.hidden) == 2 and len(model.encoder.norms) == 3 and len(model.decoder) == 1
    assert model.model_args()["hidden_dims"] == [12, 12, 12]
    # the encoder's layer-by-layer computation: each layer adds the outputs of all earlier ones
    model.eval()
    enc = model.encoder
    dense = x.to_dense(N_ITEMS)
    h1 = enc.norms[0](F.silu(dense / dense.norm(dim=1, keepdim=True) @ enc.input_layer.weight + enc.input_layer.bias))
    h2 = enc.norms[1](F.silu(enc.hidden[0](h1) + h1))
    h3 = enc.norms[2](F.silu(enc.hidden[1](h2) + h1 + h2))
    torch.testing.assert_close(model.encode(x)[0], enc.head(h3)[:, :4])
    with pytest.raises(ValueError, match="one width"):
        RecVAE(N_ITEMS, hidden_dims=(12, 8))
    with pytest.raises(ConfigError, match="one width"):
        ModelConfig(kind="recvae", hidden_dims=(12, 8)).validate()
    with pytest.raises(ConfigError, match="one width"):
        ModelConfig(kind="recvae", hidden_dims=()).validate()


def test_composite_prior_is_the_weighted_mixture(rng) -> None:
    """log p(z) = log(3/20 N(z; 0, 1) + 3/4 N(z; mu_old, var_old) + 1/10 N(z; 0, e^10)), per dimension."""
    x = CSRBatch.from_scipy(random_csr(rng, 3))
    model = RecVAE(N_ITEMS, hidden_dims=(8, 8), latent_dim=3).eval()
    z = torch.randn(3, 3)
    mu_old, logvar_old = model.prior_encoder(x, 0.0, False)

    def pdf(v: float, m: float, lv: float) -> float:
        return float(np.exp(-0.5 * (v - m) ** 2 / np.exp(lv)) / np.sqrt(2 * np.pi * np.exp(lv)))

    got = model.log_prior(x, z)
    for u in range(3):
        for d in range(3):
            v = float(z[u, d])
            posterior = pdf(v, float(mu_old[u, d]), float(logvar_old[u, d]))
            mix = 0.15 * pdf(v, 0, 0) + 0.75 * posterior + 0.1 * pdf(v, 0, 10)
            assert abs(float(got[u, d]) - np.log(mix)) < 1e-4
    # the training-mode KL is log q(z|x) - log p(z) at the sampled z, summed over dimensions
    model.train()
    torch.manual_seed(3)
    logits, kl = model(x)
    torch.manual_seed(3)
    mu, logvar = model.encode(x)
    zs = model.sample(mu, logvar)
    torch.testing.assert_close(kl, (log_normal(zs, mu, logvar) - model.log_prior(x, zs)).sum(1))


def test_recvae_phases_train_one_half_and_the_prior_follows_the_encoder(rng) -> None:
    x = CSRBatch.from_scipy(random_csr(rng, 6))
    model = RecVAE(N_ITEMS, hidden_dims=(8, 8), latent_dim=3)
    assert all(not p.requires_grad for p in model.prior_encoder.parameters())
    model.set_phase("encoder")
    model.loss(x, beta=0.005, beta_per_item=True).loss.backward()
    assert all(p.grad is None for p in model.decoder.parameters())
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.prior_encoder.parameters())
    model.zero_grad(set_to_none=True)
    model.set_phase("decoder")
    model.loss(x, beta=0.005, beta_per_item=True).loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    # the decoder phase drops no input (RecVAE): in training mode the encoder is deterministic then
    assert torch.equal(model.encode(x)[0], model.encode(x)[0])
    model.set_phase("encoder")
    assert not torch.equal(model.encode(x)[0], model.encode(x)[0])
    model.set_phase(None)
    assert all(p.requires_grad for p in [*model.encoder.parameters(), *model.decoder.parameters()])
    with torch.no_grad():
        model.encoder.head.bias.add_(1.0)
    assert not torch.equal(model.encoder.head.bias, model.prior_encoder.head.bias)
    model.update_prior()
    assert torch.equal(model.encoder.head.bias, model.prior_encoder.head.bias)
    with pytest.raises(ValueError, match="phase"):
        model.set_phase("both")

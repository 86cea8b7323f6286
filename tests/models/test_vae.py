"""Mult-VAE and Mult-DAE: the networks, the multinomial likelihood, the KL term and the loss."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from vae_helpers import N_ITEMS, random_csr

from recvae.config import ConfigError, ModelConfig, TrainConfig
from recvae.models.sparse import CSRBatch, SparseRows
from recvae.models.vae import MultDAE, MultVAE, multinomial_nll


def test_shapes(rng) -> None:
    x = CSRBatch.from_scipy(random_csr(rng, 5))
    model = MultVAE(N_ITEMS, hidden_dims=(20,), latent_dim=8)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 8)
    logits, kl = model(x)
    assert logits.shape == (5, N_ITEMS) and kl.shape == (5,)
    # the sparse layer is stored (in, out), nn.Linear (out, in)
    assert [tuple(w.shape) for w in model.weights()] == [(N_ITEMS, 20), (16, 20), (20, 8), (N_ITEMS, 20)]
    deep = MultVAE(N_ITEMS, hidden_dims=(24, 12), latent_dim=4)
    assert deep(x)[0].shape == (5, N_ITEMS)
    assert MultDAE(N_ITEMS, hidden_dims=(), latent_dim=6)(x)[0].shape == (5, N_ITEMS)


def test_multinomial_nll_equals_dense_log_softmax(rng) -> None:
    X = random_csr(rng, 8)
    logits = torch.randn(8, N_ITEMS)
    dense = torch.from_numpy(X.toarray())
    expected = -(F.log_softmax(logits, dim=1) * dense).sum(1).mean()
    torch.testing.assert_close(multinomial_nll(logits, CSRBatch.from_scipy(X)), expected)


def test_multinomial_nll_of_bfloat16_logits_is_float32_with_a_bfloat16_gradient(rng) -> None:
    X = random_csr(rng, 8)
    x = CSRBatch.from_scipy(X)
    logits = torch.randn(8, N_ITEMS).bfloat16()
    low = logits.clone().requires_grad_(True)
    high = logits.float().requires_grad_(True)  # the same values, in float32 all the way
    loss_low, loss_high = multinomial_nll(low, x), multinomial_nll(high, x)
    assert loss_low.dtype == torch.float32
    torch.testing.assert_close(loss_low, loss_high)  # the softmax itself runs in float32
    loss_low.backward()
    loss_high.backward()
    assert low.grad.dtype == torch.bfloat16
    torch.testing.assert_close(low.grad.float(), high.grad, rtol=1e-2, atol=1e-3)


def test_kl_matches_closed_form(rng) -> None:
    x = CSRBatch.from_scipy(random_csr(rng, 6))
    model = MultVAE(N_ITEMS, hidden_dims=(20,), latent_dim=8).eval()
    mu, logvar = model.encode(x)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(model(x)[1], torch.distributions.kl_divergence(q, p).sum(1))


def test_mean_at_inference_sample_in_training(rng) -> None:
    x = CSRBatch.from_scipy(random_csr(rng, 6))
    model = MultVAE(N_ITEMS, hidden_dims=(20,), latent_dim=8, dropout=0.0)
    model.eval()
    a, b = model(x)[0], model(x)[0]
    assert torch.equal(a, b)
    torch.testing.assert_close(a, model.decode(model.encode(x)[0]))
    model.train()
    torch.manual_seed(0)
    s1 = model(x)[0]
    s2 = model(x)[0]
    torch.manual_seed(0)
    assert not torch.allclose(s1, s2)  # a fresh z each pass
    assert torch.equal(s1, model(x)[0])  # reproducible from the seed


def test_dae_has_no_kl_and_no_sampling(rng) -> None:
    x = CSRBatch.from_scipy(random_csr(rng, 6))
    model = MultDAE(N_ITEMS, hidden_dims=(20,), latent_dim=8, dropout=0.0).train()
    mu, logvar = model.encode(x)
    assert logvar is None and mu.shape == (6, 8)
    assert torch.equal(model(x)[0], model(x)[0])
    parts = model.loss(x, beta=0.7)
    assert parts.kl.item() == 0.0
    assert torch.equal(parts.loss, parts.neg_ll)
    assert not any("logvar" in n for n, _ in model.named_parameters())
    assert model.encoder[-1].out_features == 8 and MultVAE(N_ITEMS, (20,), 8).encoder[-1].out_features == 16


def test_latent_activation_decodes_the_activated_code(rng) -> None:
    x = CSRBatch.from_scipy(random_csr(rng, 6))
    torch.manual_seed(0)
    plain = MultVAE(N_ITEMS, hidden_dims=(), latent_dim=8).eval()
    squashed = MultVAE(N_ITEMS, hidden_dims=(), latent_dim=8, latent_activation=True).eval()
    squashed.load_state_dict(plain.state_dict())  # the option adds no parameters
    z = 3 * torch.randn(6, 8)
    torch.testing.assert_close(squashed.decode(z), plain.decode(torch.tanh(z)))
    assert not torch.allclose(squashed.decode(z), plain.decode(z))
    mu, logvar = squashed.encode(x)  # the posterior and its KL are on z itself
    torch.testing.assert_close(squashed(x)[1], plain(x)[1])
    assert squashed.model_args()["latent_activation"] and not plain.model_args()["latent_activation"]


def test_latent_activation_is_refused_outside_the_vae() -> None:
    ModelConfig(kind="vae", latent_activation=True).validate()
    for kind in ("dae", "recvae"):
        with pytest.raises(ConfigError, match="latent_activation"):
            ModelConfig(kind=kind, latent_activation=True).validate()


def test_init_as_reference() -> None:
    torch.manual_seed(0)
    model = MultVAE(2000, hidden_dims=(600,), latent_dim=200)
    w = model.input_layer.weight
    bound = (6.0 / (2000 + 600)) ** 0.5  # Xavier (Glorot) uniform
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    biases = torch.cat([layer.bias.detach() for layer in [model.input_layer, *model.encoder, *model.decoder]])
    assert biases.abs().max() <= 0.002 and 0.0005 < biases.std() < 0.0015


def _vamp(n_items: int, **kw: object) -> MultVAE:
    return MultVAE(n_items, prior="vamp", n_pseudo_inputs=5, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [MultVAE, MultDAE, _vamp])
def test_loss_finite_and_decreasing_on_toy_problem(cls, rng) -> None:
    torch.manual_seed(0)
    # two blocks of items, users like one block: a learnable structure
    groups = rng.integers(0, 2, 64)
    m = (rng.random((64, N_ITEMS)) < 0.5) & ((np.arange(N_ITEMS)[None, :] < N_ITEMS // 2) == (groups[:, None] == 0))
    m[np.arange(64), np.where(groups == 0, 0, N_ITEMS - 1)] = True
    rows = SparseRows(sp.csr_matrix(m.astype(np.float32)))
    model = cls(N_ITEMS, hidden_dims=(16,), latent_dim=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        parts = model.loss(rows.batch(torch.arange(64)), beta=0.2)
        assert torch.isfinite(parts.loss)
        opt.zero_grad()
        parts.loss.backward()
        opt.step()
        losses.append(parts.loss.item())
    # knowing the user's block halves the candidate items: the best gain is about log(2) per item a user has
    best_gain = m.sum(1).mean() * np.log(2)
    assert np.mean(losses[:5]) - np.mean(losses[-5:]) > 0.7 * best_gain


def test_beta_per_item_weights_each_users_kl_by_item_count(rng) -> None:
    """RecVAE's option: the KL term is mean_u(beta * |x_u| * KL_u); the default stays the paper's beta * mean KL."""
    X = random_csr(rng, 8)
    x = CSRBatch.from_scipy(X)
    model = MultVAE(N_ITEMS, hidden_dims=(16,), latent_dim=4).eval()  # eval: z is the mean, so passes agree
    logits, kl_u = model(x)
    counts = torch.from_numpy(np.asarray(X.sum(1)).ravel().astype(np.float32))
    assert counts.min() != counts.max()  # rows of different lengths, or the test could not tell the two apart
    paper = model.loss(x, beta=0.3)
    scaled = model.loss(x, beta=0.3, beta_per_item=True)
    torch.testing.assert_close(paper.loss, paper.neg_ll + 0.3 * kl_u.mean())
    torch.testing.assert_close(scaled.loss, scaled.neg_ll + 0.3 * (kl_u * counts).mean())
    torch.testing.assert_close(scaled.kl, paper.kl)  # the logged KL is the plain mean either way
    assert TrainConfig().beta_per_item is False


def test_mixture_log_density_equals_torch_distributions(rng) -> None:
    from recvae.models.vae import mixture_log_density

    z, mu, logvar = (torch.from_numpy(rng.normal(size=s).astype(np.float32)) for s in [(6, 5), (4, 5), (4, 5)])
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(4)),
        torch.distributions.Independent(torch.distributions.Normal(mu, torch.exp(0.5 * logvar)), 1))
    torch.testing.assert_close(mixture_log_density(z, mu, logvar), mixture.log_prob(z))


def test_vamp_prior_kl_is_log_q_minus_the_mixture_at_the_pseudo_inputs(rng) -> None:
    from recvae.models.vae import mixture_log_density

    x = CSRBatch.from_scipy(random_csr(rng, 6))
    torch.manual_seed(1)
    model = MultVAE(N_ITEMS, hidden_dims=(20,), latent_dim=8, dropout=0.0, prior="vamp", n_pseudo_inputs=3)
    model.train()
    mu, logvar = model.encode(x)
    z = model.sample(mu, logvar)
    # the pseudo-inputs as click rows of 3 users, through the encoder's sparse path
    pseudo = model.vamp.inputs().detach()
    mu_k, logvar_k = model.encode(CSRBatch.from_scipy(sp.csr_matrix(pseudo.numpy())))
    log_q = torch.distributions.Independent(torch.distributions.Normal(mu, torch.exp(0.5 * logvar)), 1).log_prob(z)
    expected = log_q - mixture_log_density(z, mu_k, logvar_k)
    torch.testing.assert_close(model.kl(x, mu, logvar, z), expected, rtol=1e-4, atol=1e-4)
    # the prior is learned: the KL's gradient reaches the pseudo-inputs
    model.kl(x, mu, logvar, z).sum().backward()
    assert model.vamp.pseudo_inputs.grad is not None and model.vamp.pseudo_inputs.grad.abs().sum() > 0


def test_vamp_prior_is_refused_outside_the_vae() -> None:
    with pytest.raises(ConfigError, match="model.prior=vamp is for kind 'vae'"):
        ModelConfig(kind="recvae", hidden_dims=(8, 8), prior="vamp").validate()
    with pytest.raises(ConfigError, match="model.prior=vamp is for kind 'vae'"):
        ModelConfig(kind="dae", prior="vamp").validate()
    with pytest.raises(ConfigError, match="model.prior must be one of normal, vamp"):
        ModelConfig(prior="flow").validate()
    with pytest.raises(ConfigError, match="model.n_pseudo_inputs must be >= 1"):
        ModelConfig(prior="vamp", n_pseudo_inputs=0).validate()
    with pytest.raises(ValueError, match="Mult-DAE has none"):
        MultDAE(N_ITEMS, prior="vamp")

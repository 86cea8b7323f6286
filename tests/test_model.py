"""Mult-VAE / Mult-DAE modules and their Recommender wrapper."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from recommender_contract import RecommenderContract

from recvae.config import Config, ConfigError, ModelConfig, TrainConfig, preset
from recvae.models.base import load_recommender
from recvae.models.multvae import (
    STATE_FILE,
    CSRBatch,
    ModelLoadError,
    MultDAE,
    MultVAE,
    MultVAERecommender,
    RecVAE,
    SparseLinear,
    SparseRows,
    build_module,
    log_normal,
    multinomial_nll,
    normalized_dropout,
)

N_ITEMS = 30


def random_csr(rng: np.random.Generator, n_rows: int = 12, n_items: int = N_ITEMS, density: float = 0.2) -> sp.csr_matrix:
    m = rng.random((n_rows, n_items)) < density
    m[:, 0] |= ~m.any(1)  # no empty rows
    return sp.csr_matrix(m.astype(np.float32))


def small_config(kind: str = "vae", **train: object) -> Config:
    c = Config()
    c.model = ModelConfig(kind=kind, hidden_dims=(32, 32) if kind == "recvae" else (32,), latent_dim=16)
    c.train = TrainConfig(epochs=20, batch_size=32, lr=5e-3, num_threads=1, eval_batch_size=7)
    for k, v in train.items():
        setattr(c.train, k, v)
    return c


def test_shapes(rng) -> None:
    x = CSRBatch.from_scipy(random_csr(rng, 5))
    model = MultVAE(N_ITEMS, hidden_dims=(20,), latent_dim=8)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 8)
    logits, kl = model(x)
    assert logits.shape == (5, N_ITEMS) and kl.shape == (5,)
    assert [tuple(w.shape) for w in model.weights()] == [(N_ITEMS, 20), (16, 20), (20, 8), (N_ITEMS, 20)]  # nn.Linear is (out, in)
    deep = MultVAE(N_ITEMS, hidden_dims=(24, 12), latent_dim=4)
    assert deep(x)[0].shape == (5, N_ITEMS)
    assert MultDAE(N_ITEMS, hidden_dims=(), latent_dim=6)(x)[0].shape == (5, N_ITEMS)


def test_sparse_rows_gather_equals_scipy_rows(rng) -> None:
    X = random_csr(rng, 20)
    ids = torch.tensor([7, 0, 19, 7, 3])
    got = SparseRows(X).batch(ids).to_dense(N_ITEMS)
    assert torch.equal(got, torch.from_numpy(X[ids.numpy()].toarray()))


def test_sparse_first_layer_equals_dense_computation(rng) -> None:
    X = random_csr(rng, 9)
    X.data[:] = rng.random(X.nnz).astype(np.float32) + 0.5  # non-binary values exercise the normalization
    model = MultVAE(N_ITEMS, hidden_dims=(20,), latent_dim=8).eval()
    dense = torch.from_numpy(X.toarray())
    expected = F.normalize(dense, dim=1) @ model.input_layer.weight + model.input_layer.bias
    x = CSRBatch.from_scipy(X)
    got = model.input_layer(x, normalized_dropout(x, model.dropout, training=False))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # with dropout: the sparse result equals the dense product of the same dropped-out input
    torch.manual_seed(3)
    values = normalized_dropout(x, 0.5, training=True)
    dropped = torch.zeros_like(dense).index_put_((x.rows, x.indices), values)
    kept = values != 0
    assert 0 < kept.sum() < x.values.numel()
    norm = F.normalize(dense, dim=1)[x.rows, x.indices]
    torch.testing.assert_close(values[kept], 2.0 * norm[kept])  # inverted dropout scaling 1 / (1 - p)
    torch.testing.assert_close(model.input_layer(x, values), dropped @ model.input_layer.weight + model.input_layer.bias)


@pytest.mark.parametrize("n_items", [N_ITEMS, 70_000])  # 70,000 > 2^16: the torch.argsort path of the backward
def test_sparse_first_layer_gradient_equals_dense_gradient(rng, n_items: int) -> None:
    X = random_csr(rng, 9, n_items=n_items, density=0.2 if n_items == N_ITEMS else 0.001)
    x = CSRBatch.from_scipy(X)
    torch.manual_seed(4)
    values = normalized_dropout(x, 0.5, training=True)
    assert (values == 0).any()  # entries dropped out: left out of the sparse product and of its gradient
    dropped = torch.zeros(9, n_items).index_put_((x.rows, x.indices), values)
    grad_out = torch.randn(9, 5)
    grads = []
    for sparse_backward in (True, False):
        layer = SparseLinear(n_items, 5)
        layer.sparse_backward = sparse_backward
        torch.nn.init.normal_(layer.weight, generator=torch.Generator().manual_seed(5))
        torch.nn.init.zeros_(layer.bias)
        out = layer(x, values)
        torch.testing.assert_close(out, dropped @ layer.weight.detach())
        out.backward(grad_out)
        grads.append(layer.weight.grad)
    expected = dropped.T @ grad_out
    torch.testing.assert_close(grads[0], expected, rtol=1e-5, atol=1e-6)  # x^T @ grad (the training path)
    torch.testing.assert_close(grads[1], expected, rtol=1e-5, atol=1e-6)  # embedding_bag's own backward
    untouched = torch.ones(n_items, dtype=torch.bool)
    untouched[x.indices[values != 0]] = False
    assert (grads[0][untouched] == 0).all()


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


@pytest.mark.parametrize("cls", [MultVAE, MultDAE])
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


def test_sparse_input_has_no_dense_gradient_path(rng) -> None:
    """Rows never present in a batch get no gradient: the first layer is a gather, not a dense product."""
    x = CSRBatch.from_scipy(random_csr(rng, 4, density=0.05))
    model = MultVAE(N_ITEMS, hidden_dims=(8,), latent_dim=2)
    model.loss(x, beta=0.2).loss.backward()
    used = torch.zeros(N_ITEMS, dtype=torch.bool)
    used[x.indices] = True
    g = model.input_layer.weight.grad
    assert (g[~used] == 0).all() and (g[used] != 0).any()


# ------------------------------------------------------------------------------------- recommender


class TestMultVAEContract(RecommenderContract):
    def make_model(self) -> MultVAERecommender:
        c = small_config("vae")
        return MultVAERecommender(model_config=c.model, train_config=c.train)


class TestMultDAEContract(RecommenderContract):
    def make_model(self) -> MultVAERecommender:
        c = small_config("dae")
        return MultVAERecommender(model_config=c.model, train_config=c.train)


class TestRecVAEContract(RecommenderContract):
    def make_model(self) -> MultVAERecommender:
        c = small_config("recvae", beta_per_item=True, beta_schedule="constant", beta=0.005)
        return MultVAERecommender(model_config=c.model, train_config=c.train)


@pytest.fixture(scope="module")
def fitted() -> tuple[MultVAERecommender, sp.csr_matrix]:
    X = random_csr(np.random.default_rng(1), 50)
    c = small_config("vae", epochs=2)
    return MultVAERecommender().fit(X, config=c), X


def test_kind_follows_the_model_config() -> None:
    assert MultVAERecommender(model_config=ModelConfig(kind="vae")).kind == "multvae"
    assert MultVAERecommender(model_config=ModelConfig(kind="dae")).kind == "multdae"


def test_scores_are_eval_mode_cpu_float32(fitted) -> None:
    rec, X = fitted
    rec.module.train()
    s = rec.scores(X)
    assert s.dtype == torch.float32 and s.device.type == "cpu" and s.shape == (50, N_ITEMS)
    assert rec.module.training  # scoring leaves the mode as it was
    assert torch.equal(s, rec.scores(X))
    with pytest.raises(ValueError, match="item columns"):
        rec.scores(sp.csr_matrix((2, N_ITEMS + 1), dtype=np.float32))


def test_save_load_round_trip(fitted, tmp_path: Path) -> None:
    rec, X = fitted
    rec.save(tmp_path / "m", snapshot_id="snap-x")
    loaded = load_recommender(tmp_path / "m")
    assert isinstance(loaded, MultVAERecommender) and loaded.kind == "multvae"
    assert loaded.params() == rec.params() and loaded.params()["model"]["hidden_dims"] == [32]
    assert torch.equal(loaded.scores(X), rec.scores(X))


def test_latent_activation_survives_save_and_load_and_older_states_load(tmp_path: Path) -> None:
    X = random_csr(np.random.default_rng(2), 40)
    c = small_config("vae", epochs=1)
    c.model.latent_activation = True
    rec = MultVAERecommender().fit(X, config=c)
    rec.save(tmp_path / "m")
    loaded = load_recommender(tmp_path / "m")
    assert loaded.module.latent_activation and loaded.params()["model"]["latent_activation"] is True
    assert torch.equal(loaded.scores(X), rec.scores(X))
    # a model saved before the option existed has neither key: it loads as the plain Mult-VAE it is
    plain = MultVAERecommender().fit(X, config=small_config("vae", epochs=1))
    plain.save(tmp_path / "old")
    state = torch.load(tmp_path / "old" / STATE_FILE, weights_only=True)
    del state["model_args"]["latent_activation"], state["model_config"]["latent_activation"]
    _rewrite_state(tmp_path / "old", state)
    old = load_recommender(tmp_path / "old")
    assert not old.module.latent_activation
    assert torch.equal(old.scores(X), plain.scores(X))


def test_load_refuses_tampered_file(fitted, tmp_path: Path) -> None:
    rec, _ = fitted
    rec.save(tmp_path / "m")
    f = tmp_path / "m" / STATE_FILE
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        load_recommender(tmp_path / "m")


def _rewrite_state(path: Path, obj: object) -> None:
    """Replace model.pt and every digest of it consistently (an attacker or a buggy writer)."""
    import hashlib
    import json

    from recvae.models.base import FILES_KEY, META_FILE

    torch.save(obj, path / STATE_FILE)
    (path / "model.pt.sha256").write_text(hashlib.sha256((path / STATE_FILE).read_bytes()).hexdigest())
    meta = json.loads((path / META_FILE).read_text())
    meta[FILES_KEY] = {name: hashlib.sha256((path / name).read_bytes()).hexdigest() for name in meta[FILES_KEY]}
    (path / META_FILE).write_text(json.dumps(meta))


class Evil:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_load_refuses_pickled_code(fitted, tmp_path: Path) -> None:
    rec, _ = fitted
    rec.save(tmp_path / "m")
    state = torch.load(tmp_path / "m" / STATE_FILE, weights_only=True)
    state["extra"] = Evil()
    _rewrite_state(tmp_path / "m", state)
    with pytest.raises(ModelLoadError, match="weights_only"):
        load_recommender(tmp_path / "m")


def test_load_refuses_mismatched_architecture(fitted, tmp_path: Path) -> None:
    rec, _ = fitted
    rec.save(tmp_path / "m")
    state = torch.load(tmp_path / "m" / STATE_FILE, weights_only=True)
    state["model_args"]["latent_dim"] = 9
    state["model_config"]["latent_dim"] = 9
    _rewrite_state(tmp_path / "m", state)
    with pytest.raises(ModelLoadError, match="do not match"):
        load_recommender(tmp_path / "m")
    state["model_config"]["latent_dim"] = 16
    _rewrite_state(tmp_path / "m", state)
    with pytest.raises(ModelLoadError, match="disagree on latent_dim"):
        load_recommender(tmp_path / "m")


def test_load_refuses_metadata_mismatch(fitted, tmp_path: Path) -> None:
    rec, _ = fitted
    rec.save(tmp_path / "m")
    meta_file = tmp_path / "m" / "recommender.json"
    meta = json.loads(meta_file.read_text())
    meta["n_items"] = N_ITEMS + 5
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="items"):
        load_recommender(tmp_path / "m")


def test_unfitted_scores_raise() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        MultVAERecommender(N_ITEMS).scores(sp.csr_matrix((1, N_ITEMS), dtype=np.float32))


def test_fit_with_validation_keeps_the_best_epoch(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    X, foldin, heldout = random_csr(rng, 60), random_csr(rng, 10), random_csr(rng, 10, density=0.1)
    rec = MultVAERecommender().fit(X, (foldin, heldout), config=small_config("dae", epochs=3), out_dir=tmp_path)
    assert rec.kind == "multdae" and rec.result is not None
    values = [h["val_ndcg@100"] for h in rec.result.history]
    assert rec.result.best_epoch == int(np.argmax(values)) + 1
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()
    with pytest.raises(TypeError, match="unexpected"):
        MultVAERecommender().fit(X, config=small_config(), bogus=1)


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


# ------------------------------------------------------------------------------------------------ RecVAE


def test_recvae_shapes_and_dense_encoder(rng) -> None:
    x = CSRBatch.from_scipy(random_csr(rng, 5))
    model = RecVAE(N_ITEMS, hidden_dims=(12, 12, 12), latent_dim=4)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 4)
    logits, kl = model(x)
    assert logits.shape == (5, N_ITEMS) and kl.shape == (5,) and torch.isfinite(kl).all()
    assert len(model.encoder.hidden) == 2 and len(model.encoder.norms) == 3 and len(model.decoder) == 1
    assert model.kind == "recvae" and model.model_args()["hidden_dims"] == [12, 12, 12]
    # the encoder's layer-by-layer computation: each layer adds the outputs of all earlier ones
    model.eval()
    enc = model.encoder
    h1 = enc.norms[0](F.silu(x.to_dense(N_ITEMS) / x.to_dense(N_ITEMS).norm(dim=1, keepdim=True) @ enc.input_layer.weight
                             + enc.input_layer.bias))
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
            mix = 0.15 * pdf(v, 0, 0) + 0.75 * pdf(v, float(mu_old[u, d]), float(logvar_old[u, d])) + 0.1 * pdf(v, 0, 10)
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


def test_recvae_preset_holds_the_published_settings() -> None:
    c = preset("recvae")
    assert c.model.kind == "recvae" and c.model.hidden_dims == (600,) * 5 and c.model.latent_dim == 200
    assert c.model.activation == "swish" and c.model.dropout == 0.5
    assert (c.train.lr, c.train.beta_schedule, c.train.beta, c.train.beta_per_item) == (5e-4, "constant", 0.005, True)
    assert (c.train.encoder_epochs, c.train.decoder_epochs, c.train.epochs, c.train.batch_size) == (3, 1, 50, 500)
    assert preset("vae") == Config() and preset("dae").model.kind == "dae"
    assert isinstance(build_module(10, c.model), RecVAE)
    with pytest.raises(ConfigError, match="unknown model kind"):
        preset("lightgcn")


def test_bf16_scores_rank_like_float32(fitted) -> None:
    """train.amp=bf16 scores through CPU autocast: the same ranking up to bf16 rounding of near-ties."""
    rec, X = fitted
    fast = MultVAERecommender(rec.n_items, rec.model_config, TrainConfig(**{**rec.train_config.__dict__, "amp": "bf16"}),
                              rec.module)
    s32, s16 = rec.scores(X), fast.scores(X)
    assert s16.dtype == torch.float32 and not torch.equal(s32, s16)  # it did run in reduced precision
    torch.testing.assert_close(s16, s32, atol=0.05 * float(s32.abs().max()), rtol=0)
    top32, top16 = s32.topk(5, dim=1).indices, s16.topk(5, dim=1).indices
    overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(top32, top16)])
    assert overlap > 0.8


def test_every_saved_file_is_checked_on_load(tmp_path: Path) -> None:
    """A baseline's arrays have no format-level check: bytes zeroed in the middle of counts.npy loaded as other
    (wrong but plausible) counts before the save recorded each file's sha256."""
    from recvae.models.base import FILES_KEY, META_FILE, ModelLoadError
    from recvae.models.baselines import Popularity

    X = random_csr(np.random.default_rng(3), 40)
    Popularity().fit(X).save(tmp_path / "p")
    f = tmp_path / "p" / "counts.npy"
    data = bytearray(f.read_bytes())
    data[-8:] = bytes(8)
    f.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="counts.npy: sha256 does not match"):
        load_recommender(tmp_path / "p")
    f.unlink()
    with pytest.raises(ModelLoadError, match="counts.npy: missing"):
        load_recommender(tmp_path / "p")
    # a model saved before digests existed (no "files" in its metadata) still loads
    Popularity().fit(X).save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / META_FILE).read_text())
    del meta[FILES_KEY]
    (tmp_path / "old" / META_FILE).write_text(json.dumps(meta))
    assert load_recommender(tmp_path / "old").n_items == X.shape[1]

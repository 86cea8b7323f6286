"""The neural models' Recommender wrapper: the contract (fitted by recvae.training.VAETrainer), scoring, and the
weight file's save / load and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from recommender_contract import RecommenderContract
from vae_helpers import N_ITEMS, random_csr, small_config

from recvae.config import Config, ConfigError, ModelConfig, TrainConfig, preset
from recvae.models.base import ModelLoadError, load_recommender
from recvae.models.neural import STATE_FILE, MultVAERecommender, build_module
from recvae.models.recvae_net import RecVAE
from recvae.training import VAETrainer


class TestMultVAEContract(RecommenderContract):
    def make_model(self) -> VAETrainer:
        c = small_config("vae")
        return VAETrainer(c)


class TestMultDAEContract(RecommenderContract):
    def make_model(self) -> VAETrainer:
        c = small_config("dae")
        return VAETrainer(c)


class TestRecVAEContract(RecommenderContract):
    def make_model(self) -> VAETrainer:
        c = small_config("recvae", beta_per_item=True, beta_schedule="constant", beta=0.005)
        return VAETrainer(c)


@pytest.fixture(scope="module")
def fitted() -> tuple[MultVAERecommender, sp.csr_matrix]:
    X = random_csr(np.random.default_rng(1), 50)
    c = small_config("vae", epochs=2)
    return VAETrainer(c).fit(X), X


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
    rec = VAETrainer(c).fit(X)
    rec.save(tmp_path / "m")
    loaded = load_recommender(tmp_path / "m")
    assert loaded.module.latent_activation and loaded.params()["model"]["latent_activation"] is True
    assert torch.equal(loaded.scores(X), rec.scores(X))
    # a model saved before the option existed has neither key: it loads as the plain Mult-VAE it is
    plain = VAETrainer(small_config("vae", epochs=1)).fit(X)
    plain.save(tmp_path / "old")
    state = torch.load(tmp_path / "old" / STATE_FILE, weights_only=True)
    del state["model_args"]["latent_activation"], state["model_config"]["latent_activation"]
    _rewrite_state(tmp_path / "old", state)
    old = load_recommender(tmp_path / "old")
    assert not old.module.latent_activation
    assert torch.equal(old.scores(X), plain.scores(X))


def test_vamp_prior_survives_save_and_load(tmp_path: Path) -> None:
    X = random_csr(np.random.default_rng(3), 40)
    c = small_config("vae", epochs=2)
    c.model.prior, c.model.n_pseudo_inputs = "vamp", 4
    rec = VAETrainer(c).fit(X)
    rec.save(tmp_path / "m")
    loaded = load_recommender(tmp_path / "m")
    assert loaded.module.prior == "vamp" and tuple(loaded.module.vamp.pseudo_inputs.shape) == (4, N_ITEMS)
    assert loaded.params()["model"]["prior"] == "vamp"
    assert torch.equal(loaded.scores(X), rec.scores(X))
    # a state whose config and weights disagree on the prior is refused, not loaded with a fresh prior
    state = torch.load(tmp_path / "m" / STATE_FILE, weights_only=True)
    state["model_config"]["n_pseudo_inputs"] = 9
    _rewrite_state(tmp_path / "m", state)
    with pytest.raises(ModelLoadError, match="disagree on n_pseudo_inputs"):
        load_recommender(tmp_path / "m")


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
    trainer = VAETrainer(small_config("dae", epochs=3))
    rec = trainer.fit(X, (foldin, heldout), out_dir=tmp_path)
    assert rec.kind == "multdae" and trainer.result is not None and trainer.result.recommender is rec
    values = [h["val_ndcg@100"] for h in trainer.result.history]
    assert trainer.result.best_epoch == int(np.argmax(values)) + 1
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()
    with pytest.raises(TypeError, match="unexpected"):
        VAETrainer(small_config()).fit(X, bogus=1)


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
    bf16 = TrainConfig(**{**rec.train_config.__dict__, "amp": "bf16"})
    fast = MultVAERecommender(rec.n_items, rec.model_config, bf16, rec.module)
    s32, s16 = rec.scores(X), fast.scores(X)
    assert s16.dtype == torch.float32 and not torch.equal(s32, s16)  # it did run in reduced precision
    torch.testing.assert_close(s16, s32, atol=0.05 * float(s32.abs().max()), rtol=0)
    top32, top16 = s32.topk(5, dim=1).indices, s16.topk(5, dim=1).indices
    overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(top32, top16, strict=True)])
    assert overlap > 0.8

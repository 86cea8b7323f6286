"""Each model's updates: Mult-VAE's one pass an epoch, RecVAE's alternating encoder and decoder passes."""

from __future__ import annotations

from recvae.config import TrainConfig
from recvae.models.recvae_net import RecVAE
from recvae.models.vae import MultDAE, MultVAE
from recvae.training.updates import AlternatingUpdates, JointUpdates, updates_for


def test_mult_vae_and_dae_update_everything_in_one_pass() -> None:
    for module in (MultVAE(20, (8,), 4), MultDAE(20, (8,), 4)):
        updates = updates_for(module, TrainConfig(encoder_epochs=3, decoder_epochs=1))
        assert isinstance(updates, JointUpdates) and updates.n_passes == 1
        assert len(list(updates.passes())) == 1
        assert all(p.requires_grad for p in module.parameters())


def test_recvae_alternates_and_its_prior_follows_the_encoder_once_per_epoch() -> None:
    model = RecVAE(20, hidden_dims=(8, 8), latent_dim=3)
    updates = updates_for(model, TrainConfig(encoder_epochs=2, decoder_epochs=2))
    assert isinstance(updates, AlternatingUpdates) and updates.n_passes == 4
    seen, prior_updates = [], []
    real_update_prior = model.update_prior

    def update_prior() -> None:
        prior_updates.append(len(seen))
        real_update_prior()

    model.update_prior = update_prior  # type: ignore[method-assign]
    for _ in updates.passes():
        encoder = all(p.requires_grad for p in model.encoder.parameters())
        decoder = all(p.requires_grad for p in model.decoder.parameters())
        seen.append((model.phase, encoder, decoder))
    assert seen == [("encoder", True, False)] * 2 + [("decoder", False, True)] * 2
    assert prior_updates == [2]  # between the last encoder pass and the first decoder pass
    assert model.phase is None
    assert all(p.requires_grad for p in [*model.encoder.parameters(), *model.decoder.parameters()])
    assert not any(p.requires_grad for p in model.prior_encoder.parameters())

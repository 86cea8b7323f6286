"""The training loop: schedules applied per update, early stopping, checkpoints and exact resume, refusals, config
errors, RecVAE's alternating passes, torch.compile, quality."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from recommender_contract import Planted, planted_data

from recvae.config import Config, ConfigError, ModelConfig, TrainConfig
from recvae.data.idmap import IdMap
from recvae.data.snapshot import Snapshot
from recvae.evaluation.metrics import evaluate
from recvae.models.vae import Loss
from recvae.training import (
    BEST_FILE,
    LAST_FILE,
    CheckpointCorruptError,
    CheckpointMismatchError,
    NonFiniteLossError,
    effective_anneal_steps,
    fit_model,
    load_best,
    load_checkpoint,
    lr_at,
    train,
)

HISTORY_KEYS = {"epoch", "loss", "neg_ll", "kl", "beta", "lr", "step", "epoch_time_s", "val_ndcg@100", "val_recall@20",
                "val_recall@50"}
TIME_KEYS = {"epoch_time_s", "eval_time_s"}


def config(kind: str = "vae", **train_fields: object) -> Config:
    c = Config()
    c.model = ModelConfig(kind=kind, hidden_dims=(32,), latent_dim=16)
    c.train = TrainConfig(epochs=4, batch_size=32, lr=5e-3, num_threads=1, total_anneal_steps=50, anneal_cap=0.2,
                          scale_anneal_to_data=False)
    if kind == "recvae":  # RecVAE's KL weight: gamma x the user's item count
        c.model = ModelConfig(kind=kind, hidden_dims=(32, 32), latent_dim=16, activation="swish")
        c.train.beta_schedule, c.train.beta, c.train.beta_per_item = "constant", 0.005, True
    for k, v in train_fields.items():
        setattr(c.train, k, v)
    return c


def make_snapshot(p: Planted, *, validation: bool = True, test: bool = True, drop_one: bool = False) -> Snapshot:
    """Train users, then the held-out users split in half: validation and test."""
    n_train, n_held = p.train.shape[0], p.foldin.shape[0]
    half = n_held // 2
    train_m = p.train.copy()
    if drop_one:
        train_m = train_m.tolil()
        r, c = p.train.nonzero()
        train_m[r[0], c[0]] = 0
        train_m = sp.csr_matrix(train_m)
        train_m.eliminate_zeros()
    matrices = {"train": train_m}
    rows = {"train": np.arange(n_train)}
    parts = []
    if validation:
        parts.append(("validation", slice(0, half)))
    if test:
        parts.append(("test", slice(half, n_held)))
    for name, sl in parts:
        matrices[f"{name}_tr"], matrices[f"{name}_te"] = p.foldin[sl], p.heldout[sl]
        rows[f"{name}_tr"] = rows[f"{name}_te"] = n_train + np.arange(n_held)[sl]
    return Snapshot(matrices=matrices, rows=rows, users=IdMap(np.arange(n_train + n_held)), items=p.items)


@pytest.fixture(scope="module")
def planted() -> Planted:
    return planted_data()


@pytest.fixture(scope="module")
def snap(planted: Planted) -> Snapshot:
    return make_snapshot(planted)


# ------------------------------------------------------------------------------------------- schedules


def test_cosine_lr_is_applied_per_update_and_logged(snap: Snapshot, tmp_path: Path) -> None:
    # 8 updates an epoch, 3 epochs: the last update of epoch e is step 8e - 1 of 24
    c = config(epochs=3, lr_schedule="cosine")
    res = train(snap, c, tmp_path)
    assert [h["lr"] for h in res.history] == [pytest.approx(lr_at(8 * e - 1, 24, c.train)) for e in (1, 2, 3)]
    assert res.history[-1]["lr"] < 1e-4 < res.history[0]["lr"]
    constant = train(snap, config(epochs=3), tmp_path / "constant")
    assert [h["lr"] for h in constant.history] == [c.train.lr] * 3
    assert without_times(constant.history) != without_times(res.history)


def test_anneal_length_scales_with_updates_per_epoch(snap: Snapshot, tmp_path: Path) -> None:
    # 240 training users / batch 32 = 8 updates an epoch against ML-20M's 234: 2,340 paper steps become 80 here.
    assert effective_anneal_steps(TrainConfig(batch_size=32, total_anneal_steps=2_340), 240) == 80
    assert effective_anneal_steps(TrainConfig(total_anneal_steps=2_340, scale_anneal_to_data=False), 240) == 2_340
    res = train(snap, config(epochs=2, total_anneal_steps=2_340, anneal_cap=1.0, scale_anneal_to_data=True), tmp_path)
    assert [h["beta"] for h in res.history] == [pytest.approx(7 / 80), pytest.approx(15 / 80)]


def test_history_follows_the_per_step_schedule(snap: Snapshot, tmp_path: Path) -> None:
    # 240 training users / batch 32 = 8 updates per epoch; beta of the epoch's last update = min(cap, 7/10, ...)
    c = config(epochs=2, total_anneal_steps=10, anneal_cap=0.9)
    res = train(snap, c, tmp_path)
    assert [h["step"] for h in res.history] == [8, 16]
    assert [h["beta"] for h in res.history] == [pytest.approx(0.7), pytest.approx(0.9)]
    for h in res.history:
        assert HISTORY_KEYS <= set(h)
        assert all(np.isfinite(h[k]) for k in HISTORY_KEYS)
        assert h["loss"] == pytest.approx(h["neg_ll"] + h["beta"] * h["kl"], rel=0.05)


def test_beta_per_item_option_weights_kl_by_history_length(snap: Snapshot, tmp_path: Path) -> None:
    """train.beta_per_item=True (RecVAE): the KL part of the logged loss is beta x item count x KL, not beta x KL."""
    counts = np.asarray(snap.train.sum(1)).ravel()
    assert counts.min() >= 2
    res = train(snap, config(epochs=2, beta_schedule="constant", beta=0.01, beta_per_item=True), tmp_path / "a")
    for h in res.history:
        penalty = h["loss"] - h["neg_ll"]
        assert 0.9 * counts.min() * h["beta"] * h["kl"] < penalty < 1.1 * counts.max() * h["beta"] * h["kl"]
        assert penalty > 1.5 * h["beta"] * h["kl"]
    paper = train(snap, config(epochs=2, beta_schedule="constant", beta=0.01), tmp_path / "b")
    last = paper.history[-1]
    assert last["loss"] == pytest.approx(last["neg_ll"] + 0.01 * last["kl"], rel=1e-3)


def test_anneal_to_1_reports_beta_at_best_epoch(snap: Snapshot, tmp_path: Path) -> None:
    res = train(snap, config(epochs=3, beta_schedule="anneal_to_1", total_anneal_steps=16), tmp_path)
    assert res.history[-1]["beta"] == 1.0
    assert res.best_beta == res.history[res.best_epoch - 1]["beta"]


# ---------------------------------------------------------------------------------------- early stopping


def test_early_stopping_when_validation_stops_improving(planted: Planted, tmp_path: Path) -> None:
    # every item a validation user has not seen is relevant: NDCG is 1.0 at every epoch, so only epoch 1 counts
    foldin = planted.foldin
    heldout = sp.csr_matrix((foldin.toarray() == 0).astype(np.float32))
    calls = []
    res = fit_model(planted.train, (foldin, heldout), config(epochs=10, patience=2), tmp_path,
                    on_epoch_end=lambda e, m: calls.append((e, m)))
    assert res.stopped_early
    assert [h["val_ndcg@100"] for h in res.history] == [1.0, 1.0, 1.0]
    assert res.best_epoch == 1 and len(res.history) == 3
    assert [e for e, _ in calls] == [1, 2, 3] and HISTORY_KEYS <= set(calls[0][1])
    assert load_checkpoint(tmp_path / BEST_FILE)["epoch"] == 1


def test_best_epoch_is_the_best_validation_epoch(snap: Snapshot, tmp_path: Path) -> None:
    res = train(snap, config(epochs=5), tmp_path)
    values = [h["val_ndcg@100"] for h in res.history]
    assert res.best_epoch == int(np.argmax(values)) + 1
    assert res.best_metrics["ndcg@100"] == max(values)
    # the returned model is the best epoch's, also stored in best.pt
    foldin, heldout = snap.heldout("validation")
    again = evaluate(res.recommender.scores, foldin, heldout, ["ndcg@100"]).means["ndcg@100"]
    assert again == pytest.approx(max(values), abs=1e-6)
    assert torch.equal(load_best(tmp_path).scores(foldin), res.recommender.scores(foldin))
    assert not list(tmp_path.glob(".*.tmp"))


# ---------------------------------------------------------------------------------------------- resume


class Killed(RuntimeError):
    pass


def kill_after(epoch: int):
    def callback(e: int, metrics: dict) -> None:
        if e == epoch:
            raise Killed(f"killed after epoch {e}")

    return callback


def without_times(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIME_KEYS} for h in history]


@pytest.mark.parametrize("kind", ["vae", "recvae"])
def test_resume_after_interruption_is_exact(snap: Snapshot, tmp_path: Path, kind: str) -> None:
    c = config(kind, epochs=4)
    full = train(snap, c, tmp_path / "full")
    with pytest.raises(Killed):
        train(snap, c, tmp_path / "cut", on_epoch_end=kill_after(2))
    assert load_checkpoint(tmp_path / "cut" / LAST_FILE)["epoch"] == 2
    torch.manual_seed(12345)  # whatever happened in between must not matter
    np.random.seed(7)
    resumed = train(snap, c, tmp_path / "cut", resume=True)
    assert len(resumed.history) == 4
    assert without_times(resumed.history) == without_times(full.history)
    assert resumed.best_epoch == full.best_epoch and resumed.best_metrics == full.best_metrics
    for name in ("full", "cut"):
        assert torch.load(tmp_path / name / LAST_FILE, weights_only=True)["epoch"] == 4
    a = torch.load(tmp_path / "full" / LAST_FILE, weights_only=True)
    b = torch.load(tmp_path / "cut" / LAST_FILE, weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    best_a, best_b = full.recommender.module.state_dict(), resumed.recommender.module.state_dict()
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


def test_resume_can_extend_the_epochs(snap: Snapshot, tmp_path: Path) -> None:
    train(snap, config(epochs=2), tmp_path)
    more = train(snap, config(epochs=3), tmp_path, resume=True)
    assert [h["epoch"] for h in more.history] == [1, 2, 3]
    assert more.history[-1]["step"] == 24


def test_resume_with_cosine_lr_is_exact_and_keeps_its_epochs(snap: Snapshot, tmp_path: Path) -> None:
    c = config(epochs=3, lr_schedule="cosine")
    full = train(snap, c, tmp_path / "full")
    with pytest.raises(Killed):
        train(snap, c, tmp_path / "cut", on_epoch_end=kill_after(1))
    resumed = train(snap, c, tmp_path / "cut", resume=True)
    assert without_times(resumed.history) == without_times(full.history)
    # the schedule spans the epochs, so changing them would change the trajectory already run
    with pytest.raises(CheckpointMismatchError, match=r"train\.epochs"):
        train(snap, config(epochs=4, lr_schedule="cosine"), tmp_path / "cut", resume=True)


def test_resume_refuses_another_snapshot(planted: Planted, snap: Snapshot, tmp_path: Path) -> None:
    train(snap, config(epochs=1), tmp_path)
    other = make_snapshot(planted, drop_one=True)
    assert other.snapshot_id != snap.snapshot_id
    with pytest.raises(CheckpointMismatchError, match="snapshot_id.*" + snap.snapshot_id):
        train(other, config(epochs=2), tmp_path, resume=True)


def test_resume_refuses_another_config(snap: Snapshot, tmp_path: Path) -> None:
    train(snap, config(epochs=1), tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"train\.lr: checkpoint has 0\.005, this run has 0\.01"):
        train(snap, config(epochs=2, lr=1e-2), tmp_path, resume=True)
    changed = config(epochs=2)
    changed.model.latent_dim = 8
    with pytest.raises(CheckpointMismatchError, match=r"model\.latent_dim"):
        train(snap, changed, tmp_path, resume=True)
    with pytest.raises(CheckpointMismatchError, match="select_on"):
        train(snap, config(epochs=2), tmp_path, resume=True, select_on="test")


def test_checkpoints_load_without_pickle(snap: Snapshot, tmp_path: Path) -> None:
    train(snap, config(epochs=1), tmp_path)
    last = torch.load(tmp_path / LAST_FILE, weights_only=True)
    assert {"model", "optimizer", "step", "epoch", "history", "best", "rng", "fingerprint"} <= set(last)
    assert {"torch", "numpy", "python", "shuffle"} <= set(last["rng"])
    (tmp_path / LAST_FILE).write_bytes(b"not a checkpoint")
    (tmp_path / f"{LAST_FILE}.sha256").unlink()  # past the digest check: torch.load itself refuses it
    with pytest.raises(CheckpointCorruptError, match="weights_only"):
        train(snap, config(epochs=2), tmp_path, resume=True)


def flip_bytes(path: Path, n: int = 64) -> None:
    """Invert `n` bytes in the middle of a file (a bit rot or a bad copy torch.load may still read)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + n] = bytes(b ^ 0xFF for b in data[mid : mid + n])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", [LAST_FILE, BEST_FILE])
def test_resume_refuses_an_altered_checkpoint(snap: Snapshot, tmp_path: Path, name: str) -> None:
    """Each checkpoint's sha256 is written beside it and checked on load: flipped bytes are refused, naming the file."""
    train(snap, config(epochs=1), tmp_path)
    assert (tmp_path / f"{name}.sha256").exists()
    flip_bytes(tmp_path / name)
    before = (tmp_path / LAST_FILE).read_bytes()
    with pytest.raises(CheckpointCorruptError, match=rf"{name}.*sha256"):
        train(snap, config(epochs=2), tmp_path, resume=True)
    assert (tmp_path / LAST_FILE).read_bytes() == before  # nothing trained over it
    with pytest.raises(CheckpointCorruptError, match=name):
        load_checkpoint(tmp_path / name)


def test_resume_refuses_a_truncated_checkpoint(snap: Snapshot, tmp_path: Path) -> None:
    train(snap, config(epochs=1), tmp_path)
    data = (tmp_path / LAST_FILE).read_bytes()
    (tmp_path / LAST_FILE).write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointCorruptError, match=LAST_FILE):
        train(snap, config(epochs=2), tmp_path, resume=True)


def test_checkpoints_without_a_digest_still_resume_with_a_warning(snap: Snapshot, tmp_path: Path, caplog) -> None:
    """Checkpoints written before digests existed load unchecked, with a warning; the next save adds the digests."""
    train(snap, config(epochs=1), tmp_path)
    for name in (LAST_FILE, BEST_FILE):
        (tmp_path / f"{name}.sha256").unlink()
    with caplog.at_level("WARNING", logger="recvae.training.checkpoints"):
        more = train(snap, config(epochs=2), tmp_path, resume=True)
    assert [h["epoch"] for h in more.history] == [1, 2]
    assert "no sha256" in caplog.text and LAST_FILE in caplog.text
    assert (tmp_path / f"{LAST_FILE}.sha256").exists()


def test_a_kill_between_the_digest_and_the_rename_leaves_a_loadable_checkpoint(
    snap: Snapshot, tmp_path: Path, monkeypatch
) -> None:
    """The digest file is replaced before the checkpoint and keeps the previous digest: the old file still loads."""
    import recvae.training.checkpoints as checkpoints_mod

    train(snap, config(epochs=1), tmp_path)
    real_replace = checkpoints_mod.os.replace

    def killed(src, dst):
        if Path(dst).name == LAST_FILE:
            raise Killed("killed between the renames")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoints_mod.os, "replace", killed)
    with pytest.raises(Killed):
        train(snap, config(epochs=2), tmp_path, resume=True)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / LAST_FILE)["epoch"] == 1


# ------------------------------------------------------------------------------------ non-finite loss


def nan_at(step: int, monkeypatch) -> None:
    """Make the loss of update number `step` (1-based, counted over the whole run) NaN."""
    import recvae.training.updates as updates_mod

    real = updates_mod.negative_elbo
    calls = {"n": 0}

    def loss(*args, **kwargs):
        parts = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == step:
            return Loss(parts.loss * math.nan, parts.neg_ll, parts.kl)
        return parts

    monkeypatch.setattr(updates_mod, "negative_elbo", loss)


def test_a_nan_loss_stops_training_and_saves_nothing_of_that_epoch(snap: Snapshot, tmp_path: Path, monkeypatch) -> None:
    """8 updates an epoch: update 11 is epoch 2, batch 3. The run stops there; the checkpoints stay at epoch 1."""
    nan_at(11, monkeypatch)
    calls = []
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 2, batch 3 of 8") as info:
        train(snap, config(epochs=4), tmp_path, on_epoch_end=lambda e, m: calls.append(e))
    assert isinstance(info.value, ConfigError)  # a user error: one line and exit 2 from the CLI
    assert "train.lr" in str(info.value)
    assert calls == [1]
    assert load_checkpoint(tmp_path / LAST_FILE)["epoch"] == 1
    assert load_checkpoint(tmp_path / BEST_FILE)["epoch"] == 1


def test_a_diverging_learning_rate_stops_in_the_first_epoch(snap: Snapshot, tmp_path: Path) -> None:
    """lr=100 turns the weights to inf/NaN within a few updates: training stops in epoch 1, with no checkpoint."""
    with pytest.raises(NonFiniteLossError, match=r"(loss is nan|weights) .*epoch 1"):
        train(snap, config(epochs=50, lr=100.0), tmp_path)
    assert not (tmp_path / LAST_FILE).exists() and not (tmp_path / BEST_FILE).exists()


def test_non_finite_weights_after_a_finite_loss_are_caught(snap: Snapshot, tmp_path: Path, monkeypatch) -> None:
    """An update that turns the weights to NaN after the last batch's finite loss: still never checkpointed."""
    real_step = torch.optim.Adam.step
    count = {"n": 0}

    def step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        count["n"] += 1
        if count["n"] == 16:  # the last update of epoch 2
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(math.nan)
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    with pytest.raises(NonFiniteLossError, match="weights .* epoch 2"):
        train(snap, config(epochs=3), tmp_path)
    assert load_checkpoint(tmp_path / LAST_FILE)["epoch"] == 1


# ---------------------------------------------------------------------------------------- memory estimate


def test_a_model_too_large_for_memory_is_refused_before_anything_is_allocated(snap: Snapshot, tmp_path: Path) -> None:
    c = config()
    c.model.hidden_dims, c.model.latent_dim = (600,), 100_000_000  # 1.8e11 parameters: terabytes
    with pytest.raises(ConfigError, match=r"model\.latent_dim=100000000.*GiB") as info:
        train(snap, c, tmp_path / "out")
    assert "available" in str(info.value)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: setattr(c.model, "hidden_dims", (0,)), "layer sizes"),
        (lambda c: setattr(c.model, "latent_dim", 0), "layer sizes"),
        (lambda c: setattr(c.train, "anneal_cap", 1.5), "anneal_cap"),
        (lambda c: setattr(c.train, "beta_schedule", "cyclic"), "beta_schedule"),
        (lambda c: setattr(c.train, "lr_schedule", "step"), "lr_schedule"),
    ],
)
def test_config_errors_before_any_work(snap: Snapshot, tmp_path: Path, mutate, message: str) -> None:
    c = config()
    mutate(c)
    with pytest.raises(ConfigError, match=message):
        train(snap, c, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_select_on_needs_the_split(planted: Planted, tmp_path: Path) -> None:
    no_validation = make_snapshot(planted, validation=False)
    with pytest.raises(ConfigError, match="no validation users"):
        train(no_validation, config(), tmp_path / "a")
    assert not (tmp_path / "a").exists()
    on_test = train(no_validation, config(epochs=2), tmp_path / "b", select_on="test")
    assert on_test.select_on == "test" and on_test.history[-1]["val_ndcg@100"] > 0
    blind = train(no_validation, config(epochs=2), tmp_path / "c", select_on=None)
    assert blind.history[-1]["val_ndcg@100"] is None and blind.best_epoch == 2 and blind.best_metrics == {}
    with pytest.raises(ConfigError, match="select_on"):
        train(no_validation, config(), tmp_path / "d", select_on="train")
    with pytest.raises(ConfigError, match="patience"):
        train(no_validation, config(patience=3), tmp_path / "e", select_on=None)
    with pytest.raises(ConfigError, match="out_dir"):
        fit_model(planted.train, None, config(), None, resume=True, select_on=None)


# --------------------------------------------------------------------------------------------- quality


@pytest.mark.parametrize(("kind", "amp"), [("vae", "none"), ("dae", "none"), ("recvae", "none"), ("vae", "bf16")])
def test_beats_popularity_on_heldout_users(snap: Snapshot, tmp_path: Path, kind: str, amp: str) -> None:
    res = train(snap, config(kind, epochs=20, amp=amp), tmp_path)
    foldin, heldout = snap.heldout("test")
    counts = torch.from_numpy(np.asarray(snap.train.sum(axis=0)).ravel().astype(np.float32))
    names = ["ndcg@100", "recall@20"]
    model = evaluate(res.recommender.scores, foldin, heldout, names).means
    pop = evaluate(lambda X: counts.expand(X.shape[0], -1).clone(), foldin, heldout, names).means
    # the planted groups make a personalised model far better than popularity (about 0.8 vs 0.45 here)
    assert model["ndcg@100"] > pop["ndcg@100"] + 0.2
    assert model["recall@20"] > pop["recall@20"] + 0.2
    assert res.recommender.items == snap.items


def test_recvae_alternates_encoder_and_decoder_passes(snap: Snapshot, tmp_path: Path) -> None:
    """An epoch is encoder_epochs passes updating the encoder, then decoder_epochs updating the decoder."""
    res = train(snap, config("recvae", epochs=2, encoder_epochs=2, decoder_epochs=1), tmp_path)
    per_pass = -(-snap.train.shape[0] // 32)
    assert [h["step"] for h in res.history] == [3 * per_pass, 6 * per_pass]
    module = res.recommender.module
    assert module.phase is None and all(p.requires_grad for p in module.decoder.parameters())
    ckpt = load_checkpoint(tmp_path / LAST_FILE)
    # the prior took the encoder's weights after the last encoder phase, and the decoder phase changed neither
    for key, value in ckpt["model"].items():
        if key.startswith("encoder."):
            assert torch.equal(value, ckpt["model"]["prior_" + key]), key
    with pytest.raises(ConfigError, match="encoder_epochs"):
        train(snap, config("recvae", encoder_epochs=0), tmp_path / "bad")


def test_compile_trains_the_same_model_and_leaves_a_plain_module(snap: Snapshot, tmp_path: Path, monkeypatch) -> None:
    """train.compile=true goes through torch.compile; the loss follows the eager run; the module is never altered,
    not even while it trains (the compiled forward pass and likelihood are kept beside it)."""
    import recvae.training.loop as loop_mod

    built = []

    def build(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    real_build = loop_mod.build_module
    monkeypatch.setattr(loop_mod, "build_module", build)
    eager = train(snap, config(epochs=2), tmp_path / "eager")
    attributes: list[set[str]] = []
    compiled = train(snap, config(epochs=2, compile=True), tmp_path / "compiled",
                     on_epoch_end=lambda epoch, record: attributes.append(set(vars(built[-1]))))
    module = compiled.recommender.module
    assert module is built[-1] and len(attributes) == 2
    assert not {"forward", "nll"} & (attributes[0] | set(vars(module)))
    # the same objective; not bit-equal, as compiled dropout draws its random numbers differently
    for a, b in zip(eager.history, compiled.history, strict=True):
        assert abs(a["loss"] - b["loss"]) < 0.02 * abs(a["loss"])
    # a run may be resumed with compilation switched on or off: it does not change what is computed
    more = train(snap, config(epochs=3), tmp_path / "compiled", resume=True)
    assert [h["epoch"] for h in more.history] == [1, 2, 3]

"""Training of Mult-VAE / Mult-DAE: beta schedules, per-epoch validation, checkpoints, resume, early stopping."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recvae.config import Config, ConfigError, TrainConfig
from recvae.data.snapshot import Snapshot
from recvae.digest import sha256_file
from recvae.evaluation.metrics import evaluate
from recvae.models.multvae import (
    CSRBatch,
    ModelLoadError,
    MultVAE,
    MultVAERecommender,
    SparseRows,
    amp_dtype_for,
    autocast,
    build_module,
    load_state_file,
    multinomial_nll,
)

logger = logging.getLogger(__name__)

BEST_FILE = "best.pt"
LAST_FILE = "last.pt"
DIGEST_SUFFIX = ".sha256"  # last.pt.sha256: the checkpoint's sha256, then the one of the file it replaced
CHECKPOINT_FORMAT = 1
SELECT_ON = ("validation", "test", None)
SELECT_METRIC = "ndcg@100"
# metric computed each epoch -> its key in the history
EPOCH_METRICS = {"ndcg@100": "val_ndcg@100", "recall@20": "val_recall@20", "recall@50": "val_recall@50"}
# TrainConfig fields that may change between a run and its resumption: they do not alter the trajectory
# (epochs and patience only say when to stop, unless the lr schedule spans the epochs; a new device continues,
# though not bit for bit).
RESUME_MAY_CHANGE = frozenset({"epochs", "patience", "eval_batch_size", "num_threads", "device", "compile"})

EpochCallback = Callable[[int, dict[str, Any]], None]


class CheckpointMismatchError(ConfigError):
    """A checkpoint to resume from belongs to another snapshot, configuration or protocol."""


class CheckpointCorruptError(CheckpointMismatchError):
    """A checkpoint does not match the sha256 written beside it, or cannot be read (altered, truncated, corrupt)."""


class NonFiniteLossError(ConfigError):
    """Training diverged (a NaN/inf loss or weights): the settings, most often train.lr, do not suit this data."""


# ------------------------------------------------------------------------------------------ beta schedule


def beta_at(step: int, config: TrainConfig) -> float:
    """KL weight of update number `step` (0-based): linear to the cap, constant, or linear to 1 ('anneal_to_1')."""
    if config.beta_schedule == "constant":
        return float(config.beta)
    cap = 1.0 if config.beta_schedule == "anneal_to_1" else config.anneal_cap
    return float(min(cap, step / config.total_anneal_steps))


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Learning rate of update number `step` (0-based) of `total_steps`: constant, or cosine from lr to 0."""
    if config.lr_schedule == "constant":
        return float(config.lr)
    return float(0.5 * config.lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)))


def paper_equivalent_anneal_steps(n_train_users: int, batch_size: int = 500, paper_steps: int = 200_000) -> int:
    """total_anneal_steps that puts beta where the paper's `paper_steps` put it on ML-20M, at the same epoch.

    On ML-20M (116,677 training users, batch 500: 234 updates per epoch) beta reaches 0.2 at epoch ~171 of 200;
    on a smaller data set the constant 200,000 leaves beta near 0 for the whole run.
    """
    ml20m_steps_per_epoch = math.ceil(116_677 / 500)
    steps_per_epoch = math.ceil(n_train_users / batch_size)
    return max(1, round(paper_steps * steps_per_epoch / ml20m_steps_per_epoch))


def effective_anneal_steps(config: TrainConfig, n_train_users: int) -> int:
    """The anneal length used on this data: rescaled from ML-20M's updates per epoch unless scaling is off."""
    if not config.scale_anneal_to_data:
        return config.total_anneal_steps
    return paper_equivalent_anneal_steps(n_train_users, config.batch_size, config.total_anneal_steps)


# ---------------------------------------------------------------------------------------------- results


@dataclass
class TrainResult:
    """The best model and how training went."""

    recommender: MultVAERecommender  # weights of the best epoch (the last one when nothing is evaluated)
    history: list[dict[str, Any]]
    best_epoch: int
    best_metrics: dict[str, float]  # the selection split's metrics at the best epoch (empty without evaluation)
    best_beta: float | None  # KL weight at the best epoch (None for the DAE)
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    select_on: str | None
    stopped_early: bool = False


@dataclass
class _State:
    """Everything that evolves during training, apart from the module and the optimizer."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed updates
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_value: float = -math.inf
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_beta: float | None = None
    best_state: dict[str, torch.Tensor] | None = None


# ------------------------------------------------------------------------------------------ entry points


def train(
    snapshot: Snapshot,
    config: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    select_on: str | None = "validation",
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train on a snapshot's training users; pick the epoch on `select_on` users ('validation', 'test' or None)."""
    config.validate()
    _check_select_on(select_on)
    if select_on is not None and not snapshot.has(select_on):
        hint = "pass select_on=None to train without evaluation" if select_on == "validation" else ""
        raise ConfigError(f"snapshot {snapshot.snapshot_id} has no {select_on} users to select the epoch on; {hint}".rstrip("; "))
    if "train" not in snapshot.matrices:
        raise ConfigError(f"snapshot {snapshot.snapshot_id} has no train part")
    validation = snapshot.heldout(select_on) if select_on is not None else None
    result = fit_model(
        snapshot.train,
        validation,
        config,
        out_dir,
        snapshot_id=snapshot.snapshot_id,
        resume=resume,
        select_on=select_on,
        on_epoch_end=on_epoch_end,
    )
    result.recommender.items = snapshot.items
    return result


def fit_model(
    train_matrix: sp.csr_matrix,
    validation: tuple[sp.csr_matrix, sp.csr_matrix] | None,
    config: Config,
    out_dir: str | Path | None = None,
    *,
    snapshot_id: str | None = None,
    resume: bool = False,
    select_on: str | None = "validation",
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train on a users x items matrix; `validation=(fold_in, held_out)` is evaluated every epoch.

    Without `out_dir` nothing is written and the best weights are kept in memory only.
    """
    tc = config.train
    config.validate()
    _check_inputs(train_matrix, validation, tc, select_on, out_dir, resume)
    check_memory(config, train_matrix.shape[1], train_matrix.shape[0], resolve_device(tc))
    threads = torch.get_num_threads()
    if tc.num_threads is not None:
        torch.set_num_threads(tc.num_threads)
    try:
        return _fit(train_matrix, validation, config, out_dir, snapshot_id, resume, select_on, on_epoch_end)
    finally:
        torch.set_num_threads(threads)  # the setting is process-wide: leave it as it was


def _fit(
    train_matrix: sp.csr_matrix,
    validation: tuple[sp.csr_matrix, sp.csr_matrix] | None,
    config: Config,
    out_dir: str | Path | None,
    snapshot_id: str | None,
    resume: bool,
    select_on: str | None,
    on_epoch_end: EpochCallback | None,
) -> TrainResult:
    tc, mc = config.train, config.model
    device = resolve_device(tc)
    n_users, n_items = train_matrix.shape
    anneal = dataclasses.replace(tc, total_anneal_steps=effective_anneal_steps(tc, n_users), scale_anneal_to_data=False)
    if tc.beta_schedule != "constant" and mc.kind == "vae":
        logger.info("beta annealed over %d steps (%d updates an epoch)", anneal.total_anneal_steps,
                    math.ceil(n_users / tc.batch_size))
    seed_everything(tc.seed)
    module = build_module(n_items, mc).to(device)
    # fused: one kernel for all parameters (1.02x in fp32, 1.17x with bf16 on ML-1M: bench/results/train_speed.md)
    trainable = [p for p in module.parameters() if p.requires_grad]  # not RecVAE's frozen prior encoder
    optimizer = torch.optim.Adam(trainable, lr=tc.lr, fused=True)
    amp_dtype = amp_dtype_for(tc.amp, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    shuffle_gen = torch.Generator().manual_seed(tc.seed)
    fingerprint = _fingerprint(config, snapshot_id, select_on, train_matrix.shape)

    out = Path(out_dir) if out_dir is not None else None
    best_path = out / BEST_FILE if out else None
    last_path = out / LAST_FILE if out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    state = _State()
    if resume:
        assert last_path is not None and best_path is not None
        if last_path.exists():
            state = _restore(last_path, best_path, fingerprint, module, optimizer, scaler, shuffle_gen, device)
            logger.info("resuming from %s after epoch %d (step %d)", last_path, state.epoch, state.step)
        else:
            logger.warning("resume requested but %s does not exist: starting from scratch", last_path)

    rows = SparseRows(train_matrix, device)
    weights = module.weights()
    if tc.compile:
        # instance attributes shadow the class's: removed again below, so the returned module is a plain one
        module.forward = torch.compile(module.forward, dynamic=True)
        module.nll = torch.compile(multinomial_nll, dynamic=True)
    # passes over the training users per epoch: one updating everything, or RecVAE's alternating phases
    phases: list[str | None] = (["encoder"] * tc.encoder_epochs + ["decoder"] * tc.decoder_epochs
                                if getattr(module, "alternating", False) else [None])
    total_steps = tc.epochs * len(phases) * math.ceil(n_users / tc.batch_size)
    stopped_early = False
    bar = _progress_bar(tc.epochs, state.epoch, f"train {mc.kind.upper()}")
    try:
        for epoch in range(state.epoch + 1, tc.epochs + 1):
            if tc.patience is not None and state.epoch - state.best_epoch >= tc.patience:
                stopped_early = True
                logger.info("early stop: no better validation %s for %d epochs", SELECT_METRIC, tc.patience)
                break
            t0 = time.perf_counter()
            module.train()
            sums = torch.zeros(3, device=device)
            batch_losses: list[torch.Tensor] = []  # never synced, unless the epoch's loss is not finite
            beta, lr = 0.0, tc.lr
            for phase in phases:
                if phase == "decoder" and module.phase == "encoder":
                    module.update_prior()  # RecVAE: the prior follows the encoder after each encoder phase
                if phase is not None:
                    module.set_phase(phase)
                perm = torch.randperm(n_users, generator=shuffle_gen).to(device)
                for start in range(0, n_users, tc.batch_size):
                    batch = rows.batch(perm[start : start + tc.batch_size])
                    beta = beta_at(state.step, anneal)
                    lr = lr_at(state.step, total_steps, tc)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    with autocast(device, amp_dtype):
                        parts = module.loss(batch, beta, tc.beta_per_item)
                    loss = parts.loss
                    if tc.weight_decay > 0:
                        # the reference's L2 term: lam * sum of squared weights (biases excluded)
                        loss = loss + tc.weight_decay * sum(w.pow(2).sum() for w in weights)
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        loss.backward()
                        optimizer.step()  # parameters frozen in this phase have no gradient and are skipped
                    state.step += 1
                    batch_losses.append(loss.detach())
                    sums += torch.stack([loss.detach(), parts.neg_ll.detach(), parts.kl.detach()]) * batch.n_rows
            if phases != [None]:
                module.set_phase(None)
            # the one sync of the epoch also reads a sum over the weights: a NaN/inf anywhere shows in it
            loss_v, nll_v, kl_v, weight_sum = torch.cat([sums / (n_users * len(phases)), _weight_sum(module)]).tolist()
            _stop_if_diverged(epoch, [loss_v, nll_v, kl_v], weight_sum, batch_losses, tc)  # before anything is saved
            train_time = time.perf_counter() - t0

            record: dict[str, Any] = {
                "epoch": epoch,
                "loss": loss_v,
                "neg_ll": nll_v,
                "kl": kl_v,
                "beta": beta,
                "lr": lr,
                "step": state.step,
                "epoch_time_s": train_time,
            }
            record.update({key: None for key in EPOCH_METRICS.values()})
            t1 = time.perf_counter()
            if validation is not None:
                means = _evaluate(module, validation, tc.eval_batch_size, device, amp_dtype)
                record.update({EPOCH_METRICS[name]: means[name] for name in EPOCH_METRICS})
                record["eval_time_s"] = time.perf_counter() - t1
            state.epoch = epoch
            state.history.append(record)

            improved = validation is None or record[EPOCH_METRICS[SELECT_METRIC]] > state.best_value
            if improved:
                state.best_epoch = epoch
                state.best_value = record[EPOCH_METRICS[SELECT_METRIC]] if validation is not None else -math.inf
                state.best_metrics = {name: record[key] for name, key in EPOCH_METRICS.items()} if validation is not None else {}
                state.best_beta = beta if module.variational else None
                state.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            checkpoints = []
            if improved and best_path is not None:
                checkpoints.append((_best_payload(module, config, state, snapshot_id), best_path))
            if last_path is not None:
                checkpoints.append((_last_payload(module, optimizer, scaler, shuffle_gen, fingerprint, state), last_path))
            _save_checkpoints(checkpoints)

            logger.info(
                "epoch %d/%d loss %.4f neg_ll %.4f kl %.4f beta %.4f val ndcg@100 %s (%.2fs)",
                epoch, tc.epochs, loss_v, nll_v, kl_v, beta, _fmt(record["val_ndcg@100"]), train_time,
            )
            bar.set_postfix(loss=f"{loss_v:.3f}", kl=f"{kl_v:.3f}", beta=f"{beta:.3f}", ndcg=_fmt(record["val_ndcg@100"]))
            bar.update(1)
            # after the checkpoint: a callback failure leaves a resumable run behind
            if on_epoch_end is not None:
                on_epoch_end(epoch, dict(record))
    finally:
        bar.close()
        if tc.compile:
            del module.forward, module.nll

    if state.best_state is None:  # resumed a run that had already finished, or zero epochs left
        state.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        state.best_epoch = state.best_epoch or state.epoch
    module.load_state_dict(state.best_state)
    module.eval()
    rec = MultVAERecommender(n_items, copy.deepcopy(mc), copy.deepcopy(tc), module)
    return TrainResult(
        recommender=rec,
        history=state.history,
        best_epoch=state.best_epoch,
        best_metrics=state.best_metrics,
        best_beta=state.best_beta,
        best_checkpoint=best_path if best_path is not None and best_path.exists() else None,
        last_checkpoint=last_path if last_path is not None and last_path.exists() else None,
        select_on=select_on if validation is not None else None,
        stopped_early=stopped_early,
    )


def load_best(path: str | Path) -> MultVAERecommender:
    """The recommender stored in a best.pt checkpoint (or a run directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST_FILE
    return MultVAERecommender.from_state(load_checkpoint(path), source=path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint dict, checked against its sha256 file and read with torch.load(weights_only=True)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointMismatchError(f"{path}: file not found")
    _verify_digest(path)
    try:
        state = load_state_file(path)
    except ModelLoadError as exc:
        raise CheckpointCorruptError(str(exc)) from exc
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(f"{path}: checkpoint format {state.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    return state


# ------------------------------------------------------------------------------------------------ checks


def _check_select_on(select_on: str | None) -> None:
    if select_on not in SELECT_ON:
        raise ConfigError(f"select_on must be 'validation', 'test' or None; got {select_on!r}")


def _check_inputs(
    train_matrix: sp.spmatrix,
    validation: tuple[sp.spmatrix, sp.spmatrix] | None,
    tc: TrainConfig,
    select_on: str | None,
    out_dir: str | Path | None,
    resume: bool,
) -> None:
    """ConfigError for anything that would fail or be meaningless, before any work starts."""
    _check_select_on(select_on)
    if not sp.issparse(train_matrix):
        raise ConfigError(f"the training matrix must be a scipy sparse matrix; got {type(train_matrix).__name__}")
    if train_matrix.shape[0] == 0 or train_matrix.nnz == 0:
        raise ConfigError(f"the training matrix {train_matrix.shape} has no interactions")
    if select_on is not None and validation is None:
        raise ConfigError(f"select_on={select_on!r} needs (fold-in, held-out) matrices; none were given")
    if validation is not None:
        foldin, heldout = validation
        if foldin.shape[0] == 0:
            raise ConfigError(f"no {select_on or 'validation'} users to evaluate on; use select_on=None to train without evaluation")
        for name, m in (("fold-in", foldin), ("held-out", heldout)):
            if m.shape[1] != train_matrix.shape[1]:
                raise ConfigError(f"{name} matrix has {m.shape[1]} items; the training matrix has {train_matrix.shape[1]}")
        if foldin.shape != heldout.shape:
            raise ConfigError(f"fold-in {foldin.shape} and held-out {heldout.shape} shapes differ")
    else:
        if tc.patience is not None:
            raise ConfigError("train.patience (early stopping) needs evaluation; use select_on='validation' or 'test'")
        if tc.beta_schedule == "anneal_to_1":
            raise ConfigError("beta_schedule 'anneal_to_1' picks beta by evaluation; use select_on='validation' or 'test'")
    if resume and out_dir is None:
        raise ConfigError("resume=True needs out_dir (where last.pt is)")
    if tc.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available")


def training_memory_bytes(config: Config, n_items: int, n_users: int) -> int:
    """A low estimate of what training needs: weights, gradients, Adam's two moments and the best epoch's copy (4 bytes
    each), plus one batch's logits and their gradient; counted on a module built on the meta device (no memory)."""
    with torch.device("meta"):
        module = build_module(n_items, config.model)
    tensors = [*module.parameters(), *module.buffers()]
    n_all = sum(t.numel() for t in tensors)
    n_trained = sum(p.numel() for p in module.parameters() if p.requires_grad)
    batch = min(config.train.batch_size, n_users)
    return 4 * (2 * n_all + 3 * n_trained) + 4 * 2 * batch * n_items


def available_memory(device: torch.device) -> int | None:
    """Bytes free on `device`: the GPU's free memory, or the host's available memory within its cgroup limit."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    found = []
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        found.append(int(meminfo["MemAvailable"].split()[0]) * 1024)
    except (OSError, KeyError, ValueError):
        pass
    try:  # a container's limit (cgroup v2), which /proc/meminfo does not show; its page cache is reclaimable
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            stat = dict(line.split() for line in (cgroup / "memory.stat").read_text().splitlines())
            used = int((cgroup / "memory.current").read_text()) - int(stat.get("inactive_file", 0))
            found.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def check_memory(config: Config, n_items: int, n_users: int, device: torch.device) -> None:
    """ConfigError, naming the sizes and the estimate, when training would need more memory than `device` has free."""
    need = training_memory_bytes(config, n_items, n_users)
    have = available_memory(device)
    if have is not None and need > have:
        mc = config.model
        raise ConfigError(
            f"model.hidden_dims={list(mc.hidden_dims)}, model.latent_dim={mc.latent_dim} and "
            f"train.batch_size={config.train.batch_size} on {n_items:,} items need about {need / 2**30:,.1f} GiB to "
            f"train (weights, gradients, Adam moments, the best epoch's copy), more than the {have / 2**30:,.1f} GiB "
            f"available on {device.type}"
        )


def _weight_sum(module: torch.nn.Module) -> torch.Tensor:
    """Sum of every weight, as a 1-element tensor: finite unless a weight is NaN or inf."""
    return torch.stack([p.detach().float().sum() for p in module.parameters()]).sum().reshape(1)


def _stop_if_diverged(epoch: int, means: list[float], weight_sum: float, batch_losses: list[torch.Tensor],
                  tc: TrainConfig) -> None:
    """NonFiniteLossError when the epoch's loss or the weights are NaN/inf, naming the first bad batch."""
    if all(math.isfinite(v) for v in means) and math.isfinite(weight_sum):
        return
    losses = torch.stack(batch_losses).float().cpu()
    bad = torch.nonzero(~torch.isfinite(losses)).flatten().tolist()
    advice = f"nothing of epoch {epoch} was saved; lower train.lr (now {tc.lr:g}) or check the data"
    if bad:
        where = f"at epoch {epoch}, batch {bad[0] + 1} of {len(losses)}"
        raise NonFiniteLossError(f"training diverged: the loss is {losses[bad[0]].item()} {where}; {advice}")
    raise NonFiniteLossError(f"training diverged: the weights became nan or inf in epoch {epoch} "
                             f"(every batch's loss was finite); {advice}")


def resolve_device(tc: TrainConfig) -> torch.device:
    """CUDA when requested or (auto) available, else the CPU."""
    if tc.device == "cuda" or (tc.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _evaluate(
    module: MultVAE,
    validation: tuple[sp.csr_matrix, sp.csr_matrix],
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> dict[str, float]:
    """Mean NDCG@100 / Recall@20 / Recall@50 of held-out users scored from their fold-in rows."""
    module.eval()

    def score(X: sp.csr_matrix) -> torch.Tensor:
        with autocast(device, amp_dtype):
            logits = module.predict(CSRBatch.from_scipy(X, device))
        return logits.float()

    foldin, heldout = validation
    return evaluate(score, foldin, heldout, tuple(EPOCH_METRICS), batch_size=batch_size, device=device).means


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _progress_bar(total: int, initial: int, desc: str):
    """A manual tqdm epoch bar (needs set_postfix), quiet when recvae.log says progress bars are off."""
    from tqdm.auto import tqdm

    from recvae.log import progress_disabled

    return tqdm(total=total, initial=initial, desc=desc, unit="epoch", leave=False, disable=progress_disabled(), file=sys.stderr)


# ------------------------------------------------------------------------------------------- checkpoints


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _fingerprint(config: Config, snapshot_id: str | None, select_on: str | None, shape: tuple[int, int]) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed."""
    may_change = RESUME_MAY_CHANGE - ({"epochs"} if config.train.lr_schedule != "constant" else set())
    train = {k: v for k, v in dataclasses.asdict(config.train).items() if k not in may_change}
    model = dataclasses.asdict(config.model)
    return {
        "snapshot_id": snapshot_id,
        "select_on": select_on,
        "train_shape": [int(shape[0]), int(shape[1])],
        "model": {k: list(v) if isinstance(v, tuple) else v for k, v in model.items()},
        "train": train,
    }


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current)):
            name = f"{prefix}.{key}" if prefix else str(key)
            out += _differences(saved.get(key), current.get(key), name)
        return out
    return [] if saved == current else [f"{prefix}: checkpoint has {saved!r}, this run has {current!r}"]


def _rng_states(shuffle_gen: torch.Generator) -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
        "shuffle": shuffle_gen.get_state(),
    }


def _set_rng_states(states: dict[str, Any], shuffle_gen: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    shuffle_gen.set_state(states["shuffle"])


def _best_payload(module: MultVAE, config: Config, state: _State, snapshot_id: str | None) -> dict[str, Any]:
    """A best.pt: loadable as a recommender state (MultVAERecommender.from_state)."""
    rec = MultVAERecommender(module.n_items, config.model, config.train, module)
    params = rec.params()
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": rec.kind,
        "snapshot_id": snapshot_id,
        "model_args": module.model_args(),
        "model_config": params["model"],
        "train_config": params["train"],
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "epoch": state.best_epoch,
        "metrics": dict(state.best_metrics),
        "beta": state.best_beta,
    }


def _last_payload(
    module: MultVAE,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    shuffle_gen: torch.Generator,
    fingerprint: dict[str, Any],
    state: _State,
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "model_args": module.model_args(),
        "model": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": state.epoch,
        "step": state.step,
        "history": state.history,
        "best": {"epoch": state.best_epoch, "value": state.best_value, "metrics": state.best_metrics, "beta": state.best_beta},
        "rng": _rng_states(shuffle_gen),
    }


def _restore(
    last_path: Path,
    best_path: Path,
    fingerprint: dict[str, Any],
    module: MultVAE,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    shuffle_gen: torch.Generator,
    device: torch.device,
) -> _State:
    """Load last.pt (and the best weights from best.pt) into the module, optimizer and RNGs."""
    ckpt = load_checkpoint(last_path)
    diffs = _differences(ckpt.get("fingerprint"), fingerprint)
    if diffs:
        raise CheckpointMismatchError(f"{last_path} was written by another run; refusing to resume: " + "; ".join(diffs))
    module.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and ckpt.get("scaler") is not None:
        scaler.load_state_dict(ckpt["scaler"])
    _set_rng_states(ckpt["rng"], shuffle_gen)
    best = ckpt["best"]
    state = _State(
        epoch=int(ckpt["epoch"]),
        step=int(ckpt["step"]),
        history=list(ckpt["history"]),
        best_epoch=int(best["epoch"]),
        best_value=float(best["value"]),
        best_metrics=dict(best["metrics"]),
        best_beta=best["beta"],
    )
    if state.best_epoch > 0:
        saved = load_checkpoint(best_path)
        if saved.get("epoch") != state.best_epoch:
            raise CheckpointMismatchError(
                f"{best_path} holds epoch {saved.get('epoch')} but {last_path} says the best epoch is {state.best_epoch}"
            )
        state.best_state = {k: v.to(device) for k, v in saved["state_dict"].items()}
    return state


def _save_checkpoints(checkpoints: list[tuple[dict[str, Any], Path]]) -> None:
    """Write each checkpoint to a temporary file beside it, then its digest and rename them all: the slow writes
    come first, so a kill leaves the previous best.pt/last.pt pair (all but a few system calls' time)."""
    staged = []
    for obj, path in checkpoints:
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(obj, tmp)
        staged.append((tmp, path, sha256_file(tmp)))
    for tmp, path, digest in staged:
        _write_digest(path, digest)
        os.replace(tmp, path)


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def _write_digest(path: Path, digest: str) -> None:
    """`path`.sha256: the new file's digest, then the current one's, so a kill before the rename still verifies."""
    sidecar = _digest_path(path)
    previous = sidecar.read_text().split()[:1] if sidecar.exists() else []
    tmp = sidecar.with_name(f".{sidecar.name}.tmp")
    tmp.write_text("\n".join([digest, *previous]) + "\n")
    os.replace(tmp, sidecar)


def _verify_digest(path: Path) -> None:
    """CheckpointCorruptError unless `path` has a sha256 written beside it (none: an older checkpoint, warned about)."""
    sidecar = _digest_path(path)
    if not sidecar.exists():
        logger.warning("%s has no sha256 beside it (written before checkpoints had digests): loaded unchecked", path)
        return
    actual = sha256_file(path)
    if actual not in sidecar.read_text().split():
        raise CheckpointCorruptError(
            f"{path}: sha256 {actual[:16]}... does not match {sidecar.name}: the checkpoint was altered or is corrupt; "
            f"restore it, or delete {path.parent} to train from scratch"
        )

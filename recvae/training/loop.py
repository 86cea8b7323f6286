"""The epoch loop of Mult-VAE / Mult-DAE / RecVAE: per-epoch validation, the best epoch kept, checkpoints, resume,
early stopping. Schedules, checkpoints, the memory check and each model's updates live beside it."""

from __future__ import annotations

import copy
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recvae.config import Config, ConfigError, TrainConfig
from recvae.data.snapshot import Snapshot
from recvae.evaluation.metrics import evaluate
from recvae.models.amp import amp_dtype_for, autocast
from recvae.models.neural import MultVAERecommender, build_module
from recvae.models.sparse import CSRBatch, SparseRows
from recvae.training.checkpoints import (
    BEST_FILE,
    LAST_FILE,
    Resumable,
    TrainState,
    best_payload,
    fingerprint,
    last_payload,
    restore,
    save_checkpoints,
)
from recvae.training.checks import (
    NonFiniteLossError,
    check_inputs,
    check_select_on,
    stop_if_diverged,
    weight_sum,
)
from recvae.training.distributed import Ranks, all_reduce_sum, everywhere, from_main, ranks
from recvae.training.memory import check_memory
from recvae.training.schedules import beta_at, lr_at, on_data
from recvae.training.updates import AlternatingUpdates, JointUpdates, UpdateStep, updates_for

logger = logging.getLogger(__name__)

SELECT_METRIC = "ndcg@100"
# metric computed each epoch -> its key in the history
EPOCH_METRICS = {"ndcg@100": "val_ndcg@100", "recall@20": "val_recall@20", "recall@50": "val_recall@50"}

EpochCallback = Callable[[int, dict[str, Any]], None]


@dataclass
class TrainResult:
    """The best model and how training went."""

    # weights of the best epoch (the last one when nothing is evaluated, and on every rank but 0 of a distributed run)
    recommender: MultVAERecommender
    history: list[dict[str, Any]]
    best_epoch: int
    best_metrics: dict[str, float]  # the selection split's metrics at the best epoch (empty without evaluation)
    best_beta: float | None  # KL weight at the best epoch (None for the DAE)
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    select_on: str | None
    stopped_early: bool = False


@dataclass
class _Run(Resumable):
    """One fit's fixed parts: the data on the device, the module's updates, the schedules and the checkpoint paths."""

    config: Config
    device: torch.device
    rows: SparseRows
    amp_dtype: torch.dtype | None
    updates: JointUpdates | AlternatingUpdates
    step: UpdateStep
    anneal: TrainConfig  # the train section with this data's anneal length
    total_steps: int
    fingerprint: dict[str, Any]
    snapshot_id: str | None
    best_path: Path | None  # None on ranks other than 0: rank 0 alone writes checkpoints
    last_path: Path | None
    ranks: Ranks

    @property
    def n_users(self) -> int:
        """Training users (rows of the training matrix)."""
        return int(self.rows.shape[0])


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
    check_select_on(select_on)
    if select_on is not None and not snapshot.has(select_on):
        hint = "pass select_on=None to train without evaluation" if select_on == "validation" else ""
        message = f"snapshot {snapshot.snapshot_id} has no {select_on} users to select the epoch on; {hint}"
        raise ConfigError(message.rstrip("; "))
    if "train" not in snapshot.matrices:
        raise ConfigError(f"snapshot {snapshot.snapshot_id} has no train part")
    validation = snapshot.heldout(select_on) if select_on is not None else None
    result = fit_model(snapshot.train, validation, config, out_dir, snapshot_id=snapshot.snapshot_id, resume=resume,
                       select_on=select_on, on_epoch_end=on_epoch_end)
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
    check_inputs(train_matrix, validation, tc, select_on, out_dir, resume)
    check_memory(config, train_matrix.shape[1], train_matrix.shape[0], resolve_device(tc))
    threads = torch.get_num_threads()
    if tc.num_threads is not None:
        torch.set_num_threads(tc.num_threads)
    try:
        run = _start(train_matrix, config, out_dir, snapshot_id, select_on)
        state = _share_start(run, resume)
        return _fit(run, state, validation, select_on, on_epoch_end)
    finally:
        torch.set_num_threads(threads)  # the setting is process-wide: leave it as it was


@dataclass
class VAETrainer:
    """The estimator of the neural models (`recvae.models.base.Estimator`): `fit` trains a network of
    `config.model.kind` and returns the `MultVAERecommender` of its best epoch; `result` tells how it went."""

    config: Config
    result: TrainResult | None = None

    def fit(self, train: sp.csr_matrix, validation: tuple[sp.csr_matrix, sp.csr_matrix] | None = None,
            out_dir: str | Path | None = None, **options: Any) -> MultVAERecommender:
        """Train on `train`; with `validation=(fold_in, held_out)` the epoch with the best NDCG@100 is kept.
        `options` are fit_model's (resume, on_epoch_end, snapshot_id)."""
        select_on = "validation" if validation is not None else None
        self.result = fit_model(train, validation, self.config, out_dir, select_on=select_on, **options)
        return self.result.recommender


# --------------------------------------------------------------------------------------------- the loop


def _start(train_matrix: sp.csr_matrix, config: Config, out_dir: str | Path | None, snapshot_id: str | None,
           select_on: str | None) -> _Run:
    """Seed, build the module, its optimizer and updates, and put the training rows on the device."""
    tc = config.train
    device = resolve_device(tc)
    n_users, n_items = train_matrix.shape
    where = ranks()
    if tc.nproc > 1 and where.world == 1:
        logger.warning("train.nproc=%d: this process trains alone (recvae train and the pipeline's train step start "
                       "the processes; fit_model joins a process group torchrun started)", tc.nproc)
    seed_everything(tc.seed)
    module = build_module(n_items, config.model).to(device)
    trainable = [p for p in module.parameters() if p.requires_grad]  # not RecVAE's frozen prior encoder
    optimizer = torch.optim.Adam(trainable, lr=tc.lr, fused=True)  # fused: one kernel for all parameters
    amp_dtype = amp_dtype_for(tc.amp, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    updates = updates_for(module, tc)
    anneal = on_data(tc, n_users)
    if tc.beta_schedule != "constant" and module.variational and where.main:
        logger.info("beta annealed over %d steps (%d updates an epoch)", anneal.total_anneal_steps,
                    math.ceil(n_users / tc.batch_size))
    out = Path(out_dir) if out_dir is not None and where.main else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    return _Run(
        module=module, optimizer=optimizer, scaler=scaler, shuffle_gen=torch.Generator().manual_seed(tc.seed),
        config=config, device=device, rows=SparseRows(train_matrix, device), amp_dtype=amp_dtype, updates=updates,
        step=UpdateStep.build(module, optimizer, scaler, device, amp_dtype, tc, where), anneal=anneal,
        total_steps=tc.epochs * updates.n_passes * math.ceil(n_users / tc.batch_size),
        fingerprint=fingerprint(config, snapshot_id, select_on, train_matrix.shape), snapshot_id=snapshot_id,
        best_path=out / BEST_FILE if out else None, last_path=out / LAST_FILE if out else None, ranks=where,
    )


def _share_start(run: _Run, resume: bool) -> TrainState:
    """The starting state: fresh or resumed from last.pt by rank 0, whose weights, optimizer, grad scaler, shuffle
    and step every other rank then takes (so all start alike, whatever their files; a refused resume stops all)."""
    if run.ranks.world == 1:
        return _resume(run) if resume else TrainState()
    kept: list[TrainState] = []

    def start() -> dict[str, Any]:
        state = _resume(run) if resume else TrainState()
        kept.append(state)
        return _to_cpu({"epoch": state.epoch, "step": state.step, "best_epoch": state.best_epoch,
                        "model": run.module.state_dict(), "optimizer": run.optimizer.state_dict(),
                        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
                        "shuffle": run.shuffle_gen.get_state()})

    sent = from_main(start, run.ranks)
    if run.ranks.main:
        return kept[0]
    run.module.load_state_dict(sent["model"])
    run.optimizer.load_state_dict(sent["optimizer"])
    if run.scaler is not None and sent["scaler"] is not None:
        run.scaler.load_state_dict(sent["scaler"])
    run.shuffle_gen.set_state(sent["shuffle"])
    return TrainState(epoch=sent["epoch"], step=sent["step"], best_epoch=sent["best_epoch"])


def _to_cpu(obj: Any) -> Any:
    """Tensors of a nested state moved to the CPU (sent to every rank, each loads them onto its own device)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _resume(run: _Run) -> TrainState:
    """The state last.pt saved, restored into the run; a fresh state when there is none."""
    assert run.last_path is not None and run.best_path is not None  # check_inputs: resume needs out_dir
    if not run.last_path.exists():
        logger.warning("resume requested but %s does not exist: starting from scratch", run.last_path)
        return TrainState()
    state = restore(run.last_path, run.best_path, run.fingerprint, run, run.device)
    logger.info("resuming from %s after epoch %d (step %d)", run.last_path, state.epoch, state.step)
    return state


def _fit(run: _Run, state: TrainState, validation: tuple[sp.csr_matrix, sp.csr_matrix] | None,
         select_on: str | None, on_epoch_end: EpochCallback | None) -> TrainResult:
    tc = run.config.train
    stopped_early = False
    main = run.ranks.main  # rank 0 alone evaluates, checkpoints, reports and decides when to stop
    evaluated = validation is not None and main
    bar = _progress_bar(tc.epochs, state.epoch, f"train {run.config.model.kind.upper()}", main)
    try:
        for epoch in range(state.epoch + 1, tc.epochs + 1):
            if from_main(lambda: _patience_over(tc, state), run.ranks):
                stopped_early = True
                if main:
                    logger.info("early stop: no better validation %s for %d epochs", SELECT_METRIC, tc.patience)
                break
            record = _train_epoch(run, state, epoch)
            record.update({key: None for key in EPOCH_METRICS.values()})
            if evaluated:
                assert validation is not None
                t0 = time.perf_counter()
                means = _evaluate(run, validation)
                record.update({EPOCH_METRICS[name]: means[name] for name in EPOCH_METRICS})
                record["eval_time_s"] = time.perf_counter() - t0
            _end_epoch(run, state, record, evaluated=evaluated)
            if not main:
                continue
            ndcg = _fmt(record["val_ndcg@100"])
            logger.info("epoch %d/%d loss %.4f neg_ll %.4f kl %.4f beta %.4f val ndcg@100 %s (%.2fs)", epoch, tc.epochs,
                        record["loss"], record["neg_ll"], record["kl"], record["beta"], ndcg, record["epoch_time_s"])
            bar.set_postfix(loss=f"{record['loss']:.3f}", kl=f"{record['kl']:.3f}", beta=f"{record['beta']:.3f}",
                            ndcg=ndcg)
            bar.update(1)
            # after the checkpoint: a callback failure leaves a resumable run behind
            if on_epoch_end is not None:
                on_epoch_end(epoch, dict(record))
    finally:
        bar.close()
    return _result(run, state, select_on if validation is not None else None, stopped_early)


def _patience_over(tc: TrainConfig, state: TrainState) -> bool:
    """Early stopping: `patience` epochs without a better validation score."""
    return tc.patience is not None and state.epoch - state.best_epoch >= tc.patience


def _train_epoch(run: _Run, state: TrainState, epoch: int) -> dict[str, Any]:
    """One epoch of updates (the model's passes over the shuffled training users); its history record.

    Over several ranks every one draws the same permutation and takes its slice of each global batch of
    `batch_size` users, so the steps, schedules and updates are the one-process ones."""
    tc = run.config.train
    world, rank = run.ranks.world, run.ranks.rank
    if world > 1:  # each rank's own dropout and sampling noise, from its rank and the epoch: a resume repeats it
        torch.manual_seed(((tc.seed * 1_000_003 + epoch) * 4_099 + rank) % 2**63)
    t0 = time.perf_counter()
    run.module.train()
    sums = torch.zeros(3, device=run.device)
    batch_losses: list[torch.Tensor] = []  # never synced, unless the epoch's loss is not finite
    beta, lr = 0.0, tc.lr
    for _ in run.updates.passes():
        perm = torch.randperm(run.n_users, generator=run.shuffle_gen).to(run.device)
        for start in range(0, run.n_users, tc.batch_size):
            ids = perm[start : start + tc.batch_size]
            mine = ids.tensor_split(world)[rank] if world > 1 else ids
            batch = run.rows.batch(mine)
            beta = beta_at(state.step, run.anneal)
            lr = lr_at(state.step, run.total_steps, tc)
            parts = run.step(batch, beta, lr, mine.shape[0] / ids.shape[0])
            state.step += 1
            batch_losses.append(parts.loss)
            sums += torch.stack(list(parts)) * batch.n_rows
    all_reduce_sum(sums, run.ranks)  # every rank's users: the same means, so a NaN stops every rank together
    # the one sync of the epoch also reads a sum over the weights: a NaN/inf anywhere shows in it
    means = torch.cat([sums / (run.n_users * run.updates.n_passes), weight_sum(run.module)]).tolist()
    loss, neg_ll, kl, weights = means
    try:  # every rank sees the same sums and weights, so every rank stops here
        stop_if_diverged(epoch, [loss, neg_ll, kl], weights, batch_losses, tc)  # before anything is saved
    except NonFiniteLossError as exc:
        raise everywhere(exc)  # noqa: B904 - the same exception, marked for the ranks' error handling
    return {"epoch": epoch, "loss": loss, "neg_ll": neg_ll, "kl": kl, "beta": beta, "lr": lr, "step": state.step,
            "epoch_time_s": time.perf_counter() - t0}


def _end_epoch(run: _Run, state: TrainState, record: dict[str, Any], evaluated: bool) -> None:
    """Record the epoch, keep its weights when it is the best so far, and write the checkpoints."""
    state.epoch = record["epoch"]
    state.history.append(record)
    if not run.ranks.main:  # rank 0 keeps the best weights; another rank's result is its last epoch
        return
    value = record[EPOCH_METRICS[SELECT_METRIC]]
    improved = not evaluated or value > state.best_value
    if improved:
        state.best_epoch = state.epoch
        state.best_value = value if evaluated else -math.inf
        state.best_metrics = {name: record[key] for name, key in EPOCH_METRICS.items()} if evaluated else {}
        state.best_beta = record["beta"] if run.module.variational else None
        state.best_state = {k: v.detach().clone() for k, v in run.module.state_dict().items()}
    checkpoints = []
    if improved and run.best_path is not None:
        checkpoints.append((best_payload(run.module, run.config, state, run.snapshot_id), run.best_path))
    if run.last_path is not None:
        checkpoints.append((last_payload(run, run.fingerprint, state), run.last_path))
    save_checkpoints(checkpoints)


def _result(run: _Run, state: TrainState, select_on: str | None, stopped_early: bool) -> TrainResult:
    """The best epoch's weights in a recommender, and the run's history."""
    if state.best_state is None:  # resumed a run that had already finished, or zero epochs left
        state.best_state = {k: v.detach().clone() for k, v in run.module.state_dict().items()}
        state.best_epoch = state.best_epoch or state.epoch
    run.module.load_state_dict(state.best_state)
    run.module.eval()
    mc, tc = run.config.model, run.config.train
    rec = MultVAERecommender(run.module.n_items, copy.deepcopy(mc), copy.deepcopy(tc), run.module)
    return TrainResult(
        recommender=rec,
        history=state.history,
        best_epoch=state.best_epoch,
        best_metrics=state.best_metrics,
        best_beta=state.best_beta,
        best_checkpoint=run.best_path if run.best_path is not None and run.best_path.exists() else None,
        last_checkpoint=run.last_path if run.last_path is not None and run.last_path.exists() else None,
        select_on=select_on,
        stopped_early=stopped_early,
    )


def _evaluate(run: _Run, validation: tuple[sp.csr_matrix, sp.csr_matrix]) -> dict[str, float]:
    """Mean NDCG@100 / Recall@20 / Recall@50 of held-out users scored from their fold-in rows."""
    module = run.module
    module.eval()

    def score(X: sp.csr_matrix) -> torch.Tensor:
        with autocast(run.device, run.amp_dtype):
            logits = module.predict(CSRBatch.from_scipy(X, run.device))
        return logits.float()

    foldin, heldout = validation
    batch_size = run.config.train.eval_batch_size
    return evaluate(score, foldin, heldout, tuple(EPOCH_METRICS), batch_size=batch_size, device=run.device).means


# ------------------------------------------------------------------------------------------------ helpers


def resolve_device(tc: TrainConfig) -> torch.device:
    """CUDA when requested or (auto) available, else the CPU."""
    if tc.device == "cuda" or (tc.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _progress_bar(total: int, initial: int, desc: str, shown: bool = True) -> Any:
    """A manual tqdm epoch bar (needs set_postfix), quiet when recvae.log says progress bars are off."""
    from tqdm.auto import tqdm

    from recvae.log import progress_disabled

    return tqdm(total=total, initial=initial, desc=desc, unit="epoch", leave=False,
                disable=progress_disabled() or not shown, file=sys.stderr)

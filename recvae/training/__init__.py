"""Training of the neural models: the epoch loop (loop.py), each model's updates (updates.py), the beta and
learning-rate schedules (schedules.py), checkpoints and resume (checkpoints.py) and the memory check (memory.py)."""

from recvae.training.checkpoints import (
    BEST_FILE,
    LAST_FILE,
    CheckpointCorruptError,
    CheckpointMismatchError,
    load_best,
    load_checkpoint,
)
from recvae.training.checks import NonFiniteLossError
from recvae.training.loop import TrainResult, VAETrainer, fit_model, resolve_device, train
from recvae.training.memory import check_memory, training_memory_bytes
from recvae.training.schedules import beta_at, effective_anneal_steps, lr_at, paper_equivalent_anneal_steps

__all__ = [
    "BEST_FILE",
    "LAST_FILE",
    "CheckpointCorruptError",
    "CheckpointMismatchError",
    "NonFiniteLossError",
    "TrainResult",
    "VAETrainer",
    "beta_at",
    "check_memory",
    "effective_anneal_steps",
    "fit_model",
    "load_best",
    "load_checkpoint",
    "lr_at",
    "paper_equivalent_anneal_steps",
    "resolve_device",
    "train",
    "training_memory_bytes",
]

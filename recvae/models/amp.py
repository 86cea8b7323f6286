"""Mixed precision (autocast) for training and scoring: which dtype `train.amp` means on a device."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

logger = logging.getLogger(__name__)


def amp_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `train.amp` on `device`: bf16 on CPU or CUDA, fp16 on CUDA only, else None."""
    if amp == "none":
        return None
    if device.type != "cuda" and amp == "fp16":
        logger.warning("train.amp=fp16 is ignored on the CPU (use bf16 there)")
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """Mixed precision for the matrix products (weights and the likelihood stay float32), or nothing."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

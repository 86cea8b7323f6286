"""What the pipeline's steps share: run tags, the configuration from overrides, run-key folder names."""

from __future__ import annotations

import logging
import re
from typing import Any

from recvae.config import Config, apply_overrides
from recvae.tracking.runs import TAG_ROLE

__all__ = ["TAG_ROLE", "TAG_RUN_KEY", "TAG_PROMOTION", "RUN_FILE", "DEFAULT_BASELINE_GRIDS", "config_from", "safe_name"]

logger = logging.getLogger(__name__)


TAG_RUN_KEY = "recvae.run_key"


TAG_PROMOTION = "recvae.promotion"


RUN_FILE = "mlflow_run.json"  # in a training's work folder: the MLflow run its checkpoints belong to


DEFAULT_BASELINE_GRIDS: dict[str, dict[str, list[Any]]] = {
    "popularity": {},
    "ease": {"lam": [250.0, 500.0, 1000.0]},
    "als": {"factors": [64], "regularization": [1.0, 10.0, 50.0], "alpha": [1.0, 10.0]},
}


def config_from(overrides: dict[str, Any] | list[str] | None) -> Config:
    return apply_overrides(Config(), overrides or {}).validate()


def safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:120]

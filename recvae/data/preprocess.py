"""Liang et al.'s preprocessing: resolve duplicates, keep ratings above a threshold, minimum counts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recvae.config import DataConfig
from recvae.data.validate import DataValidationError, resolve_duplicates

logger = logging.getLogger(__name__)


def binarize(df: pd.DataFrame, threshold: float | None) -> pd.DataFrame:
    """Rows with rating > threshold (the notebook's `rating > 3.5`); None keeps every row (implicit data)."""
    if threshold is None:
        return df
    return df[df["rating"].to_numpy() > threshold]


def counts_of(values: np.ndarray) -> np.ndarray:
    """For each position, how many times its value occurs in `values`."""
    codes = pd.factorize(values)[0]
    return np.bincount(codes)[codes] if len(codes) else np.zeros(0, np.int64)


def filter_counts(df: pd.DataFrame, min_user_count: int = 5, min_item_count: int = 0) -> pd.DataFrame:
    """The notebook's `filter_triplets`: first drop items with < min_item_count rows, then users with
    < min_user_count rows; one pass, so a few items may fall below min_item_count afterwards (as there)."""
    if min_item_count > 0:
        df = df[counts_of(df["item"].to_numpy()) >= min_item_count]
    if min_user_count > 0:
        df = df[counts_of(df["user"].to_numpy()) >= min_user_count]
    return df


def preprocess(
    df: pd.DataFrame,
    config: DataConfig,
    *,
    implicit: bool = False,
    source: str | Path | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Duplicates (DataConfig.duplicates) -> binarize (skipped for implicit sources) -> item then user counts.

    Row order and the index (file positions) are kept, which the split relies on for the notebook's
    item order. Returns the frame and row counts after each step. Raises DataValidationError when
    nothing is left.
    """
    config.validate()
    if len(df) == 0:
        raise DataValidationError("the source has no data rows", source=source)
    stats: dict[str, Any] = {"rows_read": int(len(df))}
    df, n_dup = resolve_duplicates(df, config.duplicates, source=source)
    stats["duplicates_removed"] = n_dup
    threshold = None if implicit else config.threshold
    if implicit and config.threshold is not None:
        logger.info("%s: implicit data (every pair is a positive): threshold %s not applied", source or "data",
                    config.threshold)
    # the same steps as binarize + filter_counts, on a mask, so the frame is copied once
    keep = df["rating"].to_numpy() > threshold if threshold is not None else np.ones(len(df), dtype=bool)
    stats["after_binarize"] = int(keep.sum())
    stats["threshold_applied"] = threshold
    if not keep.any():
        _require_rows(df.iloc[:0], source, f"keeping ratings > {threshold}")
    for column, minimum in (("item", config.min_item_count), ("user", config.min_user_count)):
        if minimum > 0:
            rows = np.flatnonzero(keep)
            keep[rows[counts_of(df[column].to_numpy()[rows]) < minimum]] = False
    df = df if keep.all() else df[keep]
    stats["after_count_filter"] = int(len(df))
    _require_rows(df, source, f"min_user_count={config.min_user_count}, min_item_count={config.min_item_count}")
    stats["users"] = int(pd.unique(df["user"].to_numpy()).size)
    stats["items"] = int(pd.unique(df["item"].to_numpy()).size)
    logger.info(
        "%s: %d rows -> %d after duplicates/threshold -> %d interactions of %d users x %d items after counts",
        source or "data", stats["rows_read"], stats["after_binarize"], stats["after_count_filter"], stats["users"],
        stats["items"],
    )
    return df, stats


def _require_rows(df: pd.DataFrame, source: str | Path | None, step: str) -> None:
    """Raise DataValidationError when `step` left no rows."""
    if len(df) == 0:
        raise DataValidationError(f"no interactions left after {step}; check the threshold and minimum counts",
                                  source=source)

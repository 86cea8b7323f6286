"""What the store reads and writes: batch rows, a job's summary, a clean-up report, and chunks of top-N lists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from recvae.serving.store.errors import StoreError

STATUSES = ("staging", "published", "superseded", "failed", "expired")
DONE_STATUSES = ("published", "superseded", "expired")  # a batch key in one of these is never rewritten
BATCH_COLUMNS = (
    "batch_id, batch_key, status, model_name, top_n, model_version, run_id, snapshot_id, n_items, n_shards, "
    "user_count, expected_rows, row_count, error, created_at, finished_at, published_at, superseded_at"
)
REC_COLUMNS = "batch_id, user_id, rank, item_id, score, shard"
_TIMES = ("created_at", "finished_at", "published_at", "superseded_at")
_INTEGERS = ("batch_id", "top_n", "n_items", "n_shards", "user_count", "expected_rows", "row_count")


@dataclass
class Batch:
    """One row of the batches table."""

    batch_id: int
    batch_key: str
    status: str
    model_name: str
    top_n: int
    model_version: str | None = None
    run_id: str | None = None
    snapshot_id: str | None = None
    n_items: int | None = None
    n_shards: int | None = None
    user_count: int | None = None
    expected_rows: int | None = None
    row_count: int | None = None
    error: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    published_at: datetime | None = None
    superseded_at: datetime | None = None

    @property
    def done(self) -> bool:
        """Published now or before: the batch key must not be written again."""
        return self.status in DONE_STATUSES

    @classmethod
    def from_row(cls, row: Any) -> Batch:
        """A batch from a row mapping of BATCH_COLUMNS (SQLite gives times as ISO text)."""
        d = dict(row)
        for k in _TIMES:
            d[k] = _timestamp(d[k])
        for k in _INTEGERS:
            d[k] = None if d[k] is None else int(d[k])
        return cls(**d)


def _timestamp(v: Any) -> datetime | None:
    if v is None or isinstance(v, datetime):
        return v
    return datetime.fromisoformat(str(v))


def batch_ref(batch: Batch | str | int) -> tuple[str, dict[str, Any]]:
    """(WHERE condition, parameters) selecting a batch given as a Batch, a batch key (str) or a batch id (int)."""
    if isinstance(batch, Batch):
        return "batch_id = :v", {"v": batch.batch_id}
    if isinstance(batch, (int, np.integer)) and not isinstance(batch, bool):
        return "batch_id = :v", {"v": int(batch)}
    if isinstance(batch, str):
        return "batch_key = :v", {"v": batch}
    raise TypeError(f"expected a Batch, a batch key (str) or a batch id (int); got {type(batch).__name__}")


@dataclass
class BatchSummary:
    """What a batch job reports (small enough for an Airflow XCom via `to_dict`)."""

    batch_id: int
    batch_key: str
    status: str
    model_name: str
    model_version: str | None
    top_n: int
    user_count: int | None
    expected_rows: int | None
    row_count: int | None
    reused: bool = False  # the batch key was already published: nothing was written
    expired_batch_ids: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, batch: Batch, *, reused: bool = False, expired: Sequence[int] = ()) -> BatchSummary:
        """The summary of a batch row."""
        return cls(
            batch_id=batch.batch_id, batch_key=batch.batch_key, status=batch.status, model_name=batch.model_name,
            model_version=batch.model_version, top_n=batch.top_n, user_count=batch.user_count,
            expected_rows=batch.expected_rows, row_count=batch.row_count, reused=reused,
            expired_batch_ids=list(expired),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serializable dict."""
        return asdict(self)


@dataclass
class GcReport:
    """What `RecommendationStore.gc` did: abandoned batches failed, and rows/titles deleted per dead batch."""

    failed: list[int] = field(default_factory=list)
    cleaned: dict[int, tuple[int, int]] = field(default_factory=dict)  # batch id -> (rows, titles) deleted

    def lines(self) -> list[str]:
        """Human-readable lines, one per action (or one saying there was nothing to do)."""
        out = [f"batch {b}: abandoned in staging, marked failed" for b in self.failed]
        out += [f"batch {b}: deleted {rows:,} row(s) and {titles:,} title(s)"
                for b, (rows, titles) in self.cleaned.items()]
        return out or ["nothing to clean: no abandoned staging batch, no rows of failed or expired batches"]


@dataclass
class RecChunk:
    """Top-N lists of some users: raw ids as text, lists padded to N; `counts[i]` entries of row i are real."""

    user_ids: np.ndarray  # (c,) str
    item_ids: np.ndarray  # (c, N) str; entries at or beyond counts[i] are ignored
    scores: np.ndarray  # (c, N) float
    counts: np.ndarray  # (c,) int

    def rows(self) -> tuple[list, list, list, list]:
        """Flat columns (user_id, rank, item_id, score) of the real entries; ranks start at 1."""
        counts = np.asarray(self.counts, dtype=np.int64)
        n = self.item_ids.shape[1] if self.item_ids.ndim == 2 else 0
        shapes_ok = len(counts) == len(self.user_ids) == self.item_ids.shape[0]
        if not shapes_ok or self.scores.shape != self.item_ids.shape:
            raise StoreError(
                f"chunk shapes disagree: {len(self.user_ids)} users, counts {counts.shape}, "
                f"items {self.item_ids.shape}, scores {self.scores.shape}"
            )
        if (counts < 0).any() or (counts > n).any():
            raise StoreError(f"chunk counts must be in [0, {n}]")
        mask = np.arange(n)[None, :] < counts[:, None]
        scores = np.asarray(self.scores, dtype=np.float64)[mask]
        if np.isnan(scores).any():
            raise StoreError(f"chunk has {int(np.isnan(scores).sum())} NaN score(s); refusing to store them")
        users = np.repeat(np.asarray(self.user_ids, dtype=object), counts)
        ranks = np.nonzero(mask)[1] + 1
        items = np.asarray(self.item_ids, dtype=object)[mask]
        return [str(u) for u in users], ranks.tolist(), [str(i) for i in items], scores.tolist()

"""The typed results the pipeline's steps return. Each reads as the JSON dict it travels as (Airflow XComs, CLI
tables: `to_dict()`, and `result["key"]` for the dict's keys), so a step accepts either form from the previous one."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


@dataclass(frozen=True)
class StepResult(Mapping[str, Any]):
    """A step's result: typed attributes, and the mapping of its JSON form (`val_ndcg@100` for `val_ndcg_at_100`)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able dict this result travels as."""
        return {_key(f): getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> Any:
        """`value` as this type: itself, or built from its dict form (unknown keys ignored)."""
        if isinstance(value, cls):
            return value
        known = {_key(f): f.name for f in dataclasses.fields(cls)}
        return cls(**{known[k]: v for k, v in value.items() if k in known})

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(dataclasses.fields(self))


def _ndcg(default: Any = None) -> Any:
    return field(default=default, metadata={"key": "val_ndcg@100"})


@dataclass(frozen=True)
class SnapshotResult(StepResult):
    """A built (or reused) snapshot."""

    snapshot_dir: str
    snapshot_id: str
    n_users: int
    n_items: int


@dataclass(frozen=True)
class ModelRun(StepResult):
    """A trained or fitted model's MLflow run, its validation score and, when registered, its version."""

    run_id: str
    kind: str
    val_ndcg_at_100: float | None = _ndcg()
    test_ndcg_at_100: float | None = field(default=None, metadata={"key": "test_ndcg@100"})
    model_version: str | None = None
    model_uri: str | None = None


@dataclass(frozen=True)
class ScoringBatch(StepResult):
    """A staging (or already published) batch and what its shards score: one model version on one snapshot."""

    batch_key: str
    batch_id: int
    done: bool
    model_uri: str
    model_name: str
    model_version: str | None
    run_id: str | None
    snapshot_dir: str
    snapshot_id: str
    top_n: int
    n_shards: int
    allow_items: list[str] | None = None  # business filter resolved once at begin: every shard applies the same
    deny_items: list[str] | None = None


@dataclass(frozen=True)
class Verdict:
    """The promotion rule's answer: promote or not, and why (the rivals the challenger did not beat)."""

    promoted: bool
    losses: tuple[str, ...]
    beaten: tuple[str, ...]


def promotion_verdict(score: float, rivals: list[tuple[str, float]], margin: float) -> Verdict:
    """The promotion rule: the challenger's validation `score` must beat every rival's by more than `margin`
    (no rival: the first model is promoted). Pure, so the rule is tested without MLflow or Airflow."""
    losses = tuple(f"{name} ({value:.4f})" for name, value in rivals if not score > value + margin)
    beaten = tuple(f"{name} ({value:.4f})" for name, value in rivals if score > value + margin)
    return Verdict(promoted=not losses, losses=losses, beaten=beaten)


@dataclass(frozen=True)
class Decision(StepResult):
    """What the promotion step decided, with the numbers behind it."""

    promoted: bool
    reason: str
    version: str
    model_name: str
    run_id: str
    val_ndcg_at_100: float = _ndcg(0.0)
    model_uri: str = ""
    champion_version: str | None = None
    previous_champion: str | None = None
    champion_overlap: dict[str, Any] | None = None
    replaced_champion_of_other_items: str | None = None
    min_confidence: float | None = None
    significance: list[dict[str, Any]] | None = None  # one-sided paired test per rival (with min_confidence)


@dataclass(frozen=True)
class TuneResult(StepResult):
    """A finished tune: its study, its trials by state, the best trial and the challenger retrained from it."""

    study: str
    parent_run_id: str
    trials: int
    complete: int
    pruned: int
    failed: int
    best_trial: int
    best_val_ndcg_at_100: float = field(default=0.0, metadata={"key": "best_val_ndcg@100"})
    best_overrides: dict[str, Any] = field(default_factory=dict)
    challenger: dict[str, Any] = field(default_factory=dict)

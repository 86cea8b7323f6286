"""The main job in one process: prepare, train the challenger and baselines, promote, score every user, publish."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from recvae import paths
from recvae.config import ConfigError
from recvae.models.kinds import BASELINE_KINDS
from recvae.pipeline.data import prepare_step
from recvae.pipeline.promotion import check_min_confidence, promote_step
from recvae.pipeline.scoring import check_db_step, score_step
from recvae.pipeline.training import baseline_step, train_step


def run_pipeline(
    *,
    dataset: str | None = "synthetic",
    input_path: str | None = None,
    input_format: str | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    baselines: Sequence[str] = BASELINE_KINDS,
    margin: float = 0.0,
    top_n: int = 100,
    db_url: str | None = None,
    experiment: str = "recvae",
    model_name: str = "recvae",
    kind: str = "vae",
    replace_champion_of_other_items: bool = False,
    min_confidence: float | None = None,
) -> dict[str, Any]:
    """prepare -> train the challenger (`kind`: vae, dae or recvae) and the baselines -> promote (see `promote_step`)
    -> score every user -> publish, in one process."""
    import uuid

    _check_arguments(input_format=input_format, baselines=baselines, margin=margin, top_n=top_n, kind=kind)
    check_min_confidence(min_confidence)
    db_url = db_url or paths.default_db_url()
    check_db_step(db_url)  # an unreachable database fails in seconds, before anything is trained or promoted
    key = uuid.uuid4().hex[:12]
    snap = prepare_step(dataset=dataset, input_path=input_path, input_format=input_format, overrides=overrides)
    challenger = train_step(snap["snapshot_dir"], overrides=overrides, kind=kind, experiment=experiment,
                            model_name=model_name, run_key=f"pipeline-{key}-{kind}")
    fitted = [baseline_step(b, snap["snapshot_dir"], experiment=experiment, run_key=f"pipeline-{key}-{b}")
              for b in baselines]
    decision = promote_step(challenger, fitted, snapshot_dir=snap["snapshot_dir"], model_name=model_name, margin=margin,
                            replace_champion_of_other_items=replace_champion_of_other_items,
                            min_confidence=min_confidence)
    champion = decision["model_uri"] if decision["champion_version"] else None
    batch: dict[str, Any] = {"status": "no champion to score with"}
    if champion:
        batch = score_step(model_uri=champion, snapshot_dir=snap["snapshot_dir"], top_n=top_n, db_url=db_url,
                           batch_key=f"pipeline-{key}", model_name=model_name)
    return {"snapshot": snap, "models": [challenger, *fitted], "decision": decision, "batch": batch}


def _check_arguments(*, input_format: str | None, baselines: Sequence[str], margin: float, top_n: int,
                     kind: str) -> None:
    """Refuse what cannot work before anything is trained or registered (ConfigError names the argument)."""
    from recvae.data.readers import FORMATS
    from recvae.models.kinds import MODEL_KINDS

    if input_format is not None and input_format not in FORMATS:
        raise ConfigError(f"unknown input format {input_format!r}; known: {', '.join(FORMATS)}")
    unknown = [b for b in baselines if b not in BASELINE_KINDS]
    if unknown:
        raise ConfigError(f"unknown baseline(s) {', '.join(unknown)}; known: {', '.join(BASELINE_KINDS)}")
    if kind not in MODEL_KINDS:
        raise ConfigError(f"unknown model {kind!r}; known: {', '.join(MODEL_KINDS)}")
    if not (math.isfinite(margin) and margin >= 0):
        raise ConfigError(f"margin must be a finite number >= 0; got {margin}")
    if top_n < 1:
        raise ConfigError(f"top_n must be >= 1; got {top_n}")

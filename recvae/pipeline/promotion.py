"""The promotion step: the challenger becomes champion only when it beats the champion and every baseline on the
same validation users."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recvae.pipeline.common import TAG_PROMOTION
from recvae.pipeline.data import load_snapshot
from recvae.pipeline.results import Decision, promotion_verdict
from recvae.tracking.registry import CHAMPION

logger = logging.getLogger(__name__)


def evaluate_model_uri(
    model_uri: str, snapshot_dir: str | Path | None, split: str = "validation", *, allow_other_items: bool = False
) -> dict[str, float]:
    """Metrics of a logged/registered model on a snapshot's held-out users (item columns aligned by raw id), with
    `n_items` and `n_items_known` (the snapshot's items, and those the model knows). A model trained on other
    items raises ItemMismatchError unless `allow_other_items`; items it does not know then score -inf."""
    from recvae import tracking
    from recvae.evaluation.metrics import evaluate

    snap = load_snapshot(snapshot_dir)
    rec, _ = tracking.load_recommender_from_uri(model_uri)
    alignment = align_model(rec, snap, model_uri, allow_other=allow_other_items)
    result = evaluate(aligned_scorer(rec, alignment), *snap.heldout(split))
    return {**result.means, **{f"{k}_stderr": v for k, v in result.stderr.items()}, "n_users": result.n_users,
            "n_items": alignment.n_items, "n_items_known": alignment.n_known}


def align_model(rec: Any, snap: Any, model_uri: str, *, allow_other: bool = False) -> Any:
    """The `ItemAlignment` of a model's items to a snapshot's; ItemMismatchError (naming `model_uri`) when the model
    was trained on other items, unless `allow_other`."""
    from recvae.serving.items import align_items

    return align_items(rec.items, rec.n_items, snap.items, model=model_uri, snapshot_id=snap.snapshot_id,
                       allow_other=allow_other)


def aligned_scorer(rec: Any, alignment: Any) -> Any:
    """A score function over the snapshot's columns of `alignment` for a model trained on other (e.g. older) item
    ids; items the model does not know score -inf."""
    import numpy as np
    import torch

    if alignment.identical:
        return rec.scores
    pos = alignment.positions  # model column of each snapshot item
    known = np.flatnonzero(pos >= 0)
    src = torch.from_numpy(pos[known])
    dst = torch.from_numpy(known)

    def score(X):  # X has the snapshot's columns
        import scipy.sparse as sp

        Xk = X[:, known].tocsr()
        Xm = sp.csr_matrix((Xk.data, pos[known][Xk.indices], Xk.indptr), shape=(X.shape[0], rec.n_items))
        s = rec.scores(Xm)
        out = torch.full((X.shape[0], X.shape[1]), -torch.inf, dtype=s.dtype)
        out[:, dst] = s[:, src]
        return out

    return score


MIN_CHAMPION_ITEM_OVERLAP = 0.5
"""Least share of items the champion and the snapshot must have in common (of the champion's items, and of the
snapshot's) for a challenger to be compared with it. Below it the champion was trained on other data: on this
snapshot's validation users it ranks items it never saw or misses most of them, so its NDCG@100 measures the two
catalogs, not the two models (a champion of the other data set, synthetic vs ML-100K, scored 0.0674 and lost to
it). A weekly snapshot built on the previous one keeps every item and adds a few, so a true successor stays near
1.0 both ways."""


def champion_item_overlap(alignment: Any) -> dict[str, Any]:
    """How far a champion's items and a snapshot's agree (from their `ItemAlignment`), for the decision and logs."""
    share = min(alignment.model_fraction, alignment.fraction)
    return {"champion_items": alignment.n_model_items, "snapshot_items": alignment.n_items,
            "common_items": alignment.n_known, "of_champion": round(alignment.model_fraction, 4),
            "of_snapshot": round(alignment.fraction, 4), "share": round(share, 4),
            "comparable": share >= MIN_CHAMPION_ITEM_OVERLAP}


def _champion_on_snapshot(model_name: str, version: str, snapshot_dir: str | Path | None) -> tuple[Any, dict]:
    """The champion's per-user validation NDCG@100 on the snapshot (None when its items overlap the snapshot's too
    little to compare, see MIN_CHAMPION_ITEM_OVERLAP) and the overlap. Items it does not know score -inf (and cost
    it)."""
    from recvae import tracking
    from recvae.evaluation.metrics import evaluate

    uri = f"models:/{model_name}/{version}"
    snap = load_snapshot(snapshot_dir)
    rec, _ = tracking.load_recommender_from_uri(uri)
    alignment = align_model(rec, snap, uri, allow_other=True)
    overlap = champion_item_overlap(alignment)
    logger.info("champion v%s on snapshot %s: %s of its %s items are in the snapshot, which has %s (overlap %.1f%%)",
                version, snap.snapshot_id, overlap["common_items"], overlap["champion_items"],
                overlap["snapshot_items"], 100 * overlap["share"])
    if not overlap["comparable"]:
        return None, overlap
    foldin, heldout = snap.heldout("validation")
    return evaluate(aligned_scorer(rec, alignment), foldin, heldout, ["ndcg@100"]).per_user["ndcg@100"], overlap


def check_min_confidence(min_confidence: float | None) -> None:
    """ConfigError unless `min_confidence` is None (off) or strictly between 0 and 1."""
    import math

    from recvae.config import ConfigError

    if min_confidence is not None and not (math.isfinite(min_confidence) and 0 < min_confidence < 1):
        raise ConfigError(f"min_confidence must be between 0 and 1 (exclusive), e.g. 0.95; got {min_confidence}")


def _mean(values: Any) -> float:
    import numpy as np

    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _described(test: Mapping[str, Any]) -> str:
    return f"{test['rival']}: diff {test['diff']:+.4f}, stderr {test['stderr']:.4f}, p {test['p_value']:.3g}"


def validation_ndcg_per_user(run_id: str | None, model_uri: str | None, snap: Any) -> Any:
    """Per-user validation NDCG@100 of a model on the snapshot's validation users (in their row order): from its
    run's kept validation results when the run is on this snapshot, else by scoring `model_uri`."""
    import numpy as np

    from recvae import tracking
    from recvae.evaluation.metrics import evaluate

    if run_id:
        run = tracking.resolve_run(run_id)
        kept = tracking.load_per_user(run_id, "validation") if tracking.run_snapshot(run) == snap.snapshot_id else None
        if kept is not None and "ndcg@100" in kept:
            users = snap.users.raw_ids[snap.rows["validation_tr"]]
            by_user = dict(zip(kept["user"].tolist(), kept["ndcg@100"].to_numpy(float), strict=True))
            return np.array([by_user.get(u, np.nan) for u in users.tolist()])
    uri = model_uri or f"runs:/{run_id}/model"
    rec, _ = tracking.load_recommender_from_uri(uri)
    scorer = aligned_scorer(rec, align_model(rec, snap, uri))
    foldin, heldout = snap.heldout("validation")
    return evaluate(scorer, foldin, heldout, ["ndcg@100"]).per_user["ndcg@100"]


def _significance(challenger: Mapping[str, Any], baselines: Sequence[Mapping[str, Any]], per_user: dict[str, Any],
                  snapshot_dir: str | Path | None, model_name: str, min_confidence: float) -> list[dict[str, Any]]:
    """The one-sided paired test of the challenger against each rival (the champion's values in `per_user`, the
    baselines' from their runs): rival, n_users, diff, stderr, p_value, confidence, significant."""
    from recvae.config import ConfigError
    from recvae.evaluation.paired import one_sided_greater

    snap = load_snapshot(snapshot_dir)
    uri = f"models:/{model_name}/{challenger['model_version']}"
    mine = validation_ndcg_per_user(challenger.get("run_id"), uri, snap)
    rivals = dict(per_user)
    for b in baselines:
        if b.get("val_ndcg@100") is None:
            continue
        if not b.get("run_id"):
            raise ConfigError(f"baseline {b.get('kind')} has no run to test the challenger against (min_confidence)")
        rivals[f"baseline {b['kind']}"] = validation_ndcg_per_user(b["run_id"], None, snap)
    return [{"rival": name, **one_sided_greater(mine, values, min_confidence).to_dict()}
            for name, values in rivals.items()]


def significance_gate(model_name: str, version: str, against: str, snapshot_dir: str | Path | None,
                      min_confidence: float) -> dict[str, Any]:
    """The one-sided paired test of registered `version` beating version `against` on the snapshot's validation
    users (per-user NDCG@100, see `validation_ndcg_per_user`), logged with the candidate's run; its numbers."""
    from recvae import tracking
    from recvae.evaluation.paired import one_sided_greater

    check_min_confidence(min_confidence)
    snap = load_snapshot(snapshot_dir)
    mine_uri, theirs_uri = f"models:/{model_name}/{version}", f"models:/{model_name}/{against}"
    mine_run, theirs_run = (tracking.resolve_run(u).info.run_id for u in (mine_uri, theirs_uri))
    test = {"rival": f"v{against}", **one_sided_greater(validation_ndcg_per_user(mine_run, mine_uri, snap),
                                                        validation_ndcg_per_user(theirs_run, theirs_uri, snap),
                                                        min_confidence).to_dict()}
    _log_significance(mine_run, min_confidence, [test])
    return test


def _log_significance(run_id: str, min_confidence: float | None, tests: list[dict[str, Any]]) -> None:
    """The significance tests of a promotion, as tags and `promotion/significance.json` of the challenger's run."""
    import json

    import mlflow

    client = mlflow.MlflowClient()
    client.set_tag(run_id, f"{TAG_PROMOTION}.min_confidence", str(min_confidence))
    for test in tests:
        client.set_tag(run_id, f"{TAG_PROMOTION}.significance.{_tag_name(test['rival'])}",
                       f"diff {test['diff']:+.6f} stderr {test['stderr']:.6f} p {test['p_value']:.6g} "
                       f"n {test['n_users']} {'significant' if test['significant'] else 'not significant'}")
    client.log_dict(run_id, {"min_confidence": min_confidence, "tests": json.loads(json.dumps(tests, default=str))},
                    "promotion/significance.json")


def _tag_name(rival: str) -> str:
    import re

    return re.sub(r"[^\w.\-]", "_", rival)


def _tag_decision(run_id: str, outcome: str, reason: str, overlap: dict[str, Any] | None) -> None:
    """Record the promotion decision (and the champion's item overlap) as tags of the challenger's MLflow run."""
    import mlflow

    from recvae import tracking

    tracking.configure_if_needed()
    tags = {TAG_PROMOTION: outcome, f"{TAG_PROMOTION}.reason": reason[:5000]}
    if overlap is not None:
        tags[f"{TAG_PROMOTION}.champion_item_overlap"] = f"{overlap['share']:.4f}"
        tags[f"{TAG_PROMOTION}.champion_items"] = (f"{overlap['common_items']} in common of the champion's "
                                                   f"{overlap['champion_items']} and the snapshot's "
                                                   f"{overlap['snapshot_items']}")
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def _refusal(model_name: str, version: str, current: str, overlap: dict[str, Any]) -> str:
    """Why a challenger is not compared with a champion of other items, and how to replace that champion."""
    return (f"refused to compare challenger v{version} with champion v{current} of {model_name}: the champion was "
            f"trained on other items ({overlap['common_items']} in common of its {overlap['champion_items']} and the "
            f"snapshot's {overlap['snapshot_items']}, {overlap['share']:.1%} < {MIN_CHAMPION_ITEM_OVERLAP:.0%}); to "
            "replace it, set replace_champion_of_other_items (recvae pipeline --replace-champion-of-other-items)")


def promote_step(
    challenger: Mapping[str, Any],
    baselines: Sequence[Mapping[str, Any]],
    *,
    snapshot_dir: str | Path | None,
    model_name: str = "recvae",
    margin: float = 0.0,
    replace_champion_of_other_items: bool = False,
    min_confidence: float | None = None,
) -> Decision:
    """Point `champion` at the challenger only if its validation NDCG@100 beats the current champion (re-evaluated
    on the same validation users) and every baseline by `margin`; the reason and the champion's item overlap are
    logged, tagged on the challenger's run and returned.

    A champion whose items overlap the snapshot's too little (MIN_CHAMPION_ITEM_OVERLAP) was trained on other data
    and is not compared: ItemMismatchError, unless `replace_champion_of_other_items`, when the challenger only has
    to beat the baselines.

    With `min_confidence` (e.g. 0.95; None: off) the challenger must also beat the champion and each baseline with
    a paired one-sided t-test on the same validation users significant at that level (per-user NDCG@100 from the
    runs' kept validation results on this snapshot, else scored); each test's numbers are in the decision."""
    from recvae import tracking
    from recvae.serving.items import ItemMismatchError

    check_min_confidence(min_confidence)
    score = challenger.get("val_ndcg@100")
    version = challenger.get("model_version")
    if score is None or version is None:
        raise ValueError(f"challenger {challenger.get('run_id')} has no validation NDCG@100 or registered version")
    rivals: list[tuple[str, float]] = [(f"baseline {b['kind']}", float(b["val_ndcg@100"])) for b in baselines
                                       if b.get("val_ndcg@100") is not None]
    current = tracking.get_alias(model_name, CHAMPION)
    per_user: dict[str, Any] = {}  # rival -> its per-user validation NDCG@100, for the significance gate
    overlap: dict[str, Any] | None = None
    replaced: str | None = None
    if current is not None and current != str(version):
        champion_values, overlap = _champion_on_snapshot(model_name, current, snapshot_dir)
        if champion_values is not None:
            rivals.append((f"champion v{current}", _mean(champion_values)))
            per_user[f"champion v{current}"] = champion_values
        elif replace_champion_of_other_items:
            replaced = current
        else:
            reason = _refusal(model_name, version, current, overlap)
            _tag_decision(challenger["run_id"], "refused", reason, overlap)
            raise ItemMismatchError(reason)
    verdict = promotion_verdict(float(score), rivals, margin)
    significance = None
    if min_confidence is not None:
        significance = _significance(challenger, baselines, per_user, snapshot_dir, model_name, min_confidence)
    not_significant = [t for t in significance or [] if not t["significant"]]
    promoted = verdict.promoted and not not_significant
    if not verdict.promoted:
        reason = (f"kept the champion: challenger v{version} validation NDCG@100 {score:.4f} does not beat "
                  f"{', '.join(verdict.losses)} by the margin {margin}")
    elif not_significant:
        reason = (f"kept the champion: challenger v{version} validation NDCG@100 {score:.4f} is not significantly "
                  f"better at confidence {min_confidence} than {', '.join(map(_described, not_significant))}")
    else:
        beaten = ", ".join(verdict.beaten) or "nothing (first model)"
        reason = f"promoted challenger v{version}: validation NDCG@100 {score:.4f} beats {beaten} by > {margin}"
        if replaced and overlap is not None:  # replaced is only set with the overlap that made it so
            reason += (f", replacing champion v{replaced} of other items ({overlap['share']:.1%} in common) as "
                       "replace_champion_of_other_items asked")
        if significance:
            reason += f", significantly at confidence {min_confidence} ({', '.join(map(_described, significance))})"
        tracking.promote(model_name, version, CHAMPION)
    logger.info(reason)
    _tag_decision(challenger["run_id"], "promoted" if promoted else "rejected", reason, overlap)
    if significance is not None:
        _log_significance(challenger["run_id"], min_confidence, significance)
    return Decision(promoted=promoted, reason=reason, version=str(version), model_name=model_name,
                    run_id=challenger["run_id"], val_ndcg_at_100=float(score),
                    model_uri=f"models:/{model_name}@{CHAMPION}",
                    champion_version=str(version) if promoted else current, previous_champion=current,
                    champion_overlap=overlap, replaced_champion_of_other_items=replaced,
                    min_confidence=min_confidence, significance=significance)

"""The pipeline's promotion rule and typed step results, fast (no MLflow run, no Airflow)."""

from __future__ import annotations

import json

import pytest

from recvae.pipeline.results import Decision, ModelRun, SnapshotResult, promotion_verdict


@pytest.mark.parametrize(
    "score, rivals, margin, promoted, losses",
    [
        (0.40, [], 0.0, True, ()),  # the first model has nothing to beat
        (0.40, [("baseline ease", 0.39), ("champion v1", 0.35)], 0.0, True, ()),
        (0.40, [("baseline ease", 0.40)], 0.0, False, ("baseline ease (0.4000)",)),  # a tie keeps the champion
        (0.40, [("baseline ease", 0.395)], 0.01, False, ("baseline ease (0.3950)",)),  # within the margin
        (0.40, [("baseline ease", 0.30), ("champion v2", 0.41)], 0.0, False, ("champion v2 (0.4100)",)),
    ],
)
def test_the_challenger_must_beat_every_rival_by_the_margin(score, rivals, margin, promoted, losses):
    verdict = promotion_verdict(score, rivals, margin)
    assert verdict.promoted is promoted and verdict.losses == losses
    assert len(verdict.beaten) + len(verdict.losses) == len(rivals)


def test_results_travel_as_their_json_dict_and_come_back_typed():
    run = ModelRun(run_id="r1", kind="multvae", val_ndcg_at_100=0.41, test_ndcg_at_100=0.40, model_version="3")
    wire = json.loads(json.dumps(run.to_dict()))  # what an Airflow XCom holds
    assert wire == {"run_id": "r1", "kind": "multvae", "val_ndcg@100": 0.41, "test_ndcg@100": 0.40,
                    "model_version": "3", "model_uri": None}
    assert ModelRun.of(wire) == run and ModelRun.of(run) is run
    assert run["val_ndcg@100"] == 0.41 and dict(run) == wire  # steps may read either form
    snap = SnapshotResult(snapshot_dir="/s", snapshot_id="snap-1", n_users=10, n_items=5)
    assert {**snap, "extra": 1}["snapshot_id"] == "snap-1"
    decision = Decision(promoted=True, reason="r", version="3", model_name="m", run_id="r1", val_ndcg_at_100=0.41)
    assert decision["val_ndcg@100"] == 0.41 and decision.to_dict()["champion_overlap"] is None
    with pytest.raises(KeyError):
        decision["val_ndcg_at_100"]  # the JSON form keeps the established key

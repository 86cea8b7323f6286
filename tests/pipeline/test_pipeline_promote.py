"""pipeline.promote_step across data sets: the champion's item overlap with the snapshot is reported, and a champion
trained on other items is not compared unless the challenger is asked to replace it."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import scipy.sparse as sp

from recvae import pipeline, tracking
from recvae.data.idmap import IdMap
from recvae.data.snapshot import Snapshot
from recvae.models.baselines import Popularity
from recvae.serving.items import ItemMismatchError

NAME = "recvae"


@pytest.fixture
def store(mlflow_store):
    """A fresh MLflow store and recvae home (conftest's `mlflow_store`)."""
    return mlflow_store


def _snapshot(path: Path, item_ids: np.ndarray, seed: int) -> Path:
    """60 users over `item_ids` (raw ids), 8 of them held out for validation; saved under `path`."""
    rng = np.random.default_rng(seed)
    n = len(item_ids)
    popular = rng.permutation(n)[: max(4, n // 4)]  # a popular head, so popularity ranks well
    rows, cols = [], []
    for u in range(60):
        picks = np.unique(np.concatenate([rng.choice(popular, 3, replace=False), rng.choice(n, 3, replace=False)]))
        rows += [u] * len(picks)
        cols += picks.tolist()
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(60, n))
    snap = Snapshot(matrices={"train": X[8:], "validation_tr": X[:8], "validation_te": X[:8]},
                    rows={"train": np.arange(8, 60), "validation_tr": np.arange(8), "validation_te": np.arange(8)},
                    users=IdMap(np.arange(60)), items=IdMap(np.asarray(item_ids, dtype=np.int64)))
    snap.save(path)
    return path


def _register(snapshot_dir: Path) -> dict:
    """Fit popularity on the snapshot, log and register it; the challenger summary promote_step takes."""
    snap = Snapshot.load(snapshot_dir)
    rec = Popularity().fit(snap.train)
    rec.items = snap.items
    with tracking.start_run("promote-test", run_name="popularity") as run:
        info = tracking.log_recommender(rec, registered_model_name=NAME, extra_meta={"snapshot_id": snap.snapshot_id})
    score = pipeline.evaluate_model_uri(f"runs:/{run.info.run_id}/model", snapshot_dir)["ndcg@100"]
    return {"run_id": run.info.run_id, "kind": "popularity", "val_ndcg@100": float(score),
            "model_version": str(info.registered_model_version)}


def _tags(run_id: str) -> dict[str, str]:
    return mlflow.get_run(run_id).data.tags


def test_a_champion_of_other_items_is_not_compared(store, tmp_path):
    # synthetic-like champion: items 1..20; the new snapshot has items 1..60 (another data set whose ids overlap)
    old = _register(_snapshot(tmp_path / "small", np.arange(1, 21), seed=0))
    tracking.promote(NAME, old["model_version"])
    snap = _snapshot(tmp_path / "large", np.arange(1, 61), seed=1)
    challenger = _register(snap)

    with pytest.raises(ItemMismatchError) as info:
        pipeline.promote_step(challenger, [], snapshot_dir=snap, model_name=NAME)
    message = str(info.value)
    assert f"champion v{old['model_version']}" in message and "20 in common of its 20 and the snapshot's 60" in message
    assert "33.3% < 50%" in message and "--replace-champion-of-other-items" in message
    assert tracking.get_alias(NAME, "champion") == old["model_version"]  # nothing changed
    tags = _tags(challenger["run_id"])
    assert tags["recvae.promotion"] == "refused" and tags["recvae.promotion.champion_item_overlap"] == "0.3333"
    assert tags["recvae.promotion.champion_items"] == "20 in common of the champion's 20 and the snapshot's 60"


def test_the_champion_of_other_items_is_replaced_when_asked(store, tmp_path):
    old = _register(_snapshot(tmp_path / "other", np.arange(500, 540), seed=0))  # no item in common at all
    tracking.promote(NAME, old["model_version"])
    snap = _snapshot(tmp_path / "new", np.arange(1, 41), seed=1)
    challenger = _register(snap)
    weak = {"kind": "random", "val_ndcg@100": 0.0}

    decision = pipeline.promote_step(challenger, [weak], snapshot_dir=snap, model_name=NAME,
                                     replace_champion_of_other_items=True)
    assert decision["promoted"] and decision["replaced_champion_of_other_items"] == old["model_version"]
    assert decision["champion_overlap"]["share"] == 0.0 and not decision["champion_overlap"]["comparable"]
    assert "replacing champion v" in decision["reason"] and "baseline random" in decision["reason"]
    assert tracking.get_alias(NAME, "champion") == challenger["model_version"] == decision["champion_version"]
    assert _tags(challenger["run_id"])["recvae.promotion"] == "promoted"
    # it still has to beat the baselines
    again = _register(snap)
    strong = {"kind": "oracle", "val_ndcg@100": 1.0}
    kept = pipeline.promote_step(again, [strong], snapshot_dir=snap, model_name=NAME,
                                 replace_champion_of_other_items=True)
    assert not kept["promoted"] and "baseline oracle (1.0000)" in kept["reason"]


def test_a_champion_of_an_earlier_snapshot_is_compared_and_the_overlap_reported(store, tmp_path):
    # last week's snapshot had items 1..20; this week's keeps them and adds two
    old = _register(_snapshot(tmp_path / "week1", np.arange(1, 21), seed=0))
    tracking.promote(NAME, old["model_version"])
    snap = _snapshot(tmp_path / "week2", np.arange(1, 23), seed=1)
    challenger = _register(snap)

    decision = pipeline.promote_step(challenger, [], snapshot_dir=snap, model_name=NAME, margin=-1.0)
    overlap = decision["champion_overlap"]
    assert overlap == {"champion_items": 20, "snapshot_items": 22, "common_items": 20, "of_champion": 1.0,
                       "of_snapshot": 0.9091, "share": 0.9091, "comparable": True}
    assert f"champion v{old['model_version']}" in decision["reason"]  # it competed
    assert decision["promoted"] and decision["previous_champion"] == old["model_version"]
    assert decision["model_name"] == NAME and decision["run_id"] == challenger["run_id"]
    assert _tags(challenger["run_id"])["recvae.promotion.champion_item_overlap"] == "0.9091"


def test_recvae_pipeline_can_replace_a_champion_of_other_items(monkeypatch, capsys):
    from recvae import cli

    seen: dict = {}

    def fake(**kwargs):
        seen.update(kwargs)
        return {"models": [{"kind": "vae"}], "decision": {"reason": "promoted"}, "batch": {"status": "ok"}}

    monkeypatch.setattr(pipeline, "run_pipeline", fake)
    assert cli.main(["pipeline", "--replace-champion-of-other-items"]) == 0
    assert seen["replace_champion_of_other_items"] is True
    assert cli.main(["pipeline"]) == 0
    assert seen["replace_champion_of_other_items"] is False


# ---------------------------------------------------------------------------------------- significance gate
NOISE = np.array([0.1, 0.2, 0.3, 0.0, -0.1, 0.0, 0.0, 0.05])  # mean .06875, one-sided paired p = 0.0863
CLEAR = np.arange(11, 19) / 100  # mean .145, one-sided p = 3.3e-7


def _with_validation_results(snapshot_dir: Path, values: np.ndarray, tmp_path: Path, kind: str = "vae") -> dict:
    """A registered model whose run keeps per-user validation NDCG@100 `values` (the 8 validation users) on the
    snapshot; the summary promote_step takes, its score the mean of `values`."""
    import pandas as pd

    snap = Snapshot.load(snapshot_dir)
    rec = Popularity().fit(snap.train)
    rec.items = snap.items
    with tracking.start_run("promote-test", run_name=kind, tags={"snapshot_id": snap.snapshot_id}) as run:
        info = tracking.log_recommender(rec, registered_model_name=NAME, extra_meta={"snapshot_id": snap.snapshot_id})
        folder = tmp_path / run.info.run_id
        folder.mkdir()
        users = snap.users.raw_ids[snap.rows["validation_tr"]]
        pd.DataFrame({"user": users, "ndcg@100": values}).to_parquet(folder / "validation_per_user.parquet")
        mlflow.log_artifact(str(folder / "validation_per_user.parquet"), "eval")
    return {"run_id": run.info.run_id, "kind": kind, "val_ndcg@100": float(np.mean(values)),
            "model_version": str(info.registered_model_version)}


@pytest.fixture
def champion_values(store, tmp_path):
    """A promoted popularity champion on a snapshot; (snapshot dir, its per-user validation NDCG@100, version)."""
    snap_dir = _snapshot(tmp_path / "snap", np.arange(1, 41), seed=0)
    old = _register(snap_dir)
    tracking.promote(NAME, old["model_version"])
    values = pipeline.validation_ndcg_per_user(None, f"models:/{NAME}/{old['model_version']}",
                                               Snapshot.load(snap_dir))
    return snap_dir, values, old["model_version"]


def test_a_challenger_better_by_noise_is_promoted_only_without_the_gate(champion_values, tmp_path):
    from scipy import stats

    snap_dir, champion, old = champion_values
    challenger = _with_validation_results(snap_dir, champion + NOISE, tmp_path)
    kept = pipeline.promote_step(challenger, [], snapshot_dir=snap_dir, model_name=NAME, min_confidence=0.95)
    assert not kept["promoted"] and tracking.get_alias(NAME, "champion") == old
    [test] = kept["significance"]
    assert test["rival"] == f"champion v{old}" and test["n_users"] == 8 and not test["significant"]
    assert test["diff"] == pytest.approx(0.06875)
    assert test["p_value"] == pytest.approx(stats.ttest_1samp(NOISE, 0, alternative="greater").pvalue)
    assert "not significantly better at confidence 0.95 than champion v" in kept["reason"]
    assert "diff +0.0688" in kept["reason"] and kept["min_confidence"] == 0.95
    tags = _tags(challenger["run_id"])
    assert tags["recvae.promotion"] == "rejected" and tags["recvae.promotion.min_confidence"] == "0.95"
    assert "not significant" in tags[f"recvae.promotion.significance.champion_v{old}"]

    promoted = pipeline.promote_step(challenger, [], snapshot_dir=snap_dir, model_name=NAME)
    assert promoted["promoted"] and promoted["significance"] is None  # the gate is off by default
    assert tracking.get_alias(NAME, "champion") == challenger["model_version"]


def test_a_clearly_better_challenger_passes_the_gate_against_champion_and_baselines(champion_values, tmp_path):
    snap_dir, champion, old = champion_values
    baseline = _with_validation_results(snap_dir, champion, tmp_path, kind="popularity")
    challenger = _with_validation_results(snap_dir, champion + CLEAR, tmp_path)
    decision = pipeline.promote_step(challenger, [baseline], snapshot_dir=snap_dir, model_name=NAME,
                                     min_confidence=0.95)
    assert decision["promoted"] and tracking.get_alias(NAME, "champion") == challenger["model_version"]
    rivals = {t["rival"]: t for t in decision["significance"]}
    assert set(rivals) == {"baseline popularity", f"champion v{old}"}
    assert all(t["significant"] and t["diff"] == pytest.approx(0.145) for t in rivals.values())
    assert "significantly at confidence 0.95" in decision["reason"]
    doc = mlflow.artifacts.load_dict(f"runs:/{challenger['run_id']}/promotion/significance.json")
    assert doc["min_confidence"] == 0.95 and len(doc["tests"]) == 2


def test_the_gate_scores_a_model_without_kept_results(champion_values):
    snap_dir, champion, _ = champion_values
    challenger = _register(snap_dir)  # no validation artifact: scored, the same model as the champion
    decision = pipeline.promote_step(challenger, [], snapshot_dir=snap_dir, model_name=NAME, margin=-1.0,
                                     min_confidence=0.95)
    [test] = decision["significance"]
    assert test["diff"] == 0.0 and test["p_value"] == 1.0 and not decision["promoted"]


def test_recvae_promote_with_min_confidence(champion_values, tmp_path, capsys):
    from recvae import cli

    snap_dir, champion, old = champion_values
    noisy = _with_validation_results(snap_dir, champion + NOISE, tmp_path)
    argv = ["promote", "--version", noisy["model_version"], "--min-confidence", "0.95", "--snapshot", str(snap_dir)]
    assert cli.main(argv) == 1
    assert "kept " + old in capsys.readouterr().out and tracking.get_alias(NAME, "champion") == old
    clear = _with_validation_results(snap_dir, champion + CLEAR, tmp_path)
    argv[2] = clear["model_version"]
    assert cli.main(argv) == 0
    assert tracking.get_alias(NAME, "champion") == clear["model_version"]


def test_recvae_pipeline_passes_min_confidence(monkeypatch):
    from recvae import cli

    seen: dict = {}

    def fake(**kwargs):
        seen.update(kwargs)
        return {"models": [{"kind": "vae"}], "decision": {"reason": "promoted"}, "batch": {"status": "ok"}}

    monkeypatch.setattr(pipeline, "run_pipeline", fake)
    assert cli.main(["pipeline", "--min-confidence", "0.9"]) == 0 and seen["min_confidence"] == 0.9
    assert cli.main(["pipeline"]) == 0 and seen["min_confidence"] is None

"""pipeline.reports: the evaluation each run logs (segments, beyond-accuracy, per-user Parquet) on a hand-made
snapshot whose numbers are worked out in the comments."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recvae import tracking
from recvae.data.idmap import IdMap
from recvae.data.snapshot import Snapshot
from recvae.models.baselines import Popularity
from recvae.pipeline.reports import evaluation_report, genre_matrix, item_features, log_evaluation

D = 1 / math.log2(3)  # the discount of rank 2


def _rows(lists: list[list[int]], n_items: int = 6) -> sp.csr_matrix:
    m = np.zeros((len(lists), n_items), dtype=np.float32)
    for u, items in enumerate(lists):
        m[u, items] = 1
    return sp.csr_matrix(m)


def snapshot() -> Snapshot:
    """Training users 1..6 with histories 0, 0-1, ..., 0-5 (item counts 6 5 4 3 2 1: head = items 0, 1; history
    terciles 8/3 and 13/3); test users 7, 8, 9 with fold-in histories of 1, 4 and 5 items."""
    train = _rows([list(range(n)) for n in range(1, 7)])
    test_tr = _rows([[0], [0, 1, 2, 3], [0, 1, 2, 3, 4]])
    test_te = _rows([[1], [5], [5]])
    return Snapshot(matrices={"train": train, "test_tr": test_tr, "test_te": test_te},
                    rows={"train": np.arange(6), "test_tr": np.arange(6, 9), "test_te": np.arange(6, 9)},
                    users=IdMap(np.arange(1, 10)), items=IdMap(np.arange(101, 107)))


def popularity(snap: Snapshot) -> Popularity:
    rec = Popularity().fit(snap.train)
    rec.items = snap.items
    return rec


def test_report_segments_beyond_accuracy_and_per_user_rows() -> None:
    snap = snapshot()
    report = evaluation_report(popularity(snap).scores, snap, "test")
    assert report.thresholds == pytest.approx((8 / 3, 13 / 3))
    table = report.table.set_index(["segment", "metric"])["mean"]
    # popularity ranks 0..5; user 7 finds item 1 at rank 1, user 8 item 5 at rank 2 (after 4), user 9 item 5 at 1
    assert table[("all", "ndcg@100")] == pytest.approx((2 + D) / 3)
    assert table[("users_light", "ndcg@100")] == 1.0 and table[("users_medium", "ndcg@100")] == pytest.approx(D)
    assert table[("users_heavy", "ndcg@100")] == 1.0
    assert table[("items_head", "ndcg@100")] == 1.0  # only user 7 holds out a head item
    assert table[("items_tail", "ndcg@100")] == pytest.approx((D + 1) / 2)
    # top lists 1 2 3 4 5 | 4 5 | 5: 5 of the 6 items
    assert table[("all", "coverage@10")] == pytest.approx(5 / 6)
    assert report.ild_source is None and "has no item vectors" not in (report.ild_note or "")
    frame = report.per_user_frame()
    assert frame["user"].tolist() == [7, 8, 9] and frame["segment"].tolist() == ["light", "medium", "heavy"]
    assert frame["history"].tolist() == [1, 4, 5] and frame["heldout"].tolist() == [1, 1, 1]
    assert frame["ndcg@100"].tolist() == pytest.approx([1, D, 1])
    assert np.isnan(frame["ndcg@100.items_tail"][0]) and frame["ndcg@100.items_head"][0] == 1.0


def test_log_evaluation_names_metrics_and_keeps_per_user_values(mlflow_store, tmp_path: Path) -> None:
    snap = snapshot()
    rec = popularity(snap)
    with tracking.start_run("reports") as run:
        log_evaluation(rec.scores, snap, "test", rec=rec)
    logged = mlflow.get_run(run.info.run_id)
    m, tags = logged.data.metrics, logged.data.tags
    assert m["test_ndcg_at_100"] == pytest.approx((2 + D) / 3)
    assert m["test_ndcg_at_100.users_medium"] == pytest.approx(D)
    assert m["test_recall_at_20.items_tail"] == 1.0 and m["test_coverage_at_10"] == pytest.approx(5 / 6)
    assert "test_ild_at_10" not in m and "popularity has no item vectors" in tags["recvae.eval.test.ild_skipped"]
    assert tags["recvae.eval.test.history_thresholds"] == "light <= 2.66667 < medium <= 4.33333 < heavy"
    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=tracking.per_user_artifact("test"),
                                               dst_path=str(tmp_path))
    per_user = pd.read_parquet(path)
    assert per_user["user"].tolist() == [7, 8, 9] and per_user["ndcg@100"].tolist() == pytest.approx([1, D, 1])
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                             artifact_path="eval/test_segments.csv",
                                                             dst_path=str(tmp_path)))
    assert {"all", "users_light", "users_medium", "users_heavy", "items_head", "items_tail"} == set(table["segment"])


def test_genres_are_the_diversity_features_when_the_source_has_them(tmp_path: Path) -> None:
    meta = pd.DataFrame({"item_id": ["101", "102", "103"], "title": ["a", "b", "c"],
                         "genres": ["Action|Drama", None, "Drama"]})
    # columns sorted: Action, Drama; item 104 has no metadata
    assert genre_matrix(meta, np.array([101, 102, 103, 104])).tolist() == [[1, 1], [0, 0], [0, 1], [0, 0]]
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "movies.dat").write_text("101::A::Action\n102::B::Comedy|Action\n", encoding="latin-1")
    snap = snapshot()
    snap.manifest["source"] = {"path": str(tmp_path / "ml" / "ratings.dat")}
    features, source, note = item_features(snap)
    assert source == "genres" and note is None and features.shape == (6, 2)
    assert features[:2].tolist() == [[1, 0], [1, 1]]


def test_model_item_vectors_stand_in_for_missing_genres() -> None:
    class WithFactors:
        kind = "als"
        item_factors = np.eye(6, 2, dtype=np.float32)

    features, source, note = item_features(snapshot(), WithFactors())
    assert source == "model item vectors" and note is None and features.shape == (6, 2)


def test_recvae_evaluate_log_keeps_the_results_of_an_older_run(mlflow_store, tmp_path: Path, capsys) -> None:
    from recvae import cli

    snap = snapshot()
    snap.save(tmp_path / "snap")
    rec = popularity(snap)
    with tracking.start_run("reports", tags={"snapshot_id": snap.snapshot_id}) as run:
        tracking.log_recommender(rec)  # logged before runs kept per-user results
    run_id = run.info.run_id
    assert tracking.load_per_user(run_id, "test") is None
    with pytest.raises(tracking.ComparisonError, match="re-evaluate"):
        tracking.compare_against(run_id)
    argv = ["evaluate", "--model", f"runs:/{run_id}/model", "--snapshot", str(tmp_path / "snap"), "--log"]
    assert cli.main(argv) == 0
    assert "eval/test_per_user.parquet" in capsys.readouterr().out
    kept = tracking.load_per_user(run_id, "test")
    assert kept["user"].tolist() == [7, 8, 9] and kept["ndcg@100"].tolist() == pytest.approx([1, D, 1])
    logged = mlflow.get_run(run_id)
    assert logged.info.status == "FINISHED" and logged.data.metrics["test_ndcg_at_100.users_medium"] == pytest.approx(D)
    assert tracking.compare_against(run_id, log=False).rows == []  # comparable now: no other run yet
    # given thresholds: histories 1, 4, 5 with light <= 1 < medium <= 5
    assert cli.main([*argv, "--history-thresholds", "1,5"]) == 0
    assert tracking.load_per_user(run_id, "test")["segment"].tolist() == ["light", "medium", "medium"]
    assert mlflow.get_run(run_id).data.tags["recvae.eval.test.history_thresholds"] == "light <= 1 < medium <= 5 < heavy"

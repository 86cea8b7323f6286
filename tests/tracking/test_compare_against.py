"""tracking.compare_against and `recvae compare --against`: paired statistics from the runs' kept per-user results,
on hand-made results whose differences are worked out in tests/evaluation/test_paired.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from recvae import cli, tracking

REF = [0.4, 0.5, 0.6, 0.6]
NOISY = [0.5, 0.7, 0.9, 0.6]  # d = .1 .2 .3 0: a tie at 95%


@pytest.fixture
def store(mlflow_store):
    return mlflow_store


def _run(name: str, snapshot: str, ndcg: list[float] | None, tmp_path: Path, users: list[int] | None = None) -> str:
    """A finished run on `snapshot` with per-user test results (ndcg@100, and recall@20 = ndcg / 2), or none."""
    with tracking.start_run("cmp", run_name=name, tags={"snapshot_id": snapshot}) as run:
        if ndcg is not None:
            values = np.array(ndcg)
            frame = pd.DataFrame({"user": users or list(range(101, 101 + len(ndcg))), "history": 3, "heldout": 1,
                                  "segment": "light", "ndcg@100": values, "recall@20": values / 2})
            path = tmp_path / f"{name}.parquet"
            frame.to_parquet(path)
            folder = tmp_path / name
            folder.mkdir()
            (folder / "test_per_user.parquet").write_bytes(path.read_bytes())
            mlflow.log_artifact(str(folder / "test_per_user.parquet"), "eval")
    return run.info.run_id


def test_every_other_run_on_the_snapshot_is_compared_and_the_comparison_logged(store, tmp_path):
    ref = _run("ref", "snap-a", REF, tmp_path)
    noisy = _run("noisy", "snap-a", NOISY, tmp_path)
    ten = np.linspace(0.2, 0.6, 10)
    ref10 = _run("ref10", "snap-b", list(ten), tmp_path)
    better = _run("better", "snap-b", list(ten + np.arange(1, 11) / 100), tmp_path)
    old = _run("old", "snap-b", None, tmp_path)

    out = tracking.compare_against(ref)
    assert [r["run_id"] for r in out.rows] == [noisy, noisy] and out.not_comparable == []
    first = out.rows[0]
    assert first["metric"] == "ndcg@100" and first["diff"] == pytest.approx(0.15) and first["verdict"] == "tie"
    assert first["stderr"] == pytest.approx(math.sqrt(0.05 / 3) / 2) and first["n_users"] == 4
    assert out.rows[1]["metric"] == "recall@20" and out.rows[1]["diff"] == pytest.approx(0.075)

    out = tracking.compare_against(f"runs:/{ref10}/model", metrics=["ndcg@100"])
    assert [(r["run_id"], r["verdict"]) for r in out.rows] == [(better, "better")]
    assert out.not_comparable == [{"run_id": old, "run_name": "old", "model_kind": None, "snapshot_id": "snap-b",
                                   "reason": tracking.NOT_COMPARABLE}]
    # the comparison is in the reference run, for the UI
    doc = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=ref10, artifact_path="comparisons/test/comparison.json", dst_path=str(tmp_path / "dl"))).read_text())
    assert doc["reference"]["run_id"] == ref10 and doc["comparisons"][0]["verdict"] == "better"
    names = {f.path for f in mlflow.MlflowClient().list_artifacts(ref10, "comparisons/test")}
    assert names == {"comparisons/test/comparison.json", "comparisons/test/per_user_differences.png"}


def test_users_are_paired_by_raw_id(store, tmp_path):
    ref = _run("ref", "snap-a", REF, tmp_path, users=[1, 2, 3, 4])
    _run("shuffled", "snap-a", [NOISY[3], NOISY[0], NOISY[2], 0.0], tmp_path, users=[4, 1, 3, 9])
    row = tracking.compare_against(ref, metrics=["ndcg@100"], log=False).rows[0]
    # common users 1, 3, 4: d = .1, .3, 0
    assert row["n_users"] == 3 and row["diff"] == pytest.approx(0.4 / 3)


def test_refusals(store, tmp_path):
    ref = _run("ref", "snap-a", REF, tmp_path)
    other = _run("other", "snap-b", NOISY, tmp_path)
    bare = _run("bare", "snap-a", None, tmp_path)
    with pytest.raises(tracking.ComparisonError, match="on snapshot snap-b, the reference .* on snap-a"):
        tracking.compare_against(ref, runs=[other])
    with pytest.raises(tracking.ComparisonError, match="is on snapshot snap-a, not snap-b"):
        tracking.compare_against(ref, snapshot="snap-b")
    with pytest.raises(tracking.ComparisonError, match="no per-user test results .* re-evaluate"):
        tracking.compare_against(bare)
    with pytest.raises(tracking.ComparisonError, match="unknown metric.*map@5"):
        tracking.compare_against(ref, metrics=["map@5"])
    with pytest.raises(tracking.ModelNotFoundError):
        tracking.compare_against("0123456789abcdef0123456789abcdef")


def test_cli_prints_the_table_and_the_runs_it_could_not_compare(store, tmp_path, capsys):
    ref = _run("ref", "snap-a", REF, tmp_path)
    noisy = _run("noisy", "snap-a", NOISY, tmp_path)
    bare = _run("bare", "snap-a", None, tmp_path)
    assert cli.main(["compare", "--against", ref, "--metrics", "ndcg@100", "--confidence", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "reference: ref " + ref[:8] in out and "90% t interval" in out
    line = next(x for x in out.splitlines() if x.startswith(f"noisy {noisy[:8]}"))
    # at 90% the two-sided t-test (p ~ 0.10) still does not separate them
    assert "ndcg@100" in line and "+0.1500" in line and "tie" in line
    assert f"bare {bare[:8]}: {tracking.NOT_COMPARABLE}" in out
    assert f"logged comparisons/test/comparison.json, comparisons/test/per_user_differences.png into run {ref}" in out

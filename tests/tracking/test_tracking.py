"""MLflow integration: store location, run logging, the pyfunc model, registry aliases and run comparison."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402  (below the importorskip: without mlflow the module is skipped)

from recvae import paths, tracking  # noqa: E402  (idem: they import mlflow)
from recvae.config import Config  # noqa: E402  (idem)
from recvae.data.idmap import IdMap  # noqa: E402  (idem)
from recvae.data.snapshot import Snapshot  # noqa: E402  (idem)
from recvae.evaluation.metrics import EvalResult  # noqa: E402  (idem)
from recvae.models import base as recommender_mod  # noqa: E402  (idem)
from recvae.models.base import Recommender  # noqa: E402  (idem)
from recvae.serving.pyfunc import recommend_frame  # noqa: E402  (idem)

N_ITEMS = 20

# Noise from inside MLflow: SQLAlchemy 2.1's "``noload`` loader strategy" and pandas 3's range comparison.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*noload.*loader strategy"),
    pytest.mark.filterwarnings("ignore:Operation with range is deprecated"),
]


class CoocRecommender(Recommender):
    """Item co-occurrence: a user's score for an item is how often it co-occurs with the user's items."""

    kind = "test-cooc"

    def __init__(self, n_items: int, cooc: sp.csr_matrix | None = None) -> None:
        self.n_items = n_items
        self.cooc = cooc

    def fit(self, train: sp.csr_matrix, **kwargs: Any) -> CoocRecommender:
        c = (train.T @ train).tocsr().astype(np.float32)
        c.setdiag(0)
        c.eliminate_zeros()
        self.cooc = c
        return self

    def scores(self, X: sp.csr_matrix) -> torch.Tensor:
        return torch.from_numpy((X @ self.cooc).toarray().astype(np.float32))

    def params(self) -> dict[str, Any]:
        return {"n_items": self.n_items}

    def _save_state(self, path: Path) -> None:
        sp.save_npz(path / "cooc.npz", self.cooc)

    @classmethod
    def _load_state(cls, path: Path, meta: dict[str, Any]) -> CoocRecommender:
        return cls(int(meta["n_items"]), sp.load_npz(path / "cooc.npz").tocsr())


@pytest.fixture(autouse=True)
def _register_kind(monkeypatch):
    monkeypatch.setitem(recommender_mod.KINDS, CoocRecommender.kind, f"{__name__}:CoocRecommender")


@pytest.fixture(autouse=True)
def _restore(restore_tracking_uri):
    """Every test here leaves MLflow's tracking URI as it found it."""


@pytest.fixture
def store(mlflow_store) -> str:
    """A fresh SQLite tracking store for this test."""
    return mlflow_store


def _train_matrix() -> sp.csr_matrix:
    """Two taste groups: users 0-29 take items 0-9, users 30-59 take items 10-19 (each user 5 items)."""
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for u in range(60):
        base = 0 if u < 30 else 10
        for i in rng.choice(10, size=5, replace=False):
            rows.append(u)
            cols.append(base + int(i))
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(60, N_ITEMS))


@pytest.fixture
def cooc() -> CoocRecommender:
    rec = CoocRecommender(N_ITEMS).fit(_train_matrix())
    rec.items = IdMap(np.arange(1000, 1000 + N_ITEMS, dtype=np.int64))  # raw ids differ from indices
    return rec


def _small_snapshot(tmp_path: Path) -> Snapshot:
    train = _train_matrix()
    val = train[:4]
    snap = Snapshot(
        matrices={"train": train[4:], "validation_tr": val, "validation_te": val},
        rows={"train": np.arange(4, 60), "validation_tr": np.arange(4), "validation_te": np.arange(4)},
        users=IdMap(np.arange(60)),
        items=IdMap(np.arange(1000, 1000 + N_ITEMS)),
    )
    snap.save(tmp_path / "snap")
    return snap


# ------------------------------------------------------------------------------------------ store


def test_default_store_lives_under_recvae_home(tmp_path, monkeypatch, empty_mlflow_db):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RECVAE_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    shutil.copy(empty_mlflow_db, tmp_path / "home" / "mlflow.db")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    uri = paths.default_tracking_uri()
    assert uri == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    tracking.configure()
    with tracking.start_run("exp-a", "r1") as run:
        mlflow.log_dict({"a": 1}, "x.json")
    exp = MlflowClient().get_experiment_by_name("exp-a")
    assert exp.artifact_location.startswith((tmp_path / "home" / "mlartifacts").as_uri())
    assert MlflowClient(uri).get_experiment_by_name("exp-a").experiment_id == run.info.experiment_id
    assert (tmp_path / "home" / "mlartifacts").is_dir()
    assert list(cwd.iterdir()) == []  # nothing (mlruns/, mlflow.db) lands in the current directory
    assert tracking.get_or_create_experiment("exp-a") == run.info.experiment_id


def test_file_store_is_refused():
    with pytest.raises(ValueError, match="sqlite"):
        tracking.configure("file:///tmp/mlruns")


# ------------------------------------------------------------------------------------------- runs


def test_metric_key_sanitizes_at_sign():
    assert tracking.metric_key("val_ndcg@100") == "val_ndcg_at_100"
    assert tracking.metric_key("recall_all@20") == "recall_all_at_20"
    assert tracking.metric_key("a(b)") == "a_b_"


def test_params_tags_metrics_and_artifacts_are_logged(store, tmp_path):
    cfg = Config()
    snap = _small_snapshot(tmp_path)
    history = [
        {"loss": 10.0 - e, "neg_ll": 9.0 - e, "kl": 1.0 + e * 0.1, "beta": 0.05 * e, "val_ndcg@100": 0.1 * e,
         "val_recall@20": 0.05 * e, "val_recall@50": 0.08 * e, "note": "skipped"}
        for e in range(1, 4)
    ]
    with tracking.start_run("exp-log", "run-1", tags={"model_kind": "multvae"}) as run:
        logged = tracking.log_params(cfg, prefix="")
        tracking.log_params({"long": "x" * 10_000, "nested": {"deep": {"k": [1, 2]}}}, prefix="extra")
        tracking.log_snapshot(snap)
        cb = tracking.EpochLogger()
        for i, h in enumerate(history, start=1):
            cb(i, h)
        png = tracking.plot_history(cb.history)
        result = EvalResult({"ndcg@100": np.array([0.2, 0.4, np.nan]), "recall@20": np.array([0.0, 1.0, np.nan])})
        test_values = tracking.log_test_metrics(result)
    rid = run.info.run_id
    client = MlflowClient()
    data = client.get_run(rid).data

    # params: flattened config, nested dicts, truncated long values
    assert data.params["model.latent_dim"] == str(cfg.model.latent_dim)
    assert data.params["train.total_anneal_steps"] == str(cfg.train.total_anneal_steps)
    assert data.params["model.hidden_dims"] == "[600]"
    assert logged["train.lr"] == str(cfg.train.lr)
    assert data.params["extra.nested.deep.k"] == "[1, 2]"
    assert len(data.params["extra.long"]) <= tracking.MAX_PARAM_LENGTH
    assert "truncated" in data.params["extra.long"]

    # snapshot: id, counts and file hashes; manifest as an artifact
    assert data.params["snapshot.id"] == snap.snapshot_id == data.tags["snapshot_id"]
    assert data.params["snapshot.train.interactions"] == str(snap.train.nnz)
    assert data.params["snapshot.sha256.train.npz"] == snap.manifest["files"]["train.npz"]
    manifest = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="snapshot/manifest.json",
                                                                     dst_path=str(tmp_path / "dl"))).read_text())
    assert manifest["snapshot_id"] == snap.snapshot_id

    # code version tags
    version = tracking.code_version()
    assert data.tags["recvae_version"] == version["recvae_version"]
    if "git_commit" in version:
        assert data.tags["git_commit"] == version["git_commit"] and len(version["git_commit"]) == 40
        assert data.tags["git_dirty"] in ("true", "false")
    assert data.tags["model_kind"] == "multvae"

    # per-epoch metrics with steps; '@' sanitized; non-numeric skipped
    hist = client.get_metric_history(rid, "val_ndcg_at_100")
    assert sorted((m.step, round(m.value, 6)) for m in hist) == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert [m.step for m in sorted(client.get_metric_history(rid, "loss"), key=lambda m: m.step)] == [1, 2, 3]
    assert "note" not in data.metrics

    # test metrics: means, stderr, user count
    assert data.metrics["test_ndcg_at_100"] == pytest.approx(0.3)
    assert data.metrics["test_ndcg_at_100_stderr"] == pytest.approx(np.std([0.2, 0.4], ddof=1) / math.sqrt(2))
    assert data.metrics["test_n_users"] == 2
    assert test_values["test_recall_at_20"] == pytest.approx(0.5)

    # plot: a PNG on disk and as an artifact
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [a.path for a in client.list_artifacts(rid, "plots")] == ["plots/training_curves.png"]


def test_failed_run_is_marked_failed(store):
    with pytest.raises(RuntimeError):
        with tracking.start_run("exp-fail", "boom") as run:
            raise RuntimeError("boom")
    assert MlflowClient().get_run(run.info.run_id).info.status == "FAILED"


def killed_run(experiment: str, epochs: int = 2) -> str:
    """A run left RUNNING with `epochs` epochs of metrics, as a `kill -9` leaves it (nothing ended it)."""
    client = MlflowClient()
    run = client.create_run(tracking.get_or_create_experiment(experiment), tags={"recvae.run_key": "k1"})
    for epoch in range(1, epochs + 1):
        client.log_metric(run.info.run_id, "loss", 10.0 - epoch, step=epoch)
    client.log_param(run.info.run_id, "train.epochs", "5")
    return run.info.run_id


def test_start_run_reopens_a_killed_run(store):
    """start_run(run_id=...) continues a run: same id, metrics appended at later steps, FINISHED at the end."""
    rid = killed_run("exp-resume")
    assert tracking.resumable_run("exp-resume", rid) == rid
    assert tracking.resumable_run("other-exp", rid) is None  # another experiment's run is not continued
    assert tracking.resumable_run("exp-resume", "0" * 32) is None
    with tracking.start_run("exp-resume", "again", tags={"recvae.run_key": "k1"}, run_id=rid) as run:
        assert run.info.run_id == rid and MlflowClient().get_run(rid).info.status == "RUNNING"
        mlflow.log_metric("loss", 7.0, step=3)
    client = MlflowClient()
    assert client.get_run(rid).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(rid, "loss")] == [1, 2, 3]
    assert tracking.resumable_run("exp-resume", rid) is None  # a finished run is never reopened
    assert len(client.search_runs([client.get_experiment_by_name("exp-resume").experiment_id])) == 1


def test_unfinished_runs_are_found_by_tag_and_can_be_marked_killed(store):
    rid = killed_run("exp-stale")
    with tracking.start_run("exp-stale", "done", tags={"recvae.run_key": "k1"}):
        pass
    assert [r.info.run_id for r in tracking.unfinished_runs("exp-stale", "recvae.run_key", "k1")] == [rid]
    assert tracking.unfinished_runs("exp-stale", "recvae.run_key", "k2") == []
    assert tracking.unfinished_runs("no-such-exp", "recvae.run_key", "k1") == []
    assert tracking.end_unfinished_runs("exp-stale", "recvae.run_key", "k1") == [rid]
    assert MlflowClient().get_run(rid).info.status == "KILLED"
    assert tracking.end_unfinished_runs("exp-stale", "recvae.run_key", "k1") == []  # KILLED is final


def test_params_of_a_resumed_run_are_not_relogged_in_conflict(store, caplog):
    """A resumed run keeps its params; a changed value (epochs extended) is reported, not an MLflow error."""
    rid = killed_run("exp-params")
    with tracking.start_run("exp-params", run_id=rid):
        with caplog.at_level("WARNING", logger="recvae.tracking"):
            logged = tracking.log_params({"train": {"epochs": 8, "lr": 0.001}}, resumed=True)
    params = MlflowClient().get_run(rid).data.params
    assert params["train.epochs"] == "5" and params["train.lr"] == "0.001"
    assert logged == {"train.lr": "0.001"}
    assert "train.epochs" in caplog.text and "5" in caplog.text and "8" in caplog.text
    assert MlflowClient().get_run(rid).data.tags["recvae.resume.changed_params"] == "train.epochs: 5 -> 8"


def test_epoch_logger_backfills_only_the_epochs_a_run_lacks(store):
    """An epoch checkpointed just before a kill was never logged: log_missing adds it, and no duplicates."""
    rid = killed_run("exp-backfill", epochs=1)
    history = [{"epoch": e, "loss": 10.0 - e} for e in (1, 2, 3)]
    with tracking.start_run("exp-backfill", run_id=rid):
        epochs = tracking.EpochLogger()
        epochs(3, history[2])
        assert epochs.log_missing(history) == 1  # epoch 2; epoch 1 came from the killed process, epoch 3 from now
    steps = sorted(m.step for m in MlflowClient().get_metric_history(rid, "loss"))
    assert steps == [1, 2, 3]


def test_epoch_logger_needs_a_run(store):
    with pytest.raises(RuntimeError, match="active MLflow run"):
        tracking.EpochLogger()


# ------------------------------------------------------------------------------------------ model


def test_recommend_frame_folds_in_new_users(cooc):
    history = pd.DataFrame(
        {"user": ["new-a", "new-a", "new-a", "new-a", "new-b", "new-b", "cold"],
         "item": [1000, 1001, 1002, 99999, 1010, 1011, 424242]}  # 99999 / 424242: unknown ids
    )
    out = recommend_frame(cooc, history, top_n=5)
    assert list(out.columns) == ["user", "rank", "item", "score"]
    a = out[out.user == "new-a"]
    b = out[out.user == "new-b"]
    assert a["rank"].tolist() == [1, 2, 3, 4, 5]
    assert set(a["item"]).isdisjoint({1000, 1001, 1002}) and set(a["item"]) <= set(range(1003, 1010))
    assert set(b["item"]).isdisjoint({1010, 1011}) and set(b["item"]) <= set(range(1012, 1020))
    assert (np.diff(a["score"].to_numpy()) <= 0).all()
    # scores equal the model's own scores for the folded-in history
    x = sp.csr_matrix((np.ones(3, np.float32), ([0, 0, 0], [0, 1, 2])), shape=(1, N_ITEMS))
    expected = cooc.scores(x)[0].numpy()
    assert np.allclose(a["score"].to_numpy(), expected[a["item"].to_numpy() - 1000])
    # a user with only unknown items still gets (history-free) recommendations, not an error
    assert "cold" in set(out.user)


def test_recommend_frame_never_returns_seen_items_when_few_are_left(cooc):
    seen = list(range(1000, 1000 + N_ITEMS - 2))
    out = recommend_frame(cooc, pd.DataFrame({"user": 7, "item": seen}), top_n=50)
    assert set(out["item"]) <= {1018, 1019} and len(out) <= 2


def test_recommend_frame_accepts_ids_as_strings_and_empty_input(cooc):
    as_int = recommend_frame(cooc, pd.DataFrame({"user": ["u", "u"], "item": [1000, 1001]}), top_n=3)
    as_str = recommend_frame(cooc, pd.DataFrame({"user": ["u", "u", "u"], "item": ["1000", "1001", "x"]}), top_n=3)
    pd.testing.assert_frame_equal(as_int, as_str)
    empty = recommend_frame(cooc, pd.DataFrame({"user": [], "item": []}))
    assert list(empty.columns) == ["user", "rank", "item", "score"] and empty.empty


def test_recommend_frame_rejects_bad_input(cooc):
    with pytest.raises(ValueError, match="item"):
        recommend_frame(cooc, pd.DataFrame({"user": [1]}))
    with pytest.raises(ValueError, match="top_n"):
        recommend_frame(cooc, pd.DataFrame({"user": [1], "item": [1000]}), top_n=0)


def test_log_register_alias_and_load_back(store, cooc, tmp_path):
    with tracking.start_run("exp-model", "cooc") as run:
        info = tracking.log_recommender(cooc, extra_meta={"snapshot_id": "snap-test123"})
    rid = run.info.run_id
    assert info.signature.params.to_dict()[0]["name"] == "top_n"
    assert MlflowClient().get_run(rid).data.tags["model_kind"] == "test-cooc"

    v1 = tracking.register(rid, "toy")
    assert v1 == "1"
    assert MlflowClient().get_model_version("toy", v1).run_id == rid
    assert tracking.promote("toy", v1) is None
    assert tracking.get_alias("toy", tracking.CHAMPION) == "1"

    rec, meta = tracking.load_recommender_from_uri("models:/toy@champion")
    assert isinstance(rec, CoocRecommender)
    assert (meta.name, meta.version, meta.alias, meta.run_id) == ("toy", "1", "champion", rid)
    assert meta.snapshot_id == "snap-test123" and meta.kind == "test-cooc"
    assert rec.items == cooc.items
    x = _train_matrix()[:5]
    assert torch.equal(rec.scores(x), cooc.scores(x))

    # the same model through the other URI forms and a local directory
    for uri in ("models:/toy/1", f"runs:/{rid}/model"):
        rec2, meta2 = tracking.load_recommender_from_uri(uri)
        assert meta2.run_id == rid and torch.equal(rec2.scores(x), cooc.scores(x))
    local = mlflow.artifacts.download_artifacts("models:/toy/1", dst_path=str(tmp_path / "local"))
    rec3, meta3 = tracking.load_recommender_from_uri(local)
    assert meta3.snapshot_id == "snap-test123" and torch.equal(rec3.scores(x), cooc.scores(x))

    # the pyfunc: raw-id history in, top-N raw ids out, seen removed, unknown ignored, several users
    model = mlflow.pyfunc.load_model("models:/toy@champion")
    history = pd.DataFrame({"user": [1, 1, 1, 2, 2], "item": [1010, 1011, 5, 1000, 1001]})
    out = model.predict(history, params={"top_n": 4})
    assert list(out.columns) == ["user", "rank", "item", "score"]
    assert out.groupby("user").size().to_dict() == {1: 4, 2: 4}
    u1 = set(out[out.user == 1]["item"])
    assert u1.isdisjoint({1010, 1011}) and u1 <= set(range(1012, 1020))
    pd.testing.assert_frame_equal(out.reset_index(drop=True), recommend_frame(cooc, history, 4))
    default = model.predict(history)  # top_n defaults to 100: every unseen item (18 per user)
    assert len(default) == 2 * (N_ITEMS - 2)

    # a second version becomes champion; the old one is kept as 'previous'
    with tracking.start_run("exp-model", "cooc-2") as run2:
        info2 = tracking.log_recommender(cooc, registered_model_name="toy")
    v2 = str(info2.registered_model_version)
    assert v2 == "2"
    tracking.set_alias("toy", tracking.CHALLENGER, v2)
    assert tracking.get_alias("toy", tracking.CHALLENGER) == "2"
    assert tracking.promote("toy", v2) == "1"
    assert tracking.get_alias("toy", tracking.CHAMPION) == "2"
    assert tracking.get_alias("toy", tracking.PREVIOUS) == "1"
    _, meta4 = tracking.load_recommender_from_uri("models:/toy@champion")
    assert meta4.run_id == run2.info.run_id and meta4.version == "2"


def test_urls_logged_to_mlflow_are_masked(store):
    """A URL's password never reaches MLflow's params or tags (a run's config or snapshot source may hold one)."""
    url, masked = "postgresql+psycopg://u:pw123@db.example/recs", "postgresql+psycopg://u:***@db.example/recs"
    with tracking.start_run("exp-mask", "m", tags={"source": url}) as run:
        logged = tracking.log_params({"data": {"source": url, "dsn": "host=h password=pw123"}})
    data = MlflowClient().get_run(run.info.run_id).data
    assert logged["data.source"] == data.params["data.source"] == masked
    assert data.params["data.dsn"] == "host=h password=***" and data.tags["source"] == masked


def test_unknown_model_uri_errors_are_clear(store, cooc):
    with tracking.start_run("exp-err", "cooc") as run:
        tracking.log_recommender(cooc)
    tracking.register(run.info.run_id, "toy-err")
    tracking.set_alias("toy-err", tracking.CHAMPION, "1")
    with pytest.raises(tracking.ModelNotFoundError, match=r"no alias 'staging'.*champion"):
        tracking.load_recommender_from_uri("models:/toy-err@staging")
    with pytest.raises(tracking.ModelNotFoundError, match="no registered model 'nope'"):
        tracking.load_recommender_from_uri("models:/nope@champion")
    with pytest.raises(tracking.ModelNotFoundError, match="no version 7"):
        tracking.load_recommender_from_uri("models:/toy-err/7")
    with pytest.raises(tracking.ModelNotFoundError, match="no run"):
        tracking.load_recommender_from_uri("runs:/0123456789abcdef/model")
    with pytest.raises(tracking.ModelNotFoundError, match="no such model directory"):
        tracking.load_recommender_from_uri("/nonexistent/model/dir")
    with pytest.raises(tracking.ModelNotFoundError, match="no logged model named 'other'"):
        tracking.register(run.info.run_id, "toy-err", artifact="other")
    with pytest.raises(tracking.ModelNotFoundError, match="no run"):
        tracking.register("0123456789abcdef", "toy-err")
    assert tracking.get_alias("toy-err", "staging") is None
    assert tracking.get_alias("nope", tracking.CHAMPION) is None


def test_popularity_baseline_round_trip(store):
    baselines = pytest.importorskip("recvae.models.baselines")
    if not hasattr(baselines, "Popularity"):
        pytest.skip("recvae.models.baselines.Popularity not written yet")
    rec = baselines.Popularity().fit(_train_matrix())
    rec.items = IdMap(np.array([f"i{i}" for i in range(N_ITEMS)], dtype=object))  # string raw ids
    with tracking.start_run("exp-pop", "pop") as run:
        tracking.log_recommender(rec)
    tracking.register(run.info.run_id, "pop")
    tracking.promote("pop", "1")
    loaded, meta = tracking.load_recommender_from_uri("models:/pop@champion")
    assert meta.kind == "popularity"
    x = _train_matrix()[:3]
    assert torch.allclose(loaded.scores(x).float(), rec.scores(x).float())
    out = mlflow.pyfunc.load_model("models:/pop@champion").predict(
        pd.DataFrame({"user": ["u", "u"], "item": ["i0", "i1"]}), params={"top_n": 3}
    )
    assert len(out) == 3 and set(out["item"]).isdisjoint({"i0", "i1"})
    counts = np.asarray(_train_matrix().sum(axis=0)).ravel()
    assert out["item"].iloc[0] == f"i{int(np.argmax(np.where(np.isin(np.arange(N_ITEMS), [0, 1]), -1, counts)))}"


# ---------------------------------------------------------------------------------------- compare


def test_compare_runs_table(store):
    runs = [("vae-a", "multvae", 0.30, 1e-3), ("pop", "popularity", 0.10, None), ("vae-b", "multvae", 0.42, 3e-4)]
    for name, kind, ndcg, lr in runs:
        with tracking.start_run("exp-cmp", name, tags={"model_kind": kind}):
            if lr is not None:
                tracking.log_params({"train": {"lr": lr}})
            cb = tracking.EpochLogger()
            cb(1, {"val_ndcg@100": ndcg / 2})
            cb(2, {"val_ndcg@100": ndcg})
    table = tracking.compare_runs("exp-cmp")
    assert table["run_name"].tolist() == ["vae-b", "vae-a", "pop"]  # best val_ndcg_at_100 (latest value) first
    assert table["model_kind"].tolist() == ["multvae", "multvae", "popularity"]
    assert table["val_ndcg_at_100"].tolist() == pytest.approx([0.42, 0.30, 0.10])
    assert table["train.lr"].iloc[0] == "0.0003" and pd.isna(table["train.lr"].iloc[2])
    with pytest.raises(tracking.ModelNotFoundError, match="no experiment 'missing'"):
        tracking.compare_runs("missing")


def test_compare_ranks_trained_runs_by_the_epoch_they_kept(store):
    """An early-stopped run's last epoch is worse than the epoch its model comes from: the table ranks the model."""
    import mlflow

    with tracking.start_run("exp-kept", "stopped-early", tags={"model_kind": "multvae"}):
        cb = tracking.EpochLogger()
        for epoch, ndcg in enumerate([0.30, 0.45, 0.38], start=1):
            cb(epoch, {"val_ndcg@100": ndcg})
        mlflow.log_metric("best_val_ndcg_at_100", 0.45)  # as pipeline.train_step logs it
    with tracking.start_run("exp-kept", "ease", tags={"model_kind": "ease"}):
        mlflow.log_metric("val_ndcg_at_100", 0.40)
    table = tracking.compare_runs("exp-kept")
    assert table["run_name"].tolist() == ["stopped-early", "ease"]
    assert table["model_val_ndcg_at_100"].tolist() == pytest.approx([0.45, 0.40])
    assert table["val_ndcg_at_100"].tolist() == pytest.approx([0.38, 0.40])  # the latest values stay as logged


# ---------------------------------------------------------------------------------------- datasets


def _inputs(run_id: str) -> dict[str, Any]:
    """context -> the run's input dataset logged with it."""
    out = {}
    for inp in MlflowClient().get_run(run_id).inputs.dataset_inputs:
        context = {t.key: t.value for t in inp.tags}["mlflow.data.context"]
        out[context] = inp.dataset
    return out


def test_trained_and_baseline_runs_log_their_snapshot_as_datasets(store, tmp_path, capsys):
    from recvae import pipeline
    from recvae.cli import main

    snap = _small_snapshot(tmp_path)
    other = Snapshot(matrices={"train": _train_matrix()[10:]}, rows={"train": np.arange(10, 60)},
                     users=IdMap(np.arange(60)), items=IdMap(np.arange(1000, 1000 + N_ITEMS)))
    other.save(tmp_path / "other")
    small = ["train.epochs=2", "train.batch_size=32", "model.hidden_dims=[8]", "model.latent_dim=4"]
    vae = pipeline.train_step(tmp_path / "snap", overrides=small, experiment="exp-ds", model_name=None)
    pop = pipeline.baseline_step("popularity", tmp_path / "snap", experiment="exp-ds")
    pipeline.baseline_step("popularity", tmp_path / "other", experiment="exp-ds")

    sid = snap.snapshot_id
    for run_id in (vae["run_id"], pop["run_id"]):
        datasets = _inputs(run_id)
        assert set(datasets) == {"training", "validation"}  # the snapshot has no test users
        assert {d.digest for d in datasets.values()} == {sid}
        train = datasets["training"]
        assert json.loads(train.profile) == {"users": 56, "items": N_ITEMS, "interactions": int(snap.train.nnz)}
        assert json.loads(datasets["validation"].profile)["users"] == 4
        assert json.loads(train.schema)["mlflow_colspec"] == [{"type": "long", "name": "user", "required": True},
                                                              {"type": "long", "name": "item", "required": True}]
        assert train.source_type == "local" and json.loads(train.source)["uri"] == str(tmp_path / "snap")
    assert _inputs(vae["run_id"])["training"].name == "snapshot/train"  # no recorded origin: no data set name

    # compare shows each run's snapshot and keeps only one snapshot's runs when asked
    table = tracking.compare_runs("exp-ds")
    assert sorted(table["snapshot_id"]) == sorted([sid, sid, other.snapshot_id])
    only = tracking.compare_runs("exp-ds", snapshot=sid)
    assert sorted(only["run_id"]) == sorted([vae["run_id"], pop["run_id"]])
    assert tracking.compare_runs("exp-ds", snapshot="snap-0000000000000000").empty
    capsys.readouterr()
    assert main(["compare", "--experiment", "exp-ds", "--snapshot", other.snapshot_id]) == 0
    out = capsys.readouterr().out
    assert "snapshot_id" in out and other.snapshot_id in out and sid not in out
    assert main(["compare", "--experiment", "exp-ds", "--snapshot", "snap-nope"]) == 0
    assert "no runs on snapshot snap-nope" in capsys.readouterr().out


def test_dataset_source_is_the_data_origin_with_its_password_masked(store):
    snap = Snapshot(matrices={"train": _train_matrix()}, rows={"train": np.arange(60)},
                    users=IdMap(np.array([f"u{i}" for i in range(60)], dtype=object)), items=IdMap(np.arange(N_ITEMS)))
    origins = {
        "sql": ({"format": "sql", "path": "postgresql://reader:s3cret@db.example:5432/shop"}, "local", "uri"),
        "http": ({"format": "csv", "path": "https://user:s3cret@data.example/ratings.csv"}, "http", "url"),
        "named": ({"format": "movielens", "dataset": "ml-1m", "path": "/data/ml-1m/ratings.dat"}, "local", "uri"),
    }
    for label, (source, source_type, key) in origins.items():
        snap.manifest = {"source": source}
        with tracking.start_run("exp-src", label) as run:
            assert tracking.log_datasets(snap) == ["training"]
        ds = _inputs(run.info.run_id)["training"]
        assert ds.source_type == source_type, label
        text = json.loads(ds.source)[key]
        assert "s3cret" not in text and ("***" in text) == (label != "named"), text
        assert ds.digest == snap.snapshot_id
        assert json.loads(ds.schema)["mlflow_colspec"][0]["type"] == "string"  # the user ids
    assert _inputs(run.info.run_id)["training"].name == "ml-1m/train"

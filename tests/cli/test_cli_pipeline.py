"""The main job and the model/serving commands of the CLI, end to end on the synthetic data."""

from __future__ import annotations

import csv
import re

import pytest

from recvae.cli import main

pytestmark = pytest.mark.slow

FAST = ["--set", "train.epochs=3", "--set", "train.batch_size=200"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("RECVAE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("RECVAE_DB_URL", raising=False)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    yield tmp_path
    mlflow.set_tracking_uri(previous)


def test_pipeline_trains_promotes_and_publishes(home, capsys):
    db = f"sqlite:///{home / 'recs.db'}"
    assert main(["pipeline", *FAST, "--baselines", "popularity", "--top-n", "7", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "promoted challenger v1" in out

    from recvae.serving.store import RecommendationStore

    with RecommendationStore(db) as store:
        batch = store.current_batch()
        assert batch is not None and batch.status == "published"
        assert store.count_rows(batch.batch_id) == 7 * batch.user_count
        some_user = store.query("top_items", n=1)  # any query works on the published view
        assert some_user
    import sqlalchemy as sa

    engine = sa.create_engine(db)
    with engine.connect() as conn:
        uid = conn.execute(sa.text("select min(user_id) from recvae_current_recommendations")).scalar_one()
    engine.dispose()
    with RecommendationStore(db) as store:
        user = store.query("user_top", user_id=uid, n=7)
    assert [r["rank"] for r in user] == list(range(1, 8))

    # evaluate and compare read the same MLflow store
    assert main(["evaluate", "--model", "models:/recvae@champion", "--split", "test"]) == 0
    assert "ndcg@100" in capsys.readouterr().out
    assert main(["compare"]) == 0
    table = capsys.readouterr().out
    assert "multvae" in table and "popularity" in table

    # db query: bound parameters from the command line
    assert main(["db", "query", "user_top", "--db", db, "--param", f"user_id={uid}", "--param", "n=3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2 + 3


def test_recommend_for_new_users_writes_csv_not_the_tables(home, tmp_path, capsys):
    db = f"sqlite:///{home / 'recs.db'}"
    assert main(["pipeline", *FAST, "--model", "dae", "--baselines", "", "--top-n", "5", "--db", db]) == 0
    assert "multdae" in capsys.readouterr().out  # the challenger kind chosen on the command line
    from recvae.serving.store import RecommendationStore

    with RecommendationStore(db) as store:
        before = store.current_batch().batch_id
    history = tmp_path / "new.csv"
    history.write_text("user,item\nnew-a,0\nnew-a,1\nnew-b,2\n")
    out = tmp_path / "lists.csv"
    assert main(["recommend", "--users", str(history), "--top-n", "4", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["user"] for r in rows} == {"new-a", "new-b"}
    assert not any(r["user"] == "new-a" and r["item"] in ("0", "1") for r in rows)  # seen items removed
    assert len(rows) == 8
    with RecommendationStore(db) as store:
        assert store.current_batch().batch_id == before  # ad-hoc lists never replace the published batch


def test_bad_input_exits_2_with_one_line(home, capsys):
    assert main(["recommend", "--model", "models:/nope@champion"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("recvae")]
    assert len(err) == 1 and "nope" in err[0] and "Traceback" not in err[0]
    assert main(["db", "query", "no_such_query", "--db", f"sqlite:///{home / 'x.db'}"]) == 2
    assert "unknown query" in capsys.readouterr().err


def assert_new_user_gets_unseen_items(tmp_path, model_uri: str) -> None:
    """`recommend --users` folds a new user's history into `model_uri` and lists 3 items they have not seen."""
    history = tmp_path / "new.csv"
    history.write_text("user,item\nnew-a,0\nnew-a,1\n")
    out = tmp_path / "lists.csv"
    assert main(["recommend", "--model", model_uri, "--users", str(history), "--top-n", "3", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3 and not {r["item"] for r in rows} & {"0", "1"}


def test_train_recvae_registers_a_model_that_serves(home, tmp_path, capsys):
    """`train --model recvae` starts from RecVAE's preset; the registered model evaluates and folds in new users."""
    snap = str(tmp_path / "snap")
    assert main(["prepare", "--dataset", "synthetic", "--out", snap]) == 0
    capsys.readouterr()
    assert main(["train", "--snapshot", snap, "--model", "recvae", *FAST,
                 "--set", "model.hidden_dims=32,32", "--set", "train.amp=bf16"]) == 0
    assert "recvae" in capsys.readouterr().out
    assert main(["evaluate", "--model", "models:/recvae@challenger", "--snapshot", snap, "--split", "test"]) == 0
    assert "ndcg@100" in capsys.readouterr().out
    assert main(["compare"]) == 0
    assert "recvae" in capsys.readouterr().out
    assert_new_user_gets_unseen_items(tmp_path, "models:/recvae@challenger")

    import mlflow

    run = mlflow.get_run(mlflow.MlflowClient().get_model_version_by_alias("recvae", "challenger").run_id)
    assert run.data.params["model.kind"] == "recvae" and run.data.params["train.beta_per_item"] == "True"
    assert run.data.params["model.hidden_dims"] == "[32, 32]"


def test_ensemble_of_two_seeds_is_logged_registered_and_serves(home, tmp_path, capsys):
    """`recvae ensemble` combines registered runs into one model: its own MLflow run, version and challenger alias."""
    import mlflow

    snap = str(tmp_path / "snap")
    assert main(["prepare", "--dataset", "synthetic", "--out", snap]) == 0
    for seed in (1, 2):
        assert main(["train", "--snapshot", snap, *FAST, "--set", f"train.seed={seed}", "--set", "model.hidden_dims=32",
                     "--set", "model.latent_dim=16"]) == 0
    capsys.readouterr()
    assert main(["ensemble", "--model", "models:/recvae/1", "--model", "models:/recvae/2", "--snapshot", snap]) == 0
    assert "ensemble" in capsys.readouterr().out
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("recvae", "challenger")
    assert str(version.version) == "3"
    run = mlflow.get_run(version.run_id)
    assert run.data.params["n_members"] == "2" and run.data.tags["model_kind"] == "ensemble"
    assert {"val_ndcg_at_100", "test_ndcg_at_100", "test_recall_at_20"} <= set(run.data.metrics)
    assert main(["evaluate", "--model", "models:/recvae@challenger", "--snapshot", snap, "--split", "test"]) == 0
    assert f"{run.data.metrics['test_ndcg_at_100']:.4f}" in capsys.readouterr().out  # the logged figure, reproduced
    assert_new_user_gets_unseen_items(tmp_path, "models:/recvae@challenger")
    # one member is not an ensemble; the error is one line, exit 2
    assert main(["ensemble", "--model", "models:/recvae/1", "--snapshot", snap]) == 2
    assert "at least 2" in capsys.readouterr().err


def test_ensemble_refuses_models_of_another_snapshot(home, tmp_path, capsys):
    """Members must come from the snapshot the ensemble is evaluated on: otherwise one line, exit 2, nothing logged."""
    import mlflow

    uris = []
    for seed in (1, 2):
        snap = str(tmp_path / f"snap{seed}")
        assert main(["prepare", "--dataset", "synthetic", "--seed", str(seed), "--out", snap]) == 0
        assert main(["baseline", "popularity", "--snapshot", snap]) == 0
        uris.append(f"runs:/{mlflow.last_active_run().info.run_id}/model")
    capsys.readouterr()
    n_runs = len(mlflow.search_runs(search_all_experiments=True))
    assert main(["ensemble", "--model", uris[0], "--model", uris[1], "--snapshot", str(tmp_path / "snap2"),
                 "--name", "none"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the INFO lines of the loads
    assert last.startswith("recvae ensemble: error:") and "was trained on snapshot" in last
    assert len(mlflow.search_runs(search_all_experiments=True)) == n_runs


def error_lines(err: str, command: str | None = None) -> list[str]:
    """The `recvae <command>: error:` lines of `err` (any command's when None), asserting no traceback."""
    assert "Traceback" not in err
    prefix = f"recvae {command}: error:" if command else "recvae "
    return [line for line in err.strip().splitlines() if line.startswith(prefix)]


def test_evaluate_and_recommend_refuse_a_model_trained_on_other_items(home, tmp_path, capsys):
    """A model scored against another data set's items: one error line with the overlap (evaluate: unless
    --allow-other-items, which reports the overlap beside the metrics)."""
    import mlflow

    from recvae.data import synthetic

    a = synthetic.generate("small", n_users=400, seed=1)
    b = synthetic.generate("small", n_users=400, seed=2).assign(item=lambda d: d["item"] + 300)  # other items
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    for name in ("a", "b"):
        assert main(["--log-level", "WARNING", "prepare", "--input", str(tmp_path / f"{name}.csv"),
                     "--out", str(tmp_path / name)]) == 0
    assert main(["--log-level", "WARNING", "baseline", "popularity", "--snapshot", str(tmp_path / "a")]) == 0
    uri = f"runs:/{mlflow.last_active_run().info.run_id}/model"
    capsys.readouterr()

    assert main(["evaluate", "--model", uri, "--snapshot", str(tmp_path / "b")]) == 2
    captured = capsys.readouterr()
    [line] = error_lines(captured.err)
    assert line.startswith(f"recvae evaluate: error: {uri} was trained on other items than snapshot snap-")
    assert re.search(r"knows \d+ of the snapshot's \d+ items \(\d+\.\d%\)", line) and "--allow-other-items" in line
    assert "ndcg" not in captured.out and "Traceback" not in captured.err

    assert main(["evaluate", "--model", uri, "--snapshot", str(tmp_path / "b"), "--allow-other-items"]) == 0
    out = capsys.readouterr().out
    assert "ndcg@100" in out and re.search(r"knows \d+ of the snapshot's \d+ items \((?!100\.0)\d+\.\d%\)", out)
    assert main(["evaluate", "--model", uri, "--snapshot", str(tmp_path / "a")]) == 0
    assert "items (100.0%)" in capsys.readouterr().out

    db = f"sqlite:///{tmp_path / 'recs.db'}"
    for extra in ([], ["--user-ids", "1"]):
        assert main(["recommend", "--model", uri, "--snapshot", str(tmp_path / "b"), "--db", db, *extra]) == 2
        err = capsys.readouterr().err
        [line] = error_lines(err)
        assert line.startswith(f"recvae recommend: error: {uri} was trained on other items") and "Traceback" not in err


def register_untrained_vae(snapshot_dir: str, name: str = "recvae") -> str:
    """Log and register a small untrained Mult-VAE over a snapshot's items (fast); returns its version."""
    from recvae import tracking
    from recvae.config import ModelConfig
    from recvae.data.snapshot import Snapshot
    from recvae.models.neural import MultVAERecommender, build_module

    snap = Snapshot.load(snapshot_dir)
    config = ModelConfig(hidden_dims=(16,), latent_dim=8)
    rec = MultVAERecommender(model_config=config, module=build_module(snap.n_items, config))
    rec.items = snap.items
    with tracking.start_run("recvae", run_name="untrained"):
        info = tracking.log_recommender(rec, registered_model_name=name, extra_meta={"snapshot_id": snap.snapshot_id})
    return str(info.registered_model_version)


def test_promote_refuses_bad_versions_and_aliases_in_one_line(home, tmp_path, capsys):
    import mlflow

    snap = str(tmp_path / "snap")
    assert main(["--log-level", "WARNING", "prepare", "--out", snap]) == 0
    assert register_untrained_vae(snap) == "1"
    assert main(["promote", "--version", "1"]) == 0
    capsys.readouterr()
    cases = [
        (["--version", "999"], "models:/recvae/999: model 'recvae' has no version 999; versions: 1"),
        (["--version", "abc"], "version must be a registered version number (1, 2, ...); got 'abc'"),
        (["--version", "1", "--alias", "x; drop table"],
         "invalid alias 'x; drop table': use 1 to 255 letters, digits, underscores (_) and dashes (-)"),
        (["--version", "1", "--alias", "latest"], "alias 'latest' is reserved"),
        (["--name", "nope", "--version", "1"], "models:/nope/1: no registered model 'nope'"),
    ]
    for args, message in cases:
        assert main(["promote", *args]) == 2, args
        err = capsys.readouterr().err
        [line] = error_lines(err)
        assert line.startswith("recvae promote: error: ") and message in line and "Traceback" not in err
    aliases = mlflow.MlflowClient().get_registered_model("recvae").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "1"}  # nothing moved


def test_corrupt_model_file_is_one_line_naming_the_model_and_the_file(home, tmp_path, capsys):
    from recvae.data.snapshot import Snapshot
    from recvae.tracking import load_recommender_from_uri

    snap = str(tmp_path / "snap")
    assert main(["--log-level", "WARNING", "prepare", "--out", snap]) == 0
    register_untrained_vae(snap)
    folder = tmp_path / "model"
    rec, _ = load_recommender_from_uri("models:/recvae/1")
    rec.save(folder, snapshot_id=Snapshot.load(snap).snapshot_id)
    weights = [folder / "model.pt", *(home / "mlartifacts").rglob("model.pt")]
    assert len(weights) == 2
    for f in weights:
        f.write_bytes(f.read_bytes()[:-10] + b"corrupted!")
    for uri, where in (("models:/recvae/1", "artifacts/recommender/model.pt"), (str(folder), "model.pt")):
        for command in (["evaluate", "--snapshot", snap], ["recommend", "--snapshot", snap, "--user-ids", "1"]):
            assert main([command[0], "--model", uri, *command[1:]]) == 2
            err = capsys.readouterr().err
            [line] = error_lines(err)
            assert line.startswith(f"recvae {command[0]}: error: {uri}: {where}: sha256 does not match"), line
            assert "Traceback" not in err and "recvae-download-" not in line


def test_pipeline_checks_the_database_before_training(home, capsys):
    """An unreachable database fails the pipeline in seconds: nothing trained, registered or promoted."""
    import mlflow

    url = "postgresql+psycopg://u:secretpw@127.0.0.1:1/db"
    assert main(["pipeline", *FAST, "--baselines", "popularity", "--db", url]) == 2
    err = capsys.readouterr().err
    [line] = error_lines(err)
    assert "postgresql+psycopg://u:***@127.0.0.1:1/db" in line and "secretpw" not in err
    assert mlflow.MlflowClient().search_registered_models() == []
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_recommend_bad_histories_and_unknown_users_are_one_line(home, tmp_path, capsys):
    import mlflow

    snap = str(tmp_path / "snap")
    assert main(["--log-level", "WARNING", "prepare", "--out", snap]) == 0
    assert main(["--log-level", "WARNING", "baseline", "popularity", "--snapshot", snap]) == 0
    uri = f"runs:/{mlflow.last_active_run().info.run_id}/model"
    bad = tmp_path / "bad.csv"
    bad.write_text("u,i\n1,2\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("user,item\nnew-a,1\n,2\n")
    cases = [
        (["--users", str(bad)], f"{bad}, line 1, column 'user': missing column(s) 'user', 'item' (found: u, i)"),
        (["--users", str(empty)], f"{empty}, line 3, column 'user': missing value"),
        (["--snapshot", snap, "--user-ids", "no-such-user"], "none of the 1 requested user(s) has a history to score"),
    ]
    capsys.readouterr()
    for args, message in cases:
        assert main(["recommend", "--model", uri, *args]) == 2, args
        err = capsys.readouterr().err
        [line] = error_lines(err)
        assert message in line and "Traceback" not in err, line


# ------------------------------------------------------------------------------ failures and resume of `train`


def mlflow_state(experiment: str = "recvae") -> tuple[list, list, str | None]:
    """(runs of the experiment, registered versions of 'recvae', the version 'challenger' points to)."""
    import mlflow

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    try:
        versions = [str(v.version) for v in client.search_model_versions("name = 'recvae'")]
        challenger = str(client.get_model_version_by_alias("recvae", "challenger").version)
    except mlflow.exceptions.MlflowException:
        versions, challenger = [], None
    return runs, sorted(versions), challenger


def prepare(tmp_path, capsys) -> str:
    """A snapshot of the synthetic default, made in the test itself (a command run in a fixture would leave its log
    handler on the set-up phase's captured stream)."""
    snap = str(tmp_path / "snap")
    assert main(["prepare", "--out", snap]) == 0
    capsys.readouterr()
    return snap


SMALL = [*FAST, "--set", "model.hidden_dims=32", "--set", "model.latent_dim=16"]


def test_train_refuses_non_finite_and_oversized_settings_before_any_run(home, tmp_path, capsys):
    snap_dir = prepare(tmp_path, capsys)
    for setting, message in [("train.lr=inf", "train.lr must be a finite number"),
                             ("train.lr=nan", "train.lr must be a finite number"),
                             ("model.dropout=1.5", "model.dropout must be in [0, 1)"),
                             ("model.latent_dim=100000000", "model.latent_dim=100000000")]:
        assert main(["train", "--snapshot", snap_dir, *FAST, "--set", setting]) == 2, setting
        err = capsys.readouterr().err
        assert len(error_lines(err)) == 1 and message in error_lines(err)[0], err
    assert "GiB" in err  # the memory estimate is named
    assert mlflow_state() == ([], [], None)


def test_a_diverging_train_exits_2_fails_its_run_and_registers_nothing(home, tmp_path, capsys):
    """lr=100 turns the loss NaN in epoch 1: one error line, exit 2, the run FAILED, no version, the alias unmoved."""
    snap_dir = prepare(tmp_path, capsys)
    assert main(["train", "--snapshot", snap_dir, *SMALL]) == 0
    capsys.readouterr()
    runs, versions, challenger = mlflow_state()
    assert (len(runs), versions, challenger) == (1, ["1"], "1")
    assert main(["train", "--snapshot", snap_dir, *SMALL, "--set", "train.lr=100"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert re.search(r"loss is (nan|inf) at epoch 1, batch \d+ of \d+", lines[0]) and "train.lr" in lines[0]
    runs, versions, challenger = mlflow_state()
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    assert (versions, challenger) == (["1"], "1")


def test_a_diverging_pipeline_promotes_nothing(home, capsys):
    import mlflow

    assert main(["pipeline", *SMALL, "--set", "train.lr=100", "--baselines", "popularity"]) == 2
    lines = error_lines(capsys.readouterr().err, "pipeline")
    assert len(lines) == 1 and "loss is" in lines[0]
    client = mlflow.MlflowClient()
    assert client.search_registered_models() == []
    runs = client.search_runs([client.get_experiment_by_name("recvae").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def kill_at_epoch(monkeypatch, epoch: int) -> None:
    """Die like `kill -9` once `epoch` is checkpointed, before its metrics reach MLflow: no run end, status RUNNING."""
    import mlflow

    from recvae import tracking

    real = tracking.EpochLogger.__call__

    def call(self, e, metrics):
        if e == epoch:
            run_id = self.run_id
            mlflow.end_run()  # what the with-block does on the way out (FAILED) ...
            mlflow.MlflowClient().update_run(run_id, status="RUNNING")  # ... and what kill -9 leaves instead
            raise SystemExit(137)
        return real(self, e, metrics)

    monkeypatch.setattr(tracking.EpochLogger, "__call__", call)


def test_resume_after_a_kill_continues_the_same_run(home, tmp_path, monkeypatch, capsys):
    """`train --resume` reopens the killed run: one run id, every epoch's metrics once, FINISHED, its model registered.
    A resume refused on a corrupt checkpoint opens no second run either."""
    snap_dir = prepare(tmp_path, capsys)
    import mlflow

    from recvae.paths import home as recvae_home

    args = ["train", "--snapshot", snap_dir, *SMALL, "--set", "train.epochs=4"]
    with monkeypatch.context() as patched, pytest.raises(SystemExit):
        kill_at_epoch(patched, 2)
        main(args)
    runs, versions, _ = mlflow_state()
    assert [r.info.status for r in runs] == ["RUNNING"] and versions == []
    run_id = runs[0].info.run_id

    (work,) = (recvae_home() / "runs").iterdir()
    last = work / "last.pt"
    good = last.read_bytes()
    data = bytearray(good)
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    last.write_bytes(bytes(data))
    assert main([*args, "--resume"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "last.pt" in lines[0] and "sha256" in lines[0]
    runs, versions, _ = mlflow_state()
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FAILED")] and versions == []

    last.write_bytes(good)
    assert main([*args, "--resume"]) == 0
    runs, versions, challenger = mlflow_state()
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]
    client = mlflow.MlflowClient()
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == [1, 2, 3, 4]  # 2 backfilled, once
    assert client.get_model_version("recvae", challenger).run_id == run_id and versions == ["1"]
    assert runs[0].data.params["train.epochs"] == "4"


def test_a_fresh_train_over_a_killed_run_marks_it_killed(home, tmp_path, monkeypatch, capsys):
    """Without --resume the checkpoints start over in a new run; the killed one is not left RUNNING."""
    snap_dir = prepare(tmp_path, capsys)
    args = ["train", "--snapshot", snap_dir, *SMALL]
    with monkeypatch.context() as patched, pytest.raises(SystemExit):
        kill_at_epoch(patched, 1)
        main(args)
    assert main(args) == 0
    runs, versions, _ = mlflow_state()
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"] and versions == ["1"]

"""CLI: `recvae prepare` end to end, one-line errors with exit code 2, logging and progress helpers."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

from recvae import cli
from recvae.data import synthetic
from recvae.data.validate import DataValidationError
from recvae.log import mask_secrets, progress, progress_disabled, setup_logging


def manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_prepare_synthetic_prints_a_summary(tmp_path, capsys):
    assert cli.main(["--log-level", "WARNING", "prepare", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    m = manifest(tmp_path / "s")
    for part, counts in m["counts"].items():
        assert part in out and f"{counts['interactions']:,}" in out
    assert m["snapshot_id"] in out and "density" in out


def test_prepare_csv_with_columns_overrides_and_seed(tmp_path, capsys):
    df = synthetic.generate("small", n_users=300, seed=1).rename(columns={"user": "u", "item": "i", "rating": "r"})
    df.to_csv(tmp_path / "in.csv", index=False)
    argv = ["prepare", "--input", str(tmp_path / "in.csv"), "--user-col", "u", "--item-col", "i", "--rating-col", "r",
            "--out", str(tmp_path / "s"), "--set", "data.threshold=4.0", "--set", "split.n_heldout_users=20",
            "--seed", "7", "--log-level", "WARNING"]
    assert cli.main(argv) == 0
    m = manifest(tmp_path / "s")
    assert m["parameters"]["data"]["threshold"] == 4.0
    assert m["parameters"]["split"]["seed"] == 7 and m["split"]["n_heldout_users"] == 20
    assert m["source"]["user_col"] == "u" and m["source"]["format"] == "csv"


def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path, capsys):
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n1\tx\t3\t4\n")
    code = cli.main(["prepare", "--input", str(tmp_path / "u.data"), "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert lines == [f"recvae prepare: error: {tmp_path / 'u.data'}, line 2, column 'item id': non-numeric id 'x'"]
    assert "Traceback" not in err


def test_debug_log_level_shows_the_exception(tmp_path):
    (tmp_path / "u.data").write_text("1\tx\t3\t4\n")
    with pytest.raises(DataValidationError):
        cli.main(["--log-level", "DEBUG", "prepare", "--input", str(tmp_path / "u.data"), "--out", str(tmp_path / "s")])


@pytest.mark.parametrize(
    "args, message",
    [
        (["prepare", "--dataset", "nope", "--out", "X"], "unknown dataset 'nope'"),
        (["prepare", "--out", "X", "--set", "data.treshold=1"],
         "no field 'treshold' in section data; did you mean data.threshold?"),
        (["prepare", "--out", "X", "--set", "split.test_prop=2"], "test_prop must be in (0, 1)"),
        (["prepare", "--input", "/no/such/file.csv", "--out", "X"], "/no/such/file.csv: file not found"),
        (["prepare", "--input", "sqlite:///x.db", "--format", "sql", "--out", "X"], "needs --sql-query"),
    ],
)
def test_user_errors_exit_2(tmp_path, capsys, args, message):
    args = [a.replace("X", str(tmp_path / "out")) for a in args]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err


def test_missing_dataset_error_says_where_and_how(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RECVAE_DATA_HOME", str(tmp_path))
    assert cli.main(["prepare", "--dataset", "ml-20m", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "ml-20m" / "ratings.csv") in err and "ml-20m.zip" in err


def test_lenient_with_quarantine_file_and_previous(tmp_path, capsys):
    df = synthetic.generate("small", n_users=300, seed=2)
    df.to_csv(tmp_path / "in.csv", index=False)
    argv = ["prepare", "--input", str(tmp_path / "in.csv"), "--out", str(tmp_path / "a"), "--log-level", "ERROR"]
    assert cli.main(argv) == 0
    with open(tmp_path / "in.csv", "a") as f:
        f.write("5,bad,4.0,1\n")
    argv = ["prepare", "--input", str(tmp_path / "in.csv"), "--out", str(tmp_path / "b"), "--lenient",
            "--id-type", "int", "--quarantine", str(tmp_path / "q.parquet"), "--previous", str(tmp_path / "a"),
            "--log-level", "ERROR"]
    assert cli.main(argv) == 0
    assert "dropped 1 bad row(s)" in capsys.readouterr().out
    m = manifest(tmp_path / "b")
    assert m["validation"]["quarantine"] == str(tmp_path / "q.parquet")
    assert m["previous_snapshot"] == manifest(tmp_path / "a")["snapshot_id"]


def test_prepare_from_sql(tmp_path, capsys):
    con = sqlite3.connect(tmp_path / "r.db")
    df = synthetic.generate("small", n_users=200, seed=3)
    df.to_sql("ratings", con, index=False)
    con.close()
    argv = ["prepare", "--input", f"sqlite:///{tmp_path / 'r.db'}", "--format", "sql", "--sql-query",
            "SELECT user, item, rating, timestamp FROM ratings", "--out", str(tmp_path / "s"), "--log-level", "ERROR"]
    assert cli.main(argv) == 0
    m = manifest(tmp_path / "s")
    assert m["source_fingerprint"]["kind"] == "sql" and m["source_fingerprint"]["rows"] == len(df)


SECRET = "s3cretPW"


def test_unreachable_sql_source_never_shows_the_password(tmp_path, capsys, caplog):
    url = f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db"
    argv = ["prepare", "--format", "sql", "--input", url, "--sql-query", "ratings", "--out", str(tmp_path / "s")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "recvae prepare: error: postgresql+psycopg://u:***@127.0.0.1:1/db" in err
    assert SECRET not in err and SECRET not in caplog.text


@pytest.mark.postgres
def test_sql_source_password_is_masked_in_logs_manifest_and_mlflow(tmp_path, capsys, caplog, postgres_db_url):
    """prepare from PostgreSQL then a run on the snapshot: the URL's password is nowhere the user or MLflow sees."""
    import mlflow
    from sqlalchemy import create_engine, make_url

    engine = create_engine(postgres_db_url)
    synthetic.generate("small", n_users=200, seed=3).to_sql("ratings", engine, index=False)
    engine.dispose()
    url = make_url(postgres_db_url).set(password=SECRET).render_as_string(hide_password=False)  # trust auth
    snap = tmp_path / "s"
    assert cli.main(["prepare", "--format", "sql", "--input", url, "--sql-query", "ratings", "--out", str(snap)]) == 0
    assert cli.main(["baseline", "popularity", "--snapshot", str(snap)]) == 0
    assert SECRET not in capsys.readouterr().err and SECRET not in caplog.text
    assert manifest(snap)["source"]["path"] == make_url(url).render_as_string(hide_password=True)
    assert not [f for f in snap.rglob("*") if f.is_file() and SECRET.encode() in f.read_bytes()]
    run = mlflow.get_run(mlflow.last_active_run().info.run_id)
    logged = {**run.data.params, **run.data.tags}
    assert logged["snapshot.source"] == f"sql {make_url(url).render_as_string(hide_password=True)}"
    assert not [k for k, v in logged.items() if SECRET in v]
    artifact = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/snapshot/manifest.json")
    assert "***" in artifact and SECRET not in artifact


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "prepare" in capsys.readouterr().err


def test_commands_are_registered_in_one_list():
    names = {add.__name__.removeprefix("add_") for add, _ in cli.COMMANDS}
    assert "prepare" in names
    parser = cli.build_parser()
    args = parser.parse_args(["prepare", "--out", "x", "--log-level", "ERROR"])
    assert args.func is cli.cmd_prepare and args.log_level == logging.ERROR


def test_bad_log_level_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--log-level", "LOUD", "prepare", "--out", "x"])
    assert info.value.code == 2


# --- recvae.log ------------------------------------------------------------------------------------


def test_setup_logging_is_idempotent():
    setup_logging("INFO")
    setup_logging("debug")
    root = logging.getLogger()
    ours = [h for h in root.handlers if h.get_name() == "recvae-stderr"]
    assert len(ours) == 1 and root.level == logging.DEBUG
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("LOUD")


def test_log_records_mask_url_passwords_for_every_handler(capsys):
    """Any logger, any handler (e.g. Airflow's task log, added after set-up): URL passwords are masked, in the
    message, its args and the traceback."""
    setup_logging("INFO")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(self.format(record))

    late = Keep()
    logging.getLogger().addHandler(late)
    try:
        logging.getLogger("recvae.some.module").info("reading %s", "postgresql+psycopg://u:pw123@h/db")
        try:
            raise RuntimeError("cannot connect to postgresql://u:pw123@h/db?sslmode=require")
        except RuntimeError:
            logging.getLogger("other.library").exception("failed with dsn host=h password=pw123")
    finally:
        logging.getLogger().removeHandler(late)
    err = capsys.readouterr().err
    assert seen[0] == "reading postgresql+psycopg://u:***@h/db" and "u:***@h/db" in err
    assert "password=***" in seen[1] and "postgresql://u:***@h/db" in seen[1] and "Traceback" in seen[1]
    assert "pw123" not in err and not [s for s in seen if "pw123" in s]


def test_mask_secrets_leaves_other_text_alone():
    assert mask_secrets("ndcg@100 of runs:/abc/model at http://127.0.0.1:5000/#/x") == (
        "ndcg@100 of runs:/abc/model at http://127.0.0.1:5000/#/x")
    assert mask_secrets("sqlite:////tmp/x.db and postgresql://u@h/db") == "sqlite:////tmp/x.db and postgresql://u@h/db"


def test_progress_respects_tqdm_disable(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress_disabled()
    assert list(progress(range(3))) == [0, 1, 2]
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert progress_disabled()  # pytest's stderr is not a terminal


def test_an_internal_error_is_labelled_as_a_bug_with_its_own_exit_code(tmp_path, capsys, monkeypatch):
    """Not bad input: the traceback stays (for the report) and a last line says it is a bug, exit 70 (not 2)."""
    from recvae import tracking

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tracking, "compare_runs", broken)
    code = cli.main(["compare"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_INTERNAL == 70
    assert "RuntimeError: boom" in err
    assert err.strip().splitlines()[-1].startswith("recvae compare: internal error (a bug in recvae")


# --- recommend / db: one-line errors -------------------------------------------------------------------


def _one_error_line(capsys, command: str) -> str:
    """The single stderr line of a failed command (no traceback, nothing else)."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"recvae {command}: error: ")
    return lines[0]


@pytest.mark.parametrize("keep", ["0", "-3"])
def test_recommend_keep_below_one_is_a_user_error(capsys, keep):
    assert cli.main(["--log-level", "ERROR", "recommend", "--keep", keep, "--db", "sqlite:///unused.db"]) == 2
    assert "--keep must be >= 1" in _one_error_line(capsys, "recommend")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["query", "user_top", "--param", "user_id=1", "--param", "n=abc"],
         "query user_top: parameter n must be an integer, got 'abc'"),
        (["query", "batch_overlap", "--param", "batch_a=1", "--param", "batch_b=x2"],
         "query batch_overlap: parameter batch_b must be an integer, got 'x2'"),
        (["query", "no_such_query"],
         "unknown query 'no_such_query'; known: anomalous_users, anomaly_dominated_items, batch_overlap, "),
        (["query", "../queries/user_top"], "query name '../queries/user_top' is not a plain SQL identifier"),
        (["query"], "db query needs a query name; known: anomalous_users"),
        (["query", "user_top", "--param", "user_id=1", "--param", "colour=red"],
         "query user_top: unknown parameter(s) colour; it takes :user_id, :n"),
        (["query", "batch_overlap"], "query batch_overlap: missing parameter(s) batch_a, batch_b; it takes"),
        (["query", "coverage", "--param", "oops"], "expected a parameter as NAME=VALUE, got 'oops'"),
        (["gc", "--stale-after", "-1"], "--stale-after must be a finite number of seconds >= 0"),
    ],
)
def test_db_query_errors_name_the_query_and_parameter(tmp_path, capsys, argv, message):
    db = f"sqlite:///{tmp_path / 'recs.db'}"
    assert cli.main(["--log-level", "ERROR", "db", *argv, "--db", db]) == 2
    assert message in _one_error_line(capsys, "db")


@pytest.mark.parametrize(
    "url, shown",
    [("u:secret@127.0.0.1", "u:***@127.0.0.1"),
     ("postgresql://u:secret@hidden@127.0.0.1/db", "postgresql://u:***@127.0.0.1/db")],  # an unencoded '@'
)
def test_db_with_a_malformed_url_never_echoes_the_password(capsys, url, shown):
    assert cli.main(["--log-level", "ERROR", "db", "status", "--db", url]) == 2
    line = _one_error_line(capsys, "db")
    assert "secret" not in line and "hidden" not in line and shown in line


def test_db_with_an_unreachable_database_fails_fast_with_the_masked_url(capsys):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    assert cli.main(["--log-level", "ERROR", "db", "status", "--db",
                     f"postgresql+psycopg://u:s3cr3t@127.0.0.1:{port}/recs"]) == 2
    line = _one_error_line(capsys, "db")
    assert time.monotonic() - start < 10
    assert f"cannot connect to postgresql+psycopg://u:***@127.0.0.1:{port}/recs" in line and "s3cr3t" not in line


def test_db_gc_fails_abandoned_batches_and_says_so(tmp_path, capsys):
    import numpy as np

    from recvae.serving.store import RecChunk, RecommendationStore

    db = f"sqlite:///{tmp_path / 'recs.db'}"
    with RecommendationStore(db) as store:
        batch = store.begin_batch("killed", model_name="m", top_n=2)  # its writer died before publishing
        chunk = RecChunk(np.array(["u1", "u2"], dtype=object), np.array([["a", "b"], ["b", "c"]], dtype=object),
                         np.array([[2.0, 1.0], [2.0, 1.0]]), np.array([2, 2]))
        store.write_shard(batch, [chunk], expected_rows=4)
    assert cli.main(["--log-level", "ERROR", "db", "gc", "--db", db]) == 0  # default: 6 hours idle
    assert capsys.readouterr().out.startswith("nothing to clean")
    assert cli.main(["--log-level", "ERROR", "db", "gc", "--db", db, "--stale-after", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"batch {batch.batch_id}: abandoned in staging, marked failed",
                   f"batch {batch.batch_id}: deleted 4 row(s) and 0 title(s)"]
    with RecommendationStore(db) as store:
        assert store.get_batch("killed").status == "failed" and store.count_rows(batch.batch_id) == 0

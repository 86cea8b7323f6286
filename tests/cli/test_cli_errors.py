"""Every subcommand with malformed arguments or input: exit code 2, exactly one `error:` line, no traceback.

One table for the whole CLI, so that a new command or a new failure mode is added here beside the others. The
cases that need a model or a snapshot share one small module-scoped home (a synthetic snapshot, a popularity run
logged to a fresh MLflow store, and broken copies of both).
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from recvae import cli

pytestmark = pytest.mark.slow

SECRET = "secretpw"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A snapshot, a logged popularity model and broken copies of both, in a fresh home and MLflow store."""
    import logging

    import mlflow

    logger = logging.getLogger()
    handlers, level = list(logger.handlers), logger.level  # the commands below add a handler: not beyond this module
    root = tmp_path_factory.mktemp("cli-errors")
    mp = pytest.MonkeyPatch()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mp.setenv("RECVAE_HOME", str(root / "home"))
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.delenv("RECVAE_DB_URL", raising=False)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    snap = root / "snap"
    assert cli.main(["--log-level", "ERROR", "prepare", "--out", str(snap)]) == 0
    assert cli.main(["--log-level", "ERROR", "baseline", "popularity", "--snapshot", str(snap)]) == 0
    run_id = mlflow.last_active_run().info.run_id
    model = f"runs:/{run_id}/model"

    # a model folder whose state file lost bytes, and a snapshot with a corrupt matrix / an empty manifest
    from recvae import tracking

    tracking.load_recommender_from_uri(model, dst_dir=root / "model-copy")
    folder = root / "model-copy"
    state = next(p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in {".npz", ".pt", ".npy"})
    data = bytearray(state.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    state.write_bytes(bytes(data))
    bad_npz = root / "bad-npz"
    shutil.copytree(snap, bad_npz)
    target = next(bad_npz.glob("*.npz"))
    target.write_bytes(target.read_bytes()[:100])
    no_files = root / "no-files"
    shutil.copytree(snap, no_files)
    import json

    manifest = json.loads((no_files / "manifest.json").read_text())
    manifest["files"] = {}
    (no_files / "manifest.json").write_text(json.dumps(manifest))

    inputs = root / "inputs"
    inputs.mkdir()
    (inputs / "huge.csv").write_text("user,item,rating\n1,10,5\n9223372036854775808,11,5\n")
    (inputs / "header.csv").write_text("user,item,rating,timestamp\n")
    (inputs / "existing.txt").write_text("keep me\n")
    (inputs / "blank.csv").write_text("user,item\nu1,1\nu2,\n")
    (inputs / "space.yaml").write_text("model.latent_dim: [16, 32]\ntrain.lr: {low: 0.1, high: 0.01}\n")
    (inputs / "space-typo.yaml").write_text("model.latent_dims: [16]\n")
    (inputs / "space-bad.yaml").write_text("model.latent_dim: [16\n  train.lr: 1\n")
    (inputs / "space-invalid.json").write_text('{"model.dropout": [0.5, 1.5]}')
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield {"root": root, "snap": snap, "model": model, "broken_model": folder, "bad_npz": bad_npz,
           "no_files": no_files, "inputs": inputs, "dead_pg": f"postgresql+psycopg://u:{SECRET}@127.0.0.1:{port}/db"}
    mlflow.set_tracking_uri(previous)
    mp.undo()
    logger.handlers[:] = handlers
    logger.setLevel(level)


# (id, argv with {placeholders} filled from `world`, a part of the expected error line)
CASES = [
    ("prepare-missing-input", ["prepare", "--input", "{inputs}/nope.csv", "--out", "{root}/o1"], "nope.csv"),
    ("prepare-unknown-dataset", ["prepare", "--dataset", "no-such-data", "--out", "{root}/o2"], "no-such-data"),
    ("prepare-unknown-field", ["prepare", "--set", "train.epoch=1", "--out", "{root}/o3"], "train.epoch"),
    ("prepare-huge-id-int", ["prepare", "--input", "{inputs}/huge.csv", "--id-type", "int", "--out", "{root}/o4"],
     "line 3"),
    ("prepare-header-only", ["prepare", "--input", "{inputs}/header.csv", "--out", "{root}/o5"], "no data rows"),
    ("prepare-quarantine-exists", ["prepare", "--input", "{inputs}/huge.csv", "--lenient", "--quarantine",
                                   "{inputs}/existing.txt", "--out", "{root}/o6"], "existing.txt"),
    ("prepare-quarantine-folder", ["prepare", "--input", "{inputs}/huge.csv", "--lenient", "--quarantine",
                                   "{inputs}", "--out", "{root}/o7"], "quarantine"),
    ("prepare-sql-secret", ["prepare", "--format", "sql", "--input", "{dead_pg}", "--sql-query", "select 1",
                            "--out", "{root}/o8"], "127.0.0.1"),
    ("train-no-snapshot", ["train", "--snapshot", "{root}/nope"], "nope"),
    ("tune-no-snapshot", ["tune", "--snapshot", "{root}/nope"], "nope"),
    ("tune-zero-trials", ["tune", "--snapshot", "{snap}", "--trials", "0"], "--trials"),
    ("tune-bad-timeout", ["tune", "--snapshot", "{snap}", "--timeout", "nan"], "--timeout"),
    ("tune-space-missing", ["tune", "--snapshot", "{snap}", "--space", "{inputs}/nope.yaml"], "nope.yaml"),
    ("tune-space-range", ["tune", "--snapshot", "{snap}", "--space", "{inputs}/space.yaml"], "train.lr"),
    ("tune-space-typo", ["tune", "--snapshot", "{snap}", "--space", "{inputs}/space-typo.yaml"],
     "model.latent_dims"),
    ("tune-space-yaml", ["tune", "--snapshot", "{snap}", "--space", "{inputs}/space-bad.yaml"], "line"),
    ("tune-space-invalid-value", ["tune", "--snapshot", "{snap}", "--space", "{inputs}/space-invalid.json"],
     "model.dropout=1.5"),
    ("tune-bad-set", ["tune", "--snapshot", "{snap}", "--set", "train.lr=-1"], "train.lr"),
    ("tune-storage-secret", ["tune", "--snapshot", "{snap}", "--storage", "{dead_pg}"], "127.0.0.1"),
    ("tune-storage-scheme", ["tune", "--snapshot", "{snap}", "--storage", "nosuchdb://x"], "nosuchdb"),
    ("train-corrupt-npz", ["train", "--snapshot", "{bad_npz}"], ".npz"),
    ("train-manifest-no-files", ["train", "--snapshot", "{no_files}"], "manifest"),
    ("baseline-bad-param", ["baseline", "ease", "--snapshot", "{snap}", "--param", "lam=abc"], "lam"),
    ("ensemble-one-member", ["ensemble", "--model", "{model}", "--snapshot", "{snap}"], "2"),
    ("evaluate-unknown-model", ["evaluate", "--model", "models:/nope/1", "--snapshot", "{snap}"], "models:/nope/1"),
    ("evaluate-corrupt-model", ["evaluate", "--model", "{broken_model}", "--snapshot", "{snap}"], "model-copy"),
    ("evaluate-log-thresholds", ["evaluate", "--model", "{model}", "--snapshot", "{snap}", "--log",
                                 "--history-thresholds", "5"], "--history-thresholds"),
    ("evaluate-log-thresholds-order", ["evaluate", "--model", "{model}", "--snapshot", "{snap}", "--log",
                                       "--history-thresholds", "9,2"], "increasing"),
    ("compare-no-experiment", ["compare", "--experiment", "never-made"], "never-made"),
    ("promote-missing-version", ["promote", "--version", "999"], "999"),
    ("promote-bad-version", ["promote", "--version", "abc"], "abc"),
    ("promote-bad-alias", ["promote", "--version", "1", "--alias", "x; drop table"], "alias"),
    ("promote-min-confidence", ["promote", "--version", "1", "--min-confidence", "1.5"], "min_confidence"),
    ("recommend-keep-0", ["recommend", "--model", "{model}", "--snapshot", "{snap}", "--keep", "0"], "--keep"),
    ("recommend-blank-item", ["recommend", "--model", "{model}", "--users", "{inputs}/blank.csv"], "line 3"),
    ("recommend-corrupt-model", ["recommend", "--model", "{broken_model}", "--snapshot", "{snap}"], "model-copy"),
    ("db-param-type", ["db", "query", "user_top", "--param", "user_id=1", "--param", "n=abc",
                       "--db", "sqlite:///{root}/r.db"], "n must be an integer"),
    ("db-malformed-url", ["db", "status", "--db", f"u:{SECRET}@127.0.0.1"], "u:***@127.0.0.1"),
    ("db-unreachable", ["db", "status", "--db", "{dead_pg}"], "u:***@127.0.0.1"),
    ("download-unknown", ["download", "no-such-data"], "no-such-data"),
    ("download-dest-is-a-file", ["download", "ml-100k", "--dest", "{inputs}/existing.txt"], "existing.txt"),
    # found by a new user's trial: each of these was a traceback (exit 70) or a silent surprise
    ("prepare-infinite-int", ["prepare", "--set", "train.epochs=1e999", "--out", "{root}/o9"], "train.epochs"),
    ("train-huge-seed", ["train", "--snapshot", "{snap}", "--set", "train.seed=99999999999999999999999"],
     "train.seed"),
    ("train-nproc-0", ["train", "--snapshot", "{snap}", "--set", "train.nproc=0"], "train.nproc must be >= 1"),
    ("train-dist-timeout-0", ["train", "--snapshot", "{snap}", "--set", "train.nproc=2", "--set",
                              "train.dist_timeout_s=0"], "train.dist_timeout_s must be > 0"),
    ("evaluate-empty-uri", ["evaluate", "--model", "", "--snapshot", "{snap}"], "empty model URI"),
    ("evaluate-http-uri", ["evaluate", "--model", f"http://u:{SECRET}@127.0.0.1:1/x", "--snapshot", "{snap}"],
     "unsupported model URI scheme"),
    ("evaluate-s3-uri", ["evaluate", "--model", "s3://bucket/x", "--snapshot", "{snap}"], "'s3'"),
    ("recommend-chunk-size", ["recommend", "--model", "{model}", "--snapshot", "{snap}", "--user-ids", "1",
                              "--chunk-size", "-1"], "--chunk-size"),
    ("recommend-out-missing-folder", ["recommend", "--model", "{model}", "--snapshot", "{snap}", "--user-ids", "1",
                                      "--out", "{root}/no/such/x.csv"], "does not exist"),
    ("recommend-deny-bad-sql", ["recommend", "--model", "{model}", "--snapshot", "{snap}", "--user-ids", "1",
                                "--deny-sql", "SELECT item_id FROM nope", "--db", "sqlite:///{root}/r.db"], "nope"),
    ("recommend-allow-missing-file", ["recommend", "--model", "{model}", "--snapshot", "{snap}", "--allow",
                                      "{inputs}/no-allow.txt"], "no-allow.txt"),
    ("anomalies-baseline-model", ["anomalies", "--model", "{model}", "--snapshot", "{snap}", "--db",
                                  "sqlite:///{root}/r.db"], "no latent user code"),
    ("anomalies-keep-0", ["anomalies", "--model", "{model}", "--keep", "0"], "--keep"),
    ("embeddings-out-folder", ["embeddings", "--model", "{model}", "--snapshot", "{snap}", "--parquet", "{inputs}",
                               "--db", "sqlite:///{root}/r.db"], "no latent user code"),
    ("embeddings-unknown-user", ["embeddings", "--similar-to", "nobody", "--db", "sqlite:///{root}/r.db"], "nobody"),
    ("similar-items-top-n-0", ["similar-items", "--model", "{model}", "--top-n", "0"], "--top-n"),
    ("similar-items-unreachable-db", ["similar-items", "--model", "{model}", "--db", "{dead_pg}"], "no latent"),
    ("db-gc-infinite", ["db", "gc", "--stale-after", "inf", "--db", "sqlite:///{root}/r.db"], "--stale-after"),
    ("compare-limit", ["compare", "--limit", "-1"], "--limit"),
    ("compare-against-unknown-run", ["compare", "--against", "0123456789abcdef0123456789abcdef"],
     "0123456789abcdef0123456789abcdef"),
    ("compare-against-confidence", ["compare", "--against", "{model}", "--confidence", "1.5"], "confidence"),
    ("compare-against-other-snapshot", ["compare", "--against", "{model}", "--snapshot", "snap-other"],
     "not snap-other"),
    ("compare-against-unknown-metric", ["compare", "--against", "{model}", "--metrics", "ndcg@7"], "ndcg@7"),
    ("compare-run-without-against", ["compare", "--run", "abc"], "--against"),
    ("pipeline-bad-format", ["pipeline", "--input", "{inputs}/huge.csv", "--format", "bogus"], "bogus"),
    ("pipeline-top-n-0", ["pipeline", "--top-n", "0"], "top_n"),
    ("pipeline-unknown-baseline", ["pipeline", "--baselines", "foo"], "foo"),
    ("pipeline-nan-margin", ["pipeline", "--margin", "nan"], "margin"),
    ("pipeline-min-confidence", ["pipeline", "--min-confidence", "0"], "min_confidence"),
    ("pipeline-unknown-field", ["pipeline", "--set", "train.epoch=1"], "train.epoch"),
    ("pipeline-unreachable-db", ["pipeline", "--db", "{dead_pg}", "--set", "train.epochs=1"], "u:***@127.0.0.1"),
]


@pytest.mark.parametrize("argv, expected", [pytest.param(a, e, id=i) for i, a, e in CASES])
def test_malformed_input_ends_in_one_error_line(world, capsys, argv, expected):
    filled = [a.format(**{k: v for k, v in world.items()}) for a in argv]
    command = filled[0]
    try:
        code = cli.main(filled)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"recvae {command}: error: "), err
    assert expected in lines[0], lines[0]
    assert SECRET not in out + err


def test_every_subcommand_has_a_case():
    commands = {add.__name__.removeprefix("add_").replace("_", "-") for add, _ in cli.COMMANDS}
    assert commands <= {argv[0] for _, argv, _ in CASES}, commands - {argv[0] for _, argv, _ in CASES}


def test_quarantine_file_that_existed_is_untouched(world, capsys):
    assert (Path(world["inputs"]) / "existing.txt").read_text() == "keep me\n"

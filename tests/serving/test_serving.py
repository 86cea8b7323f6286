"""The logged pyfunc as it is served: self-contained (loads where recvae is not installed, with only its own
requirements) and typed, so `mlflow models serve` answers JSON and CSV requests alike."""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

mlflow = pytest.importorskip("mlflow")

from recvae import pipeline, tracking  # noqa: E402  (after the importorskip: they import mlflow)
from recvae.data.idmap import IdMap  # noqa: E402  (idem)
from recvae.data.snapshot import Snapshot  # noqa: E402  (idem)
from recvae.serving.pyfunc import DEFAULT_TOP_N, recommend_frame  # noqa: E402  (idem)

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*noload.*loader strategy"),
    pytest.mark.filterwarnings("ignore:Operation with range is deprecated"),
]

N_USERS, N_ITEMS = 80, 20
TOP_N = 5
# New users (folded in, never trained on) as the client sends them: string ids, one that looks like a number.
HISTORY = pd.DataFrame({"user": ["007", "007", "007", "ann", "ann", "bob"],
                        "item": [1001, 1002, 1003, 1012, 1013, 1019]})


def tiny_snapshot(path: Path) -> Snapshot:
    """Two taste groups (items 1000-1009 and 1010-1019), string user ids; train, validation and test users."""
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for u in range(N_USERS):
        for i in rng.choice(10, size=5, replace=False):
            rows.append(u)
            cols.append((0 if u < N_USERS // 2 else 10) + int(i))
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(N_USERS, N_ITEMS))
    perm = rng.permutation(N_USERS)
    parts = {"train": perm[:60], "validation": perm[60:70], "test": perm[70:]}

    def split(users: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        m = X[users].tocsr()
        first = sp.csr_matrix(m.shape, dtype=np.float32).tolil()
        for r in range(m.shape[0]):
            for c in m.indices[m.indptr[r] : m.indptr[r] + 2]:
                first[r, c] = 1.0
        first = first.tocsr()
        return first, (m - first).tocsr()

    matrices, rows_of = {"train": X[parts["train"]]}, {"train": parts["train"]}
    for name in ("validation", "test"):
        matrices[f"{name}_tr"], matrices[f"{name}_te"] = split(parts[name])
        rows_of[f"{name}_tr"] = rows_of[f"{name}_te"] = parts[name]
    users = IdMap(np.array([f"u{i}" for i in range(N_USERS)], dtype=object))
    snap = Snapshot(matrices=matrices, rows=rows_of, users=users,
                    items=IdMap(np.arange(1000, 1000 + N_ITEMS, dtype=np.int64)))
    snap.save(path)
    return snap


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Any]:
    """A store holding a Mult-VAE (registered, champion) and EASE and ALS baselines, trained by the pipeline."""
    tmp = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("RECVAE_HOME", str(tmp / "home"))
        previous = mlflow.get_tracking_uri()
        tracking.configure(uri)
        try:
            snap = tiny_snapshot(tmp / "snap")
            small = ["train.epochs=3", "train.batch_size=32", "model.hidden_dims=[16]", "model.latent_dim=8"]
            vae = pipeline.train_step(tmp / "snap", overrides=small, experiment="serving", model_name="recvae")
            tracking.promote("recvae", vae["model_version"])
            ease = pipeline.baseline_step("ease", tmp / "snap", params={"lam": 10.0}, experiment="serving")
            als = pipeline.baseline_step("als", tmp / "snap", params={"factors": 4, "iterations": 3},
                                         experiment="serving")
            uris = {"vae": "models:/recvae@champion", "ease": tracking.logged_model_uri(ease["run_id"]),
                    "als": tracking.logged_model_uri(als["run_id"])}
            expected = {}
            for name, model_uri in uris.items():
                rec, _ = tracking.load_recommender_from_uri(model_uri)
                expected[name] = recommend_frame(rec, HISTORY, TOP_N)
            yield {"tracking_uri": uri, "uris": uris, "expected": expected, "snapshot": snap, "tmp": tmp}
        finally:
            mlflow.set_tracking_uri(previous)


# ----------------------------------------------------------------------------------- self-contained

# Runs with `python -I -S` (no PYTHONPATH, no current directory, no .pth files, so no editable install of recvae)
# on a folder that stands in for a fresh environment made from the models' requirements.txt: links to the files of
# the required distributions and of what they require, nothing else. Loads the models in order, scores HISTORY with
# each, and reports the modules imported.
_ISOLATED = r"""
import importlib.util, json, sys
sys.path.append(sys.argv[1])
assert importlib.util.find_spec("recvae") is None, "recvae is importable: the check would prove nothing"
import mlflow, pandas as pd
history = pd.DataFrame(json.loads(sys.argv[3]))
report = {}
for name, uri in json.loads(sys.argv[2]).items():
    model = mlflow.pyfunc.load_model(uri)
    model.predict(history, params={"top_n": TOP_N}).to_json(f"{name}.json", orient="records")
    report[name] = sorted(m for m in sys.modules if "." not in m)
    report[name + ":recvae"] = {m: mod.__file__ for m, mod in sys.modules.items() if m.split(".")[0] == "recvae"}
print(json.dumps(report))
""".replace("TOP_N", str(TOP_N))


def _requirements(uri: str) -> list[str]:
    return [r for r in Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().splitlines() if r.strip()]


def _name(requirement: str) -> str:
    return re.split(r"[=<>!~\[; (]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _closure(names: set[str]) -> set[str]:
    """`names` and every distribution they require, recursively (extras and non-matching markers left out)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in reqs:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_name(req.name))
    return seen


def _fresh_site(dists: set[str], folder: Path) -> Path:
    """A site-packages folder holding (as links) only the files of `dists`."""
    folder.mkdir()
    for name in sorted(dists):
        dist = importlib.metadata.distribution(name)
        assert dist.files is not None, f"{name}: no RECORD, cannot tell its files"
        for top in {f.parts[0] for f in dist.files if f.parts and f.parts[0] != ".."}:
            src, dst = Path(dist.locate_file(top)), folder / top
            if src.exists() and not dst.exists() and not top.endswith(".pth"):
                dst.symlink_to(src)
    return folder


@pytest.fixture(scope="module")
def isolated(models, tmp_path_factory) -> dict[str, Any]:
    """Report of loading and scoring the models where recvae is not installed and only their requirements are
    (one fresh environment per distinct requirements.txt)."""
    cwd = tmp_path_factory.mktemp("isolated")
    reqs = {name: _requirements(uri) for name, uri in models["uris"].items()}
    groups: dict[tuple[str, ...], dict[str, str]] = {}
    for name, uri in models["uris"].items():
        groups.setdefault(tuple(sorted(reqs[name])), {})[name] = uri
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "RECVAE_"))}
    env["MLFLOW_TRACKING_URI"] = models["tracking_uri"]
    report: dict[str, Any] = {}
    for i, (group_reqs, uris) in enumerate(groups.items()):
        fresh = _fresh_site(_closure({_name(r) for r in group_reqs}), cwd / f"site-packages-{i}")
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _ISOLATED, str(fresh), json.dumps(uris),
             HISTORY.to_json(orient="columns")],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, f"{', '.join(uris)}:\n{proc.stderr[-4000:]}"
        report.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"report": report, "cwd": cwd, "requirements": reqs}


def test_logged_model_loads_and_scores_where_recvae_is_not_installed(models, isolated):
    """Only the model's own requirements installed (see _ISOLATED): each model gives the expected top-N."""
    for name in models["uris"]:
        got = pd.read_json(isolated["cwd"] / f"{name}.json", orient="records", dtype={"user": str})
        want = models["expected"][name]
        assert len(want) == 3 * TOP_N
        pd.testing.assert_frame_equal(got[["user", "rank", "item"]], want[["user", "rank", "item"]], check_dtype=False)
        np.testing.assert_allclose(got["score"], want["score"], rtol=1e-4, atol=1e-5)
        # recvae came from the model's own copy of the package
        files = isolated["report"][f"{name}:recvae"]
        assert files and all(f"{os.sep}code{os.sep}recvae{os.sep}" in f for f in files.values()), files


def test_loading_a_model_imports_only_what_it_needs(isolated):
    """Serving needs none of training, the batch store, the pipeline or Airflow; implicit only for ALS."""
    report = isolated["report"]
    for name in ("vae", "ease"):
        assert not {"airflow", "implicit"} & set(report[name]), name
        assert not {"recvae.pipeline", "recvae.serving.store", "recvae.tracking", "recvae.cli", "recvae.training.loop",
                    "recvae.data.readers", "recvae.log"} & set(report[f"{name}:recvae"]), name
    assert "implicit" in report["als"]


def _dists_of() -> dict[str, set[str]]:
    """Top-level import name -> installed distributions providing it."""
    return {m: {_name(d) for d in ds} for m, ds in importlib.metadata.packages_distributions().items()}


def _module_level_imports(path: str) -> set[str]:
    """Top-level names a module imports when it is imported (not inside functions)."""
    out = set()
    for node in ast.parse(Path(path).read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_requirements_are_pinned_and_name_what_recvae_imports(isolated):
    dists_of = _dists_of()
    for name, reqs in isolated["requirements"].items():
        direct = {_name(r) for r in reqs}
        assert all(re.fullmatch(r"[\w.-]+==[\w.]+", r) for r in reqs), reqs  # pinned, no local version tags
        assert "recvae" not in direct and ("implicit" in direct) == (name == "als"), reqs
        # what recvae itself imports is required directly, not only through MLflow's own dependencies
        used = set().union(*(_module_level_imports(f) for f in isolated["report"][f"{name}:recvae"].values()))
        third_party = {d for m in used - {"recvae"} if m in dists_of for d in dists_of[m]}
        assert third_party <= direct, f"{name}: recvae imports {sorted(third_party - direct)}, not in {reqs}"


# ------------------------------------------------------------------------------------------- signature


def test_signature_has_real_column_types(models):
    sig = mlflow.models.get_model_info(models["uris"]["vae"]).signature
    assert sig.inputs.to_dict() == [{"type": "string", "name": "user", "required": True},
                                    {"type": "long", "name": "item", "required": True}]
    assert [c["type"] for c in sig.outputs.to_dict()] == ["string", "long", "long", "double"]
    assert sig.params.to_dict() == [{"name": "top_n", "type": "long", "default": DEFAULT_TOP_N, "shape": None},
                                    {"name": "allow_items", "type": "long", "default": [], "shape": (-1,)},
                                    {"name": "deny_items", "type": "long", "default": [], "shape": (-1,)},
                                    {"name": "output", "type": "string", "default": "topn", "shape": None}]
    assert sig.inputs.pandas_types()  # what the scoring server needs to parse CSV


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: str, content_type: str) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@contextlib.contextmanager
def _served(model_uri: str, tracking_uri: str, cwd: Path, wait_s: float = 180.0):
    """`mlflow models serve` on a free localhost port; yields its base URL; always stopped."""
    port = _free_port()
    bin_dir = Path(sys.executable).parent  # mlflow runs `uvicorn` from PATH, as in an activated environment
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}
    log = (cwd / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(bin_dir / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
         "-p", str(port), "-h", "127.0.0.1", "-w", "1"],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while True:
            if proc.poll() is not None:
                tail = (cwd / "serve.log").read_text()[-4000:]
                pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n{tail}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            if time.monotonic() > deadline:
                pytest.fail(f"no answer on {base}/ping after {wait_s:.0f}s:\n{(cwd / 'serve.log').read_text()[-4000:]}")
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)  # its own session: the server and its uvicorn worker
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_served_model_answers_json_and_csv(models, tmp_path):
    want = models["expected"]["vae"]
    rec, _ = tracking.load_recommender_from_uri(models["uris"]["vae"])
    want_default = recommend_frame(rec, HISTORY)  # top_n defaults to 100: every unseen item
    records = HISTORY.to_dict(orient="records")
    split = {"columns": list(HISTORY.columns), "data": HISTORY.values.tolist()}
    top_n, as_json = {"params": {"top_n": TOP_N}}, "application/json"
    with _served(models["uris"]["vae"], models["tracking_uri"], tmp_path) as base:
        answers = {
            "records": _post(f"{base}/invocations", json.dumps({"dataframe_records": records, **top_n}), as_json),
            "split": _post(f"{base}/invocations", json.dumps({"dataframe_split": split, **top_n}), as_json),
            "records-default": _post(f"{base}/invocations", json.dumps({"dataframe_records": records}), as_json),
            "csv": _post(f"{base}/invocations", HISTORY.to_csv(index=False), "text/csv"),
        }
    for name, (status, body) in answers.items():
        assert status == 200, f"{name}: {status} {body}"
        assert list(body) == ["predictions"], name
    for name, frame in (("records", want), ("split", want), ("records-default", want_default), ("csv", want_default)):
        got = pd.DataFrame(answers[name][1]["predictions"])
        assert list(got.columns) == ["user", "rank", "item", "score"], name
        assert got["user"].tolist() == frame["user"].tolist(), name  # "007" stays a string
        assert got[["rank", "item"]].to_numpy().tolist() == frame[["rank", "item"]].to_numpy().tolist(), name
        np.testing.assert_allclose(got["score"], frame["score"], rtol=1e-4, atol=1e-5)
    assert answers["csv"][1] == answers["records-default"][1]  # both content types give the same answer

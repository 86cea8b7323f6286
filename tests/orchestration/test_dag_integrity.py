"""DAG integrity: every file in dags/ parses quickly with no import errors and no heavy top-level imports, and every
DAG has real owners, retries, timeouts, failure callbacks, tags and no cycles (the shape of astro-cli's Airflow 3
`dagexampletest.py`); then what the project's two DAGs promise: each task's timeout kind, the failure callbacks, the
retrain deadline and the promotion params."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "dags"
EXPECTED_DAG_IDS = ("recvae_retrain", "recvae_score")
# Modules a DAG file must not import at top level: the DAG processor re-parses every file every
# min_file_process_interval, so these belong inside task bodies.
HEAVY_MODULES = ("torch", "mlflow", "pandas", "scipy", "recvae.models.neural")
PARSE_SECONDS_MAX = 2.0  # generous: an integrity guard against work at parse time, not a benchmark


def dag_files(folder: Path) -> list[Path]:
    """Python files under a DAGs folder, private helpers (leading underscore) and caches excluded."""
    return sorted(
        p for p in folder.rglob("*.py") if not p.name.startswith("_") and "__pycache__" not in p.parts
    )


@contextmanager
def _quiet(namespace: str = "airflow") -> Iterator[None]:
    log = logging.getLogger(namespace)
    old = log.disabled
    log.disabled = True
    try:
        yield
    finally:
        log.disabled = old


def load_dag_bag(folder: Path) -> Any:
    """Parse a DAGs folder the way the DAG processor does (an airflow DagBag)."""
    from airflow.dag_processing.dagbag import DagBag

    with _quiet():
        return DagBag(dag_folder=str(folder))


def import_errors_of(bag: Any, path: Path) -> list[str]:
    """Import errors the DagBag recorded for one file (keys may be absolute or relative paths)."""
    return [err.strip() for key, err in bag.import_errors.items() if str(path).endswith(str(key)) or key == str(path)]


def parse_seconds(bag: Any, path: Path) -> float:
    """How long the DagBag took to parse one file."""
    for stat in bag.dagbag_stats:
        if str(path).endswith(stat.file.lstrip("/")):
            return stat.duration.total_seconds()
    raise AssertionError(f"{path} was not parsed by the DagBag (does it mention both 'airflow' and 'dag'?)")


def rule_violations(dag: Any) -> list[str]:
    """The project's DAG rules one DAG breaks: owners, retries, timeouts, failure callbacks, tags, cycles."""
    problems: list[str] = []
    where = f"{dag.dag_id} ({dag.fileloc})"
    for t in dag.tasks:
        if not t.owner or t.owner.strip().lower() == "airflow":
            problems.append(f"{where}: task {t.task_id} has owner {t.owner!r}; set default_args['owner']")
        if (t.retries or 0) < 1:
            problems.append(f"{where}: task {t.task_id} has retries={t.retries}; need >= 1")
        if t.execution_timeout is None:
            problems.append(f"{where}: task {t.task_id} has no execution_timeout")
        if not t.on_failure_callback:
            problems.append(f"{where}: task {t.task_id} has no on_failure_callback")
    if not dag.on_failure_callback:
        problems.append(f"{where}: no on_failure_callback")
    if not dag.tags:
        problems.append(f"{where}: no tags")
    try:
        dag.check_cycle()
    except Exception as exc:  # AirflowDagCycleException
        problems.append(f"{where}: cycle: {exc}")
    return problems


def heavy_imports_of(path: Path, heavy: tuple[str, ...] = HEAVY_MODULES) -> list[str]:
    """Heavy modules left in sys.modules after importing a DAG file in a fresh interpreter."""
    code = textwrap.dedent(
        """
        import json, runpy, sys
        path, heavy = sys.argv[1], json.loads(sys.argv[2])
        sys.path.insert(0, str(__import__("pathlib").Path(path).parent))
        runpy.run_path(path, run_name="dag_integrity_check")
        print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path), json.dumps(list(heavy))],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    if proc.returncode != 0:
        raise AssertionError(f"importing {path} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dag_bag() -> Any:
    return load_dag_bag(DAGS_DIR)


def test_dags_folder_has_dag_files():
    assert dag_files(DAGS_DIR), f"no DAG files in {DAGS_DIR}"


@pytest.mark.parametrize("path", dag_files(DAGS_DIR), ids=lambda p: p.name)
def test_file_imports_without_errors(dag_bag, path):
    errors = import_errors_of(dag_bag, path)
    assert not errors, f"{path.relative_to(REPO)} failed to import:\n" + "\n".join(errors)


@pytest.mark.parametrize("path", dag_files(DAGS_DIR), ids=lambda p: p.name)
def test_file_parses_quickly(dag_bag, path):
    seconds = parse_seconds(dag_bag, path)
    assert seconds < PARSE_SECONDS_MAX, f"{path.name} took {seconds:.2f} s to parse; move work into tasks"


@pytest.mark.parametrize("path", dag_files(DAGS_DIR), ids=lambda p: p.name)
def test_file_has_no_heavy_top_level_imports(path):
    found = heavy_imports_of(path)
    assert not found, f"{path.name} imports {found} at module level; import them inside the task bodies"


def test_expected_dags_exist(dag_bag):
    missing = sorted(set(EXPECTED_DAG_IDS) - set(dag_bag.dag_ids))
    assert not missing, f"DAG ids {missing} not found in {DAGS_DIR}; have {sorted(dag_bag.dag_ids)}"


def test_every_dag_follows_the_rules(dag_bag):
    assert dag_bag.dags, "the DagBag holds no DAG"
    problems = [p for dag in dag_bag.dags.values() for p in rule_violations(dag)]
    assert not problems, "\n".join(problems)


# The checks above must be able to fail: run them on a folder holding a DAG that breaks every rule.
_GOOD = '''
from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

@dag(dag_id="good", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), tags=["t"],
     on_failure_callback=print,
     default_args={"owner": "team", "retries": 1, "execution_timeout": timedelta(minutes=5),
                   "on_failure_callback": print})
def good():
    @task
    def a():
        import pandas  # inside the task: fine
        return 1
    a()

good()
'''
_BAD = '''
import pendulum
import pandas  # heavy top-level import
from airflow.sdk import dag, task

@dag(dag_id="bad", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"))
def bad():
    @task
    def a():
        return 1
    a()

bad()
'''
_BROKEN = '''
from airflow.sdk import dag
raise RuntimeError("boom at parse time")
'''


def test_checks_catch_a_dag_that_breaks_the_rules(tmp_path):
    (tmp_path / "good_dag.py").write_text(_GOOD)
    (tmp_path / "bad_dag.py").write_text(_BAD)
    (tmp_path / "broken_dag.py").write_text(_BROKEN)
    bag = load_dag_bag(tmp_path)

    assert sorted(p.name for p in dag_files(tmp_path)) == ["bad_dag.py", "broken_dag.py", "good_dag.py"]
    assert import_errors_of(bag, tmp_path / "good_dag.py") == []
    assert any("boom at parse time" in e for e in import_errors_of(bag, tmp_path / "broken_dag.py"))
    assert rule_violations(bag.dags["good"]) == []
    bad = " ".join(rule_violations(bag.dags["bad"]))
    assert "owner 'airflow'" in bad and "retries=0" in bad and "no tags" in bad
    assert "task a has no execution_timeout" in bad and "task a has no on_failure_callback" in bad
    assert "bad_dag.py): no on_failure_callback" in bad
    assert 0.0 <= parse_seconds(bag, tmp_path / "good_dag.py") < PARSE_SECONDS_MAX
    assert heavy_imports_of(tmp_path / "bad_dag.py") == ["pandas"]
    assert heavy_imports_of(tmp_path / "good_dag.py") == []


# ------------------------------------------------------------------------------------------ the project's DAGs

TIMEOUT_KINDS = {  # (dag, task) -> TaskTimeouts field; every other task is bookkeeping
    ("recvae_retrain", "build_snapshot"): "prepare",
    ("recvae_retrain", "train_challenger"): "train",
    ("recvae_retrain", "train_seed"): "train",
    ("recvae_retrain", "tune_workers"): "prepare",  # sets up the study: a snapshot-sized read, no training
    ("recvae_retrain", "tune_worker"): "train",
    ("recvae_retrain", "combine_seeds"): "train",
    ("recvae_retrain", "train_baseline"): "baseline",
    ("recvae_retrain", "promote"): "promote",
    ("recvae_retrain", "flag_anomalies"): "score_shard",
    ("recvae_score", "begin_batch"): "begin_score",
    ("recvae_score", "score_shard"): "score_shard",
    ("recvae_score", "publish"): "publish",
}


def test_each_task_has_its_kinds_timeout_and_the_failure_callbacks(dag_bag):
    from recvae.orchestration.dag_defaults import TIMEOUTS, dag_failed, task_failed

    for dag_id in EXPECTED_DAG_IDS:
        dag = dag_bag.dags[dag_id]
        assert dag.on_failure_callback is dag_failed
        for t in dag.tasks:
            kind = TIMEOUT_KINDS.get((dag_id, t.task_id), "bookkeeping")
            assert t.execution_timeout == getattr(TIMEOUTS, kind), (dag_id, t.task_id)
            callbacks = t.on_failure_callback  # a mapped task keeps it as given
            assert (callbacks if isinstance(callbacks, list) else [callbacks]) == [task_failed], (dag_id, t.task_id)
        assert {"notify_conn_id", "notify_to"} <= set(dag.params)


def test_timeouts_deadline_and_schedule_come_from_the_environment_at_parse_time():
    code = textwrap.dedent(
        """
        import json, runpy, sys
        sys.path.insert(0, sys.argv[1])
        dag = runpy.run_path(sys.argv[2], run_name="env_check")["recvae_retrain"]()
        print(json.dumps([dag.get_task("train_challenger").execution_timeout.total_seconds(),
                          dag.get_task("promote").execution_timeout.total_seconds(),
                          dag.deadline[0].interval.total_seconds(), type(dag.timetable).__name__]))
        """
    )
    env = {**os.environ, "RECVAE_TASK_TIMEOUTS": "train=8h", "RECVAE_RETRAIN_DEADLINE": "20h",
           "RECVAE_RETRAIN_SCHEDULE": "none"}
    proc = subprocess.run([sys.executable, "-c", code, str(REPO), str(DAGS_DIR / "recvae_retrain.py")],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [8 * 3600, 30 * 60, 20 * 3600, "NullTimetable"]


def test_retrain_has_a_deadline_from_queueing(dag_bag):
    from airflow.sdk import DeadlineReference

    [alert] = dag_bag.dags["recvae_retrain"].deadline
    assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert alert.callback.path == "recvae.orchestration.dag_defaults.deadline_missed"


def test_promote_passes_the_replace_champion_param(dag_bag, monkeypatch):
    from recvae import pipeline
    from recvae.orchestration import variables

    dag = dag_bag.dags["recvae_retrain"]
    assert dag.params["replace_champion_of_other_items"] is False
    seen: dict = {}
    monkeypatch.setattr(variables, "use_airflow_variables", lambda **kw: {})
    monkeypatch.setattr(pipeline, "promote_step", lambda *a, **kw: seen.update(kw) or {"promoted": False})
    params = {**{k: dag.params[k] for k in dag.params}, "replace_champion_of_other_items": True}
    dag.get_task("promote").python_callable({"snapshot_dir": "/s"}, {"run_id": "r"}, [], params=params, run_id="x")
    assert seen["replace_champion_of_other_items"] is True and seen["snapshot_dir"] == "/s"


def test_promote_passes_min_confidence_off_by_default(dag_bag, monkeypatch):
    from recvae import pipeline
    from recvae.orchestration import variables

    dag = dag_bag.dags["recvae_retrain"]
    assert dag.params["min_confidence"] is None
    seen: dict = {}
    monkeypatch.setattr(variables, "use_airflow_variables", lambda **kw: {})
    monkeypatch.setattr(pipeline, "promote_step", lambda *a, **kw: seen.update(kw) or {"promoted": False})
    params = {k: dag.params[k] for k in dag.params}
    promote = dag.get_task("promote").python_callable
    promote({"snapshot_dir": "/s"}, {"run_id": "r"}, [], params=params, run_id="x")
    assert seen["min_confidence"] is None
    promote({"snapshot_dir": "/s"}, {"run_id": "r"}, [], params={**params, "min_confidence": 0.95}, run_id="x")
    assert seen["min_confidence"] == 0.95

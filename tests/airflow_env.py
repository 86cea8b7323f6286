"""Pytest plugin: one Airflow metadata DB per test session and `run_dag_test`, which runs a DAG with dag.test().

Register it from tests/conftest.py (`pytest_plugins = ["airflow_env"]`). conftest sets AIRFLOW_HOME to a temporary
folder before anything imports airflow; this module points the DAGs folder at the repository's dags/ so that
dag.test() on the project's DAGs finds them. Airflow itself is imported lazily, so collecting tests stays cheap.

Usage::

    from airflow_env import run_dag_test

    def test_my_dag(airflow_db):
        result = run_dag_test(my_dag, snapshot="s1")
        assert result.state == "success"
        assert result.xcom("score", map_index=0) == ...
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
# Must be in the environment before airflow.settings is imported (it reads DAGS_FOLDER once).
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))

_init_lock = threading.Lock()
_initialised = False


def ensure_airflow_db() -> Path:
    """Create the Airflow metadata tables in AIRFLOW_HOME once per process; return AIRFLOW_HOME."""
    global _initialised
    home = Path(os.environ["AIRFLOW_HOME"])
    with _init_lock:
        if not _initialised:
            from airflow.dag_processing.bundles.manager import DagBundlesManager
            from airflow.utils import db

            home.mkdir(parents=True, exist_ok=True)
            # initdb creates the schema from the ORM on an empty DB (about 3 s) and upgrades an existing one.
            db.initdb()
            # dag.test() stores DAGs under a bundle; the bundle rows must exist before the first sync.
            DagBundlesManager().sync_bundles_to_db()
            _initialised = True
            logger.info("Airflow metadata DB ready in %s", home)
    return home


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """AIRFLOW_HOME with an initialised metadata DB (SQLite), shared by the whole session."""
    return ensure_airflow_db()


@dataclass(frozen=True)
class DagTestResult:
    """What one dag.test() run left behind: the DagRun, its state, and each task instance's state."""

    dag_run: Any  # airflow.models.dagrun.DagRun, detached from its session
    state: str
    task_states: dict[tuple[str, int], str | None]  # (task_id, map_index) -> state; map_index -1 if not mapped

    @property
    def run_id(self) -> str:
        return self.dag_run.run_id

    def states(self, task_id: str) -> list[str | None]:
        """States of one task's instances, ordered by map index."""
        found = sorted((mi, st) for (tid, mi), st in self.task_states.items() if tid == task_id)
        if not found:
            raise KeyError(f"no task instance of {task_id!r} in run {self.run_id}; have {sorted(self.task_states)}")
        return [st for _, st in found]

    def xcom(self, task_id: str, map_index: int = -1, key: str = "return_value") -> Any:
        """The XCom one task instance pushed (its return value by default); KeyError if it pushed none."""
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            query = XComModel.get_many(
                run_id=self.run_id,
                key=key,
                dag_ids=self.dag_run.dag_id,
                task_ids=task_id,
                map_indexes=map_index,
            )
            row = session.scalars(query).first()
            if row is None:
                raise KeyError(f"no XCom {key!r} from {task_id}[{map_index}] in run {self.run_id}")
            return XComModel.deserialize_value(row)

    def mapped_xcoms(self, task_id: str, key: str = "return_value") -> list[Any]:
        """The XComs of every instance of a mapped task, ordered by map index."""
        indexes = sorted(mi for tid, mi in self.task_states if tid == task_id)
        return [self.xcom(task_id, map_index=mi, key=key) for mi in indexes]


def run_dag_test(dag: Any, *, keep_retries: bool = False, **conf: Any) -> DagTestResult:
    """Run `dag` once in-process with dag.test(run_conf=conf) and return the run's outcome.

    Retries are switched off for the run unless keep_retries: dag.test() honours retry_delay for real, so a failing
    task of a production DAG (retries=3, 30 s with backoff) would keep a test waiting for minutes.

    Deadline alerts are left out of the run: Airflow 3.3.2's dag.test() hands the run the DAG's alert definitions
    where the scheduler has their database ids, and a run that succeeds then fails in DagRun.update_state with
    "'dict' object has no attribute 'hex'". Test a deadline's definition and callback directly instead.
    """
    ensure_airflow_db()
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    # dag.test() only runs DAGs that are serialized in the DB. DAGs from the dags folder get there when it
    # re-parses the bundle; a DAG built inside a test does not live in any file, so write it explicitly.
    saved = {t.task_id: t.retries for t in dag.tasks}
    deadline = dag.deadline
    try:
        if not keep_retries:
            for t in dag.tasks:
                t.retries = 0
        bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"], collect_dags=False)
        bag.bag_dag(dag)
        sync_bag_to_db(bag, "dags-folder", None)
        dag.deadline = None
        dag_run = dag.test(run_conf=conf or None)
    finally:
        dag.deadline = deadline
        for t in dag.tasks:
            t.retries = saved[t.task_id]
    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == dag_run.run_id)
        ).one()
        states = {(ti.task_id, ti.map_index): _plain(ti.state) for ti in run.get_task_instances(session=session)}
        state = _plain(run.state)
        session.expunge(run)
    logger.info("dag.test(%s) finished %s: %s", dag.dag_id, state, states)
    return DagTestResult(dag_run=run, state=state, task_states=states)


def _plain(state: Any) -> str | None:
    """A state enum (DagRunState, TaskInstanceState) as its plain string value."""
    return None if state is None else str(getattr(state, "value", state))

"""The Airflow test harness (tests/airflow_env.py): a mapped TaskFlow DAG runs under dag.test() and reports back."""

from __future__ import annotations

import pendulum
import pytest
from airflow_env import run_dag_test

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def _build_dag(dag_id: str, fail_on: int | None = None):
    """A throwaway DAG: square each of [1, 2, 3] as a mapped task, then a downstream task adds the squares."""
    from airflow.sdk import dag, task

    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        default_args={"retries": 0},
    )
    def tiny():
        @task
        def offset() -> int:
            from airflow.sdk import get_current_context

            return int(get_current_context()["params"].get("offset", 0))

        @task
        def square(x: int, shift: int) -> int:
            if fail_on is not None and x == fail_on:
                raise ValueError(f"refusing {x}")
            return x * x + shift

        @task
        def total(values: list[int]) -> int:
            # Index the lazy XCom sequence instead of sum(values): iterating it logs a spurious "XCom not found".
            return sum(values[i] for i in range(len(values)))

        total(square.partial(shift=offset()).expand(x=[1, 2, 3]))

    return tiny()


def test_mapped_dag_runs_and_reports_values(airflow_db):
    result = run_dag_test(_build_dag("harness_ok"), offset=10)

    assert result.state == "success"
    assert result.states("square") == ["success"] * 3
    assert result.mapped_xcoms("square") == [11, 14, 19]
    assert result.xcom("total") == 44
    assert result.dag_run.conf == {"offset": 10}


def test_metadata_db_lives_in_the_session_airflow_home(airflow_db):
    from airflow.configuration import conf

    assert str(airflow_db) in conf.get("database", "sql_alchemy_conn")


def test_failing_mapped_instance_fails_the_run(airflow_db):
    result = run_dag_test(_build_dag("harness_fail", fail_on=2))

    assert result.state == "failed"
    assert result.states("square") == ["success", "failed", "success"]
    assert result.states("total") == ["upstream_failed"]
    assert [result.xcom("square", map_index=i) for i in (0, 2)] == [1, 9]
    with pytest.raises(KeyError):
        result.xcom("square", map_index=1)


def _flaky_dag(dag_id: str):
    """One task that fails on its first try and succeeds on the second (retries=1, no delay)."""
    from datetime import timedelta

    from airflow.sdk import dag, get_current_context, task

    @dag(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         default_args={"retries": 1, "retry_delay": timedelta(0)})
    def flaky():
        @task
        def second_try_works() -> int:
            try_number = get_current_context()["ti"].try_number
            if try_number < 2:
                raise RuntimeError(f"try {try_number} fails")
            return try_number

        second_try_works()

    return flaky()


def test_retries_are_off_unless_kept(airflow_db):
    dag = _flaky_dag("harness_flaky")

    assert run_dag_test(dag).state == "failed"
    assert dag.get_task("second_try_works").retries == 1  # restored after the run

    kept = run_dag_test(dag, keep_retries=True)
    assert kept.state == "success"
    assert kept.xcom("second_try_works") == 2

"""A new SQLite MLflow store opened by several processes at once (Airflow's parallel first tasks) is created once."""

from __future__ import annotations

import multiprocessing as mp
import traceback

import pytest

mlflow = pytest.importorskip("mlflow")

from recvae import tracking  # noqa: E402  (below the importorskip: it imports mlflow)

N_PROCESSES = 4

pytestmark = pytest.mark.filterwarnings("ignore:.*noload.*loader strategy")


def _first_run(uri: str, barrier: mp.synchronize.Barrier, results: mp.Queue) -> None:
    """What each Airflow task does first: point MLflow at the store, find the experiment, log a run."""
    try:
        barrier.wait(timeout=60)  # all start together, so the store's creation overlaps
        tracking.configure(uri)
        with tracking.start_run("parallel", run_name="task"):
            mlflow.log_metric("x", 1.0)
        results.put("ok")
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put(traceback.format_exc(limit=3))


def test_parallel_first_runs_on_a_new_store_all_succeed(tmp_path):
    """Without the lock one of them fails (`table ... already exists`, `duplicate column name`): 5 of 5 tries did."""
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    ctx = mp.get_context("fork")  # the children share the parent's imports: a start in milliseconds
    barrier, results = ctx.Barrier(N_PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_first_run, args=(uri, barrier, results)) for _ in range(N_PROCESSES)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert [o for o in outcomes if o != "ok"] == []
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("parallel")
    assert len(client.search_runs([exp.experiment_id])) == N_PROCESSES

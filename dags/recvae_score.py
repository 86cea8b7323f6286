"""Batch scoring: top-N for every user with the champion model, scored in shards (dynamic task mapping) into a
staging batch, then published atomically. Runs after each promotion (the champion asset) and by hand.

Thin on purpose: only the light `recvae.airflow_common` is imported at parse time; each task imports the package
inside its body and holds no logic of its own.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from recvae.airflow_common import CHAMPION, DEFAULT_ARGS, START_DATE


@dag(
    dag_id="recvae_score",
    schedule=[CHAMPION],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["recvae", "scoring"],
    doc_md=__doc__,
    params={
        "model_uri": Param("models:/recvae@champion", type="string", description="MLflow model to score with"),
        "snapshot_dir": Param(None, type=["null", "string"], description="snapshot to score (default: latest)"),
        "top_n": Param(100, type="integer", minimum=1, maximum=10000),
        "n_shards": Param(4, type="integer", minimum=1, maximum=256),
        "db_conn_id": Param("recvae_db", type="string", description="Airflow Connection of the recommendations DB"),
        "retention": Param(5, type="integer", minimum=1, description="published batches to keep"),
        "batch_key": Param(None, type=["null", "string"],
                           description="idempotency key (default: the run id); reuse one to finish a failed batch"),
    },
)
def recvae_score():
    @task(retries=3)
    def begin_batch(**context) -> dict:
        """Open (or reuse, on a retry) the staging batch for this run and plan the shards."""
        from recvae import pipeline

        pipeline.use_airflow_variables()
        p = context["params"]
        return pipeline.begin_score_step(
            model_uri=p["model_uri"], snapshot_dir=p["snapshot_dir"], top_n=int(p["top_n"]),
            n_shards=int(p["n_shards"]), db_url=pipeline.db_url_from_connection(p["db_conn_id"]),
            batch_key=p["batch_key"] or context["run_id"],
        )

    @task
    def shards(batch: dict) -> list[int]:
        """Shard numbers to score, one mapped task each."""
        return list(range(batch["n_shards"]))

    @task(retries=3, map_index_template="shard {{ task.op_kwargs['shard'] }}")
    def score_shard(batch: dict, shard: int, **context) -> dict:
        """Score one shard of users into the staging batch (re-running replaces the shard's rows)."""
        from recvae import pipeline

        pipeline.use_airflow_variables()
        p = context["params"]
        return pipeline.score_shard_step(batch, shard, db_url=pipeline.db_url_from_connection(p["db_conn_id"]))

    @task(retries=3)
    def publish(batch: dict, results: list[dict], **context) -> dict:
        """Check the staging batch is complete and make it current in one transaction."""
        from recvae import pipeline

        pipeline.use_airflow_variables()
        p = context["params"]
        return pipeline.publish_step(
            batch, db_url=pipeline.db_url_from_connection(p["db_conn_id"]), retention=int(p["retention"])
        )

    batch = begin_batch()
    results = score_shard.partial(batch=batch).expand(shard=shards(batch))
    publish(batch, results)


recvae_score()

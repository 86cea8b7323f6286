"""Batch scoring: top-N for every user, scored in shards (dynamic task mapping) into a staging batch, then
published atomically. Runs after each promotion (the champion asset) and by hand.

A run triggered by a promotion scores exactly the version that promotion announced (the asset event's extra), on
the snapshot it was validated on, even if the `champion` alias has moved since; a manual run scores the
`model_uri` param. A user error fails its task at once; passing faults are retried.

Thin on purpose: only the light `recvae.orchestration.dag_defaults` is imported at parse time; each task imports
the package inside its body and holds no logic of its own.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from recvae.orchestration.dag_defaults import CHAMPION, DEFAULT_ARGS, START_DATE, TIMEOUTS, dag_failed, notify_params


@dag(
    dag_id="recvae_score",
    schedule=[CHAMPION],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    on_failure_callback=dag_failed,
    tags=["recvae", "scoring"],
    doc_md=__doc__,
    params={
        "model_uri": Param("models:/recvae@champion", type="string",
                           description="MLflow model to score with in a manual run (a promotion's run scores the "
                                       "version it announced)"),
        "snapshot_dir": Param(None, type=["null", "string"],
                              description="snapshot to score (default: the promoted model's, else the latest)"),
        "top_n": Param(100, type="integer", minimum=1, maximum=10000),
        "users_per_shard": Param(50_000, type="integer", minimum=1,
                                 description="users per scoring shard (one mapped task each, at most 1024 shards): "
                                             "the shard count follows the number of users"),
        "n_shards": Param(None, type=["null", "integer"], minimum=1, maximum=1024,
                          description="a fixed shard count instead (overrides users_per_shard)"),
        "db_conn_id": Param("recvae_db", type="string", description="Airflow Connection of the recommendations DB"),
        "retention": Param(5, type="integer", minimum=1, description="published batches to keep"),
        "batch_key": Param(None, type=["null", "string"],
                           description="idempotency key (default: the run id); reuse one to finish a failed batch"),
        "allow_items": Param(None, type=["null", "array"],
                             description="business filter: only these raw item ids may be recommended"),
        "deny_items": Param([], type="array", description="business filter: never recommend these raw item ids"),
        "allow_sql": Param(None, type=["null", "string"],
                           description="only the items this table or read-only query on db_conn_id returns"),
        "deny_sql": Param(None, type=["null", "string"],
                          description="never the items this table or read-only query on db_conn_id returns"),
        **notify_params(),
    },
)
def recvae_score():
    @task(retries=3, execution_timeout=TIMEOUTS.begin_score)
    def begin_batch(**context) -> dict:
        """Open (or reuse, on a retry) the staging batch for this run and plan the shards (n_shards, else one per
        users_per_shard users); resolve the business filters once, so every shard applies the same lists."""
        from recvae import pipeline
        from recvae.orchestration import tasks as airflow_tasks
        from recvae.orchestration import variables

        with airflow_tasks.recvae_task():
            p = context["params"]
            target = airflow_tasks.score_target(context, CHAMPION)
            batch = pipeline.begin_score_step(
                model_uri=target["model_uri"], snapshot_dir=target["snapshot_dir"], top_n=int(p["top_n"]),
                n_shards=None if p["n_shards"] is None else int(p["n_shards"]),
                users_per_shard=int(p["users_per_shard"]), db_url=variables.db_url_from_connection(p["db_conn_id"]),
                batch_key=p["batch_key"] or context["run_id"],
                item_filter={k: p.get(k) for k in ("allow_items", "deny_items", "allow_sql", "deny_sql")},
            )
            return {**batch, "promotion": target["event"]}

    @task
    def shards(batch: dict) -> list[int]:
        """Shard numbers to score, one mapped task each."""
        from recvae.orchestration import tasks as airflow_tasks

        with airflow_tasks.recvae_task(tracking=False):
            return list(range(batch["n_shards"]))

    @task(retries=3, map_index_template="shard {{ task.op_kwargs['shard'] }}", execution_timeout=TIMEOUTS.score_shard)
    def score_shard(batch: dict, shard: int, **context) -> dict:
        """Score one shard of users into the staging batch (re-running replaces the shard's rows)."""
        from recvae import pipeline
        from recvae.orchestration import tasks as airflow_tasks
        from recvae.orchestration import variables

        with airflow_tasks.recvae_task():
            p = context["params"]
            return pipeline.score_shard_step(batch, shard, db_url=variables.db_url_from_connection(p["db_conn_id"]))

    @task(retries=3, execution_timeout=TIMEOUTS.publish)
    def publish(batch: dict, results: list[dict], **context) -> dict:
        """Check the staging batch is complete and make it current in one transaction."""
        from recvae import pipeline
        from recvae.orchestration import tasks as airflow_tasks
        from recvae.orchestration import variables

        with airflow_tasks.recvae_task(tracking=False):
            p = context["params"]
            return pipeline.publish_step(
                batch, db_url=variables.db_url_from_connection(p["db_conn_id"]), retention=int(p["retention"])
            )

    batch = begin_batch()
    results = score_shard.partial(batch=batch).expand(shard=shards(batch))
    publish(batch, results)


recvae_score()

"""Weekly retraining: ingest and validate interactions, build a snapshot, train the Mult-VAE challenger and the
baselines in parallel, evaluate them on the same validation users, and promote the challenger to `champion`
only when it beats the champion and every baseline by the configured margin (and, with `min_confidence`,
significantly on the same validation users). With `seeds` > 1 the challenger is trained once per seed, in
parallel, and their ensemble (the mean of their softmax) is what competes. With `tune_trials` > 0 the challenger is
the best configuration of a tune of that many trials on validation users, its trials run by `tune_workers` mapped
tasks at once. A promotion
emits the `recvae_champion` asset event (its extra names the exact version), which schedules recvae_score, and
scores the new champion's users for anomalies (`flag_anomalies`: its likelihood, KL and ELBO per user, published to
recvae_user_anomalies on the `db_conn_id` database).

A user error (bad config, data or model reference) fails its task at once; passing faults are retried. Failures
and a missed deadline are logged in one line and mailed when a notifier is configured (docs/airflow.md).

Thin on purpose: only the light `recvae.orchestration.dag_defaults` and `recvae.models.kinds` are imported at parse
time; each task imports the package inside its body and holds no logic of its own.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from recvae.models.kinds import BASELINE_KINDS, MODEL_KINDS
from recvae.orchestration.dag_defaults import (
    CHAMPION,
    DEFAULT_ARGS,
    SNAPSHOT,
    START_DATE,
    TIMEOUTS,
    dag_failed,
    notify_params,
    retrain_deadline,
    retrain_schedule,
)


@dag(
    dag_id="recvae_retrain",
    schedule=retrain_schedule(),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    on_failure_callback=dag_failed,
    deadline=retrain_deadline(),
    tags=["recvae", "training"],
    doc_md=__doc__,
    params={
        "dataset": Param("synthetic", type="string", description="named dataset (ml-1m, gowalla, synthetic, ...)"),
        "input_path": Param(None, type=["null", "string"], description="an interactions file instead of a dataset"),
        "input_format": Param(None, type=["null", "string"], description="csv, parquet, movielens, pro_sg, lightgcn"),
        "model": Param("vae", type="string", enum=list(MODEL_KINDS),
                       description="challenger: Mult-VAE, Mult-DAE or RecVAE (from its published settings)"),
        "config": Param({}, type="object", description='overrides, e.g. {"train.epochs": 50, "train.anneal_cap": 0.2}'),
        "seeds": Param(1, type="integer", minimum=1, maximum=16,
                       description="challenger runs (train.seed, +1, ...); above 1 their ensemble is the challenger"),
        "tune_trials": Param(0, type="integer", minimum=0, maximum=1000,
                             description="0 trains the configured model; N > 0 makes the challenger the best of a "
                                         "tune of N trials (recvae tune) on validation users"),
        "tune_workers": Param(2, type="integer", minimum=1, maximum=64,
                              description="mapped tasks running the tune's trials at once, where the executor allows"),
        "tune_space": Param({}, type="object",
                            description='narrows the search space, e.g. {"model.latent_dim": [100, 200]}'),
        "tune_conn_id": Param(None, type=["null", "string"],
                              description="Airflow Connection of the study's database (default: "
                                          "$RECVAE_TUNE_STORAGE, else SQLite under the home)"),
        "baselines": Param(list(BASELINE_KINDS), type="array", description="baselines to train beside the VAE"),
        "promote_margin": Param(0.0, type="number", minimum=0, description="NDCG@100 margin the challenger must beat"),
        "min_confidence": Param(None, type=["null", "number"], exclusiveMinimum=0, exclusiveMaximum=1,
                                description="if set (e.g. 0.95), the challenger must beat the champion and each "
                                            "baseline significantly at this level (paired one-sided t-test on the "
                                            "validation users); null: off"),
        "replace_champion_of_other_items": Param(
            False, type="boolean",
            description="a champion trained on other items (another data set) is replaced by a challenger that beats "
                        "the baselines, instead of failing the promotion"),
        "model_name": Param("recvae", type="string", description="MLflow registered model name"),
        "experiment": Param("recvae", type="string", description="MLflow experiment"),
        "db_conn_id": Param("recvae_db", type="string",
                            description="Airflow Connection of the recommendations DB (the new champion's anomaly "
                                        "scores go there)"),
        **notify_params(),
    },
)
def recvae_retrain():
    @task(outlets=[SNAPSHOT], execution_timeout=TIMEOUTS.prepare)
    def build_snapshot(**context) -> dict:
        """Ingest, validate and split the interactions into a dataset snapshot (idempotent per run). It also creates
        a new MLflow store, before the parallel training tasks open it."""
        from recvae import pipeline
        from recvae.orchestration.tasks import recvae_task

        with recvae_task():
            p = context["params"]
            return dict(pipeline.prepare_step(
                dataset=p["dataset"], input_path=p["input_path"], input_format=p["input_format"],
                overrides=p["config"], run_key=context["run_id"],
            ))

    @task(execution_timeout=TIMEOUTS.prepare)
    def tune_workers(snapshot: dict, **context) -> list[int]:
        """With `tune_trials` > 0: set up the study and its parent MLflow run; the workers to map (none otherwise)."""
        from recvae import pipeline
        from recvae.orchestration.tasks import recvae_task, tune_storage, tune_study_name

        with recvae_task():
            p = context["params"]
            if int(p["tune_trials"]) < 1:
                return []
            pipeline.tune_setup_step(
                snapshot["snapshot_dir"], kind=p["model"], study=tune_study_name(context), storage=tune_storage(p),
                space=p["tune_space"] or None, resume=True, overrides=p["config"], experiment=p["experiment"])
            return list(range(min(int(p["tune_workers"]), int(p["tune_trials"]))))

    @task(map_index_template="worker {{ task.op_kwargs['worker'] }}", execution_timeout=TIMEOUTS.train)
    def tune_worker(snapshot: dict, worker: int, **context) -> dict:
        """Run trials of the study until it has `tune_trials` in all (each worker its own sampler seed)."""
        from recvae import pipeline
        from recvae.orchestration.tasks import recvae_task, tune_storage, tune_study_name

        with recvae_task():
            p = context["params"]
            return pipeline.tune_trials_step(
                snapshot["snapshot_dir"], tune_study_name(context), trials=int(p["tune_trials"]), kind=p["model"],
                storage=tune_storage(p), worker=worker, overrides=p["config"])

    # none_failed: runs without a tune too (its mapped workers are then "skipped")
    @task(trigger_rule="none_failed", execution_timeout=TIMEOUTS.train)
    def train_challenger(snapshot: dict, tuned: list[dict], **context) -> dict:
        """Train the Mult-VAE challenger (or, after a tune, retrain its best trial), log it to MLflow and register a
        new version."""
        from recvae import pipeline
        from recvae.orchestration.tasks import recvae_task, tune_storage, tune_study_name

        with recvae_task():
            p = context["params"]
            if int(p["tune_trials"]) > 0:
                result = pipeline.tune_finish_step(snapshot["snapshot_dir"], tune_study_name(context), kind=p["model"],
                                                   storage=tune_storage(p), model_name=p["model_name"])
                return dict(result.challenger)
            return dict(pipeline.train_step(
                snapshot["snapshot_dir"], overrides=p["config"], kind=p["model"], experiment=p["experiment"],
                model_name=p["model_name"], run_key=f"{context['run_id']}:challenger",
            ))

    @task
    def extra_seeds(**context) -> list[int]:
        """Seeds of the challenger's other runs (none unless the `seeds` param is above 1)."""
        from recvae import pipeline
        from recvae.orchestration.tasks import recvae_task

        with recvae_task(tracking=False):
            p = context["params"]
            return pipeline.challenger_seeds(p["model"], p["config"], int(p["seeds"]), tuned=int(p["tune_trials"]) > 0)

    @task(map_index_template="seed {{ task.op_kwargs['seed'] }}", execution_timeout=TIMEOUTS.train)
    def train_seed(snapshot: dict, seed: int, **context) -> dict:
        """Train the challenger's configuration again with another seed, logged and registered like it."""
        from recvae import pipeline
        from recvae.orchestration.tasks import recvae_task

        with recvae_task():
            p = context["params"]
            return dict(pipeline.train_step(
                snapshot["snapshot_dir"], overrides={**p["config"], "train.seed": seed}, kind=p["model"],
                experiment=p["experiment"], model_name=p["model_name"],
                run_key=f"{context['run_id']}:challenger:{seed}",
            ))

    # none_failed: runs with one seed too (an empty mapping is "skipped")
    @task(trigger_rule="none_failed", execution_timeout=TIMEOUTS.train)
    def combine_seeds(snapshot: dict, first: dict, others: list[dict], **context) -> dict:
        """The challenger to promote: the one run, or the ensemble of every seed's run."""
        from recvae import pipeline
        from recvae.orchestration.tasks import recvae_task

        with recvae_task():
            p = context["params"]
            return dict(pipeline.combine_challengers(
                first, [others[i] for i in range(len(others))] if others else [], snapshot["snapshot_dir"],
                experiment=p["experiment"], model_name=p["model_name"], run_key=f"{context['run_id']}:ensemble",
            ))

    @task
    def baseline_kinds(**context) -> list[str]:
        """The baselines asked for in the run's params."""
        from recvae.orchestration.tasks import recvae_task

        with recvae_task(tracking=False):
            return list(context["params"]["baselines"])

    @task(map_index_template="{{ task.op_kwargs['kind'] }}", execution_timeout=TIMEOUTS.baseline)
    def train_baseline(snapshot: dict, kind: str, **context) -> dict:
        """Fit one baseline (hyperparameters tuned on validation users) and log it as an MLflow run."""
        from recvae import pipeline
        from recvae.orchestration.tasks import recvae_task

        with recvae_task():
            p = context["params"]
            return dict(pipeline.baseline_step(
                kind, snapshot["snapshot_dir"], experiment=p["experiment"], run_key=f"{context['run_id']}:{kind}"
            ))

    @task(trigger_rule="none_failed", execution_timeout=TIMEOUTS.promote)  # runs with no baselines too (as above)
    def promote(snapshot: dict, challenger: dict, baselines: list[dict], **context) -> dict:
        """Promote the challenger to `champion` only if it beats the champion and every baseline."""
        from recvae import pipeline
        from recvae.orchestration.tasks import recvae_task

        with recvae_task():
            p = context["params"]
            return dict(pipeline.promote_step(
                challenger, [baselines[i] for i in range(len(baselines))] if baselines else [],
                snapshot_dir=snapshot["snapshot_dir"], model_name=p["model_name"], margin=float(p["promote_margin"]),
                replace_champion_of_other_items=bool(p["replace_champion_of_other_items"]),
                min_confidence=None if p.get("min_confidence") is None else float(p["min_confidence"]),
            ))

    @task.short_circuit
    def champion_changed(decision: dict) -> bool:
        """Continue (and announce the new champion) only when the challenger was promoted."""
        from recvae.orchestration.tasks import recvae_task

        with recvae_task(tracking=False):
            return bool(decision["promoted"])

    @task(outlets=[CHAMPION])
    def announce_champion(snapshot: dict, decision: dict, **context) -> dict:
        """Emit the champion asset event that schedules recvae_score; its extra names the promoted version."""
        from recvae.orchestration import tasks as airflow_tasks

        with airflow_tasks.recvae_task(tracking=False):
            return airflow_tasks.announce_champion(context, CHAMPION, decision, snapshot)

    @task(retries=3, execution_timeout=TIMEOUTS.score_shard)
    def flag_anomalies(announced: dict, **context) -> dict:
        """Score the new champion's users with its own likelihood, KL and ELBO into recvae_user_anomalies (one
        batch per run, published atomically) and log the histogram to its run; a user error fails at once."""
        from recvae import pipeline
        from recvae.orchestration import tasks as airflow_tasks
        from recvae.orchestration import variables

        with airflow_tasks.recvae_task():
            p = context["params"]
            return pipeline.anomalies_step(
                model_uri=announced["model_uri"], snapshot_dir=announced["snapshot_dir"],
                db_url=variables.db_url_from_connection(p["db_conn_id"]), batch_key=f"anomalies-{context['run_id']}",
            )

    snapshot = build_snapshot()
    tuned = tune_worker.partial(snapshot=snapshot).expand(worker=tune_workers(snapshot))
    first = train_challenger(snapshot, tuned)
    others = train_seed.partial(snapshot=snapshot).expand(seed=extra_seeds())
    challenger = combine_seeds(snapshot, first, others)
    baselines = train_baseline.partial(snapshot=snapshot).expand(kind=baseline_kinds())
    decision = promote(snapshot, challenger, baselines)
    announced = announce_champion(snapshot, decision)
    champion_changed(decision) >> announced
    flag_anomalies(announced)


recvae_retrain()

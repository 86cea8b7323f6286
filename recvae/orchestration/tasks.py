"""Task-side helpers of the DAGs: the wrapper every task body runs in, the failure and deadline reports and their
notices, and the champion asset event. Imported inside tasks and callbacks only; heavy modules are imported inside
the functions, so the triggerer and the DAG processor can import this module cheaply too."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from airflow.sdk import Context

logger = logging.getLogger(__name__)

NOTIFY_CONN_VARIABLE = "recvae_notify_conn_id"
NOTIFY_TO_VARIABLE = "recvae_notify_to"
SUBJECT_MAX = 200  # mail subjects stay readable; the body holds the whole line


def error_line(exc: BaseException | str | None) -> str:
    """An exception as one line, URL passwords masked: `Type: message` (our AirflowFailException: its message)."""
    from recvae.log import mask_secrets

    if exc is None:
        return "no exception recorded"
    text = mask_secrets(" ".join(str(exc).split()))
    if isinstance(exc, str) or type(exc).__name__ == "AirflowFailException":
        return text or "AirflowFailException"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def recvae_task(*, tracking: bool = True) -> Iterator[None]:
    """Run a task body the project's way: the Airflow Variables applied, URL passwords masked in the task log and,
    with `tracking`, MLflow pointed at its store with its log records at their own level (see
    `recvae.orchestration.variables.use_airflow_variables`). A user error (`recvae.errors.user_errors()`: bad config,
    data, model reference, ...) fails the task at once with its one masked line, since a retry would fail the same
    way; anything else (a database or tracking server away) keeps the task's retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from recvae.errors import is_user_error
    from recvae.orchestration import variables

    try:
        variables.use_airflow_variables(configure_tracking=tracking)
        yield
    except Exception as exc:
        if not is_user_error(exc):
            raise
        line = error_line(exc)
        logger.error("%s (a user error: not retried)", line)
        raise AirflowFailException(line) from None


# ------------------------------------------------------------------------------------------ failure reports


def _ti(context: Mapping[str, Any]) -> Any:
    return context.get("ti") or context.get("task_instance")


def task_failure_line(context: Mapping[str, Any]) -> str:
    """One line for a failed task: DAG, task (and map index), run, try, and the exception's masked line."""
    ti = _ti(context)
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task = getattr(ti, "task_id", "?")
    map_index = getattr(ti, "map_index", -1)
    if map_index is not None and map_index >= 0:
        task = f"{task}[{map_index}]"
    run_id = context.get("run_id") or getattr(ti, "run_id", "?")
    exc = context.get("exception")
    tries = getattr(ti, "max_tries", None)
    attempt = f"try {getattr(ti, 'try_number', '?')}"
    if type(exc).__name__ == "AirflowFailException":  # recvae_task's user error: failed without its retries
        attempt += ", not retried"
    elif isinstance(tries, int):
        attempt += f" of {tries + 1}"
    return f"recvae: task {dag_id}.{task} failed in run {run_id} ({attempt}): {error_line(exc)}"


def dag_failure_line(context: Mapping[str, Any]) -> str:
    """One line for a failed DAG run: DAG, run, reason and the last failed task."""
    ti = _ti(context)
    dag_id = getattr(context.get("dag"), "dag_id", None) or getattr(ti, "dag_id", "?")
    line = f"recvae: run {context.get('run_id') or getattr(ti, 'run_id', '?')} of {dag_id} failed"
    if context.get("reason"):
        line += f" ({context['reason']})"
    if ti is not None:
        line += f"; last failed task {getattr(ti, 'task_id', '?')} (try {getattr(ti, 'try_number', '?')})"
    return line


def deadline_line(context: Mapping[str, Any]) -> str:
    """One line for a missed deadline, from the callback's context (the DAG run as the REST API shows it)."""
    run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    return (f"recvae: run {run.get('dag_run_id', '?')} of {run.get('dag_id', '?')} missed its deadline "
            f"{deadline.get('deadline_time', '?')} (queued at {run.get('queued_at', '?')}, "
            f"state {run.get('state', '?')})")


def report_task_failure(context: Mapping[str, Any]) -> str:
    """Log the failed task's summary line and send it as a notice when one is configured."""
    return _report(context, task_failure_line(context))


def report_dag_failure(context: Mapping[str, Any]) -> str:
    """Log the failed run's summary line and send it as a notice when one is configured."""
    return _report(context, dag_failure_line(context))


def report_deadline_missed(context: Mapping[str, Any]) -> str:
    """Log the missed deadline's summary line and send it as a notice when one is configured."""
    return _report(context, deadline_line(context))


def _report(context: Mapping[str, Any], line: str) -> str:
    logger.error("%s", line)
    try:
        notify(context, line)
    except Exception as exc:  # a callback never fails the run it reports on
        logger.warning("could not send the failure notice: %s", error_line(exc))
    return line


# ------------------------------------------------------------------------------------------ notices


def _variable(name: str) -> str | None:
    try:
        from airflow.sdk import Variable

        return Variable.get(name, default=None)
    except Exception as exc:  # no Variable backend reachable: notices are best effort
        logger.info("Variable %s not readable (%s)", name, error_line(exc))
        return None


def notify_settings(context: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """(SMTP Connection id, recipients) for failure notices: the run's params `notify_conn_id` and `notify_to`,
    else the Variables `recvae_notify_conn_id` and `recvae_notify_to` (comma-separated)."""
    params = context.get("params") or {}
    run = context.get("dag_run")
    if not params and isinstance(run, Mapping):  # a deadline callback sees the run's conf, not its params
        params = run.get("conf") or {}
    conn_id = params.get("notify_conn_id") or _variable(NOTIFY_CONN_VARIABLE)
    to = params.get("notify_to") or _variable(NOTIFY_TO_VARIABLE) or ""
    if isinstance(to, str):
        to = re.split(r"[,;\s]+", to)
    return (str(conn_id) if conn_id else None), [str(a).strip() for a in to if str(a).strip()]


def notify(context: Mapping[str, Any], line: str) -> bool:
    """Send `line` through the installed SMTP provider's SmtpNotifier when a Connection and recipients are
    configured (see `notify_settings`); True when it was sent. The Connection holds host, port, credentials and
    the sender (`from_email` in its extra)."""
    conn_id, to = notify_settings(context)
    if not conn_id:
        return False
    if not to:
        logger.warning("failure notices: connection %s is set but no recipients (param notify_to or Variable %s)",
                       conn_id, NOTIFY_TO_VARIABLE)
        return False
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow.sdk import Connection

    sender = Connection.get(conn_id).extra_dejson.get("from_email")
    if not sender:
        logger.warning("failure notices: connection %s has no from_email in its extra; nothing sent", conn_id)
        return False
    # Every field given and notify() called directly: nothing is rendered as a template (an error message may hold
    # "{{", and a DAG callback's context may hold a serialized DAG, which has no template environment).
    # `context` is the callback's Airflow context (for a deadline callback a plain dict), hence the cast
    SmtpNotifier(to=to, from_email=sender, smtp_conn_id=conn_id, subject=line[:SUBJECT_MAX],
                 html_content=f"<pre>{html.escape(line, quote=False)}</pre>").notify(cast("Context", dict(context)))
    logger.info("failure notice sent to %s through connection %s", ", ".join(to), conn_id)
    return True


# ------------------------------------------------------------------------------------------ champion event


def champion_event_extra(decision: Mapping[str, Any], snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """What the champion asset event carries: the exact version promoted (name, version, `models:/NAME/VERSION`),
    its run, the snapshot it was validated on and its validation NDCG@100."""
    name, version = decision["model_name"], str(decision["version"])
    return {"model_name": name, "version": version, "model_uri": f"models:/{name}/{version}",
            "run_id": decision.get("run_id"), "snapshot_id": snapshot.get("snapshot_id"),
            "snapshot_dir": snapshot.get("snapshot_dir"), "val_ndcg@100": decision.get("val_ndcg@100")}


def announce_champion(context: Mapping[str, Any], asset: Any, decision: Mapping[str, Any],
                      snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """Put the promoted version in the extra of the task's `asset` event (what schedules recvae_score)."""
    extra = champion_event_extra(decision, snapshot)
    context["outlet_events"][asset].extra = extra
    logger.info("announcing champion %s (snapshot %s)", extra["model_uri"], extra["snapshot_id"])
    return extra


def score_target(context: Mapping[str, Any], asset: Any) -> dict[str, Any]:
    """The model and snapshot a scoring run scores: the version whose promotion emitted the triggering `asset`
    event (the latest, if several were queued), on the snapshot it was validated on; for a run no event triggered
    (manual), the `model_uri` and `snapshot_dir` params. A `snapshot_dir` param always wins."""
    params = context.get("params") or {}
    triggering = context.get("triggering_asset_events") or {}
    events = list(triggering.get(asset, [])) if triggering else []
    usable = [e for e in events if (e.extra or {}).get("model_uri")]
    if not usable:
        if events:
            logger.warning("%d champion event(s) carry no model_uri (announced by an older recvae_retrain?); "
                           "scoring %s", len(events), params.get("model_uri"))
        return {"model_uri": params.get("model_uri"), "snapshot_dir": params.get("snapshot_dir"), "event": None}
    event = max(usable, key=lambda e: e.timestamp)
    if len(usable) > 1:
        logger.warning("%d promotions triggered this run; scoring the latest, %s (the others were superseded)",
                       len(usable), event.extra["model_uri"])
    extra = dict(event.extra)
    logger.info("scoring %s, promoted by %s run %s", extra["model_uri"], event.source_dag_id, event.source_run_id)
    return {"model_uri": extra["model_uri"], "snapshot_dir": params.get("snapshot_dir") or extra.get("snapshot_dir"),
            "event": {**extra, "source_dag_id": event.source_dag_id, "source_run_id": event.source_run_id}}


def tune_study_name(context: Mapping[str, Any]) -> str:
    """The study of this DAG run's tune: one per run, so a retry of a task rejoins it and next week starts anew."""
    return re.sub(r"[^A-Za-z0-9_.:-]+", "_", f"{context['dag'].dag_id}-{context['run_id']}")[:200]


def tune_storage(params: Mapping[str, Any]) -> str:
    """The study's database: the `tune_conn_id` Connection, else $RECVAE_TUNE_STORAGE, else SQLite under the home."""
    from recvae import paths
    from recvae.orchestration.variables import db_url_from_connection

    return db_url_from_connection(params.get("tune_conn_id"), fallback=paths.default_tuning_storage)

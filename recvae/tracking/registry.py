"""The model registry: versions and the aliases (champion, challenger, previous) that decide what is served."""

from __future__ import annotations

import logging
import re

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from recvae.tracking.store import configure_if_needed

logger = logging.getLogger(__name__)


CHAMPION = "champion"


CHALLENGER = "challenger"


PREVIOUS = "previous"  # the champion before the last promote(), for rollback


class ModelNotFoundError(LookupError):
    """A model URI, registered model, version or alias does not exist."""


class RegistryInputError(ValueError):
    """A version number or alias name that the model registry would refuse."""


def register(run_id: str, name: str, artifact: str = "model") -> str:
    """Register the model logged as `artifact` in run `run_id` under `name`; returns the new version."""
    configure_if_needed()
    mv = mlflow.register_model(logged_model_uri(run_id, artifact), name)
    logger.info("registered runs:/%s/%s as %s version %s", run_id, artifact, name, mv.version)
    return str(mv.version)


def logged_model_uri(run_id: str, artifact: str = "model") -> str:
    """models:/MODEL_ID of the latest model named `artifact` logged in run `run_id` (MLflow 3 logged models)."""
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ModelNotFoundError(f"no run {run_id!r} in {mlflow.get_tracking_uri()}") from exc
    found = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"name = '{artifact}' AND source_run_id = '{run_id}'"
    )
    models = [m for m in found if m.source_run_id == run_id]
    if not models:
        raise ModelNotFoundError(f"run {run_id} has no logged model named {artifact!r}")
    return f"models:/{max(models, key=lambda m: m.creation_timestamp).model_id}"


def set_alias(name: str, alias: str, version: str | int) -> None:
    """Point `alias` of registered model `name` at `version`."""
    configure_if_needed()
    MlflowClient().set_registered_model_alias(name, alias, str(version))


def get_alias(name: str, alias: str) -> str | None:
    """The version `alias` points to, or None when the model or the alias does not exist."""
    configure_if_needed()
    client = MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


_ALIAS = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


def check_alias(alias: str) -> str:
    """`alias` if the registry accepts it as an alias name, else RegistryInputError saying what is allowed."""
    if not _ALIAS.match(alias or ""):
        raise RegistryInputError(f"invalid alias {alias!r}: use 1 to 255 letters, digits, underscores (_) and "
                                 "dashes (-), e.g. champion")
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise RegistryInputError(f"alias {alias!r} is reserved by MLflow ('latest' and v<number> name versions)")
    return alias


def check_version(name: str, version: str | int) -> str:
    """The registered version `version` of model `name` as text; RegistryInputError when it is not a number,
    ModelNotFoundError (naming models:/NAME/VERSION and the versions there are) when it does not exist."""
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise RegistryInputError(f"version must be a registered version number (1, 2, ...); got {str(version)!r}")
    text = str(int(text))
    uri = f"models:/{name}/{text}"
    configure_if_needed()
    client = MlflowClient()
    require_registered_model(client, name, uri)
    try:
        client.get_model_version(name, text)
    except MlflowException as exc:
        try:
            known = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        except MlflowException:
            known = []
        raise ModelNotFoundError(f"{uri}: model {name!r} has no version {text}; versions: "
                                 f"{', '.join(map(str, known)) or 'none'}") from exc
    return text


def promote(name: str, version: str | int, alias: str = CHAMPION) -> str | None:
    """Point `alias` (champion) at `version`, keeping the old target as `previous`; returns the old version.
    The alias and version are checked first (RegistryInputError, ModelNotFoundError), so nothing moves on bad input."""
    check_alias(alias)
    version = check_version(name, version)
    old = get_alias(name, alias)
    if old is not None and old != str(version):
        set_alias(name, PREVIOUS, old)
    set_alias(name, alias, version)
    logger.info("%s@%s: %s -> %s", name, alias, old, version)
    return old


def require_registered_model(client: MlflowClient, name: str, uri: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        raise ModelNotFoundError(f"{uri}: no registered model {name!r} in {mlflow.get_registry_uri()}") from exc

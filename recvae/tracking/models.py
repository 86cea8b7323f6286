"""A recommender as a logged MLflow pyfunc (signature, requirements, the package as code) and loaded back from any
model URI."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

from recvae.models.base import META_FILE, Recommender, load_recommender, read_meta
from recvae.models.kinds import EXTRA_REQUIREMENTS
from recvae.serving.pyfunc import ARTIFACT_KEY, DEFAULT_TOP_N
from recvae.tracking.registry import ModelNotFoundError, require_registered_model
from recvae.tracking.runs import package_version
from recvae.tracking.store import configure_if_needed
from recvae.urls import mask_url

logger = logging.getLogger(__name__)


TAG_MODEL_KIND = "model_kind"


MODEL_FILE = Path(__file__).resolve().parents[1] / "serving" / "pyfunc.py"


PACKAGE_DIR = Path(__file__).resolve().parents[1]  # logged with every model (code_paths)


# What loading and scoring a model imports (recvae.serving.pyfunc, recvae.models.base and the kind's module);
# tests/serving/test_serving.py checks the list against what a load really imports.
_BASE_REQUIREMENTS = ("mlflow", "torch", "numpy", "scipy", "pandas", "pyarrow", "threadpoolctl")




def id_type(values: Any) -> str:
    """MLflow column type of raw ids: 'long' for integers, 'double' for floats, else 'string'."""
    kind = np.asarray(values).dtype.kind
    return "long" if kind in "iu" else "double" if kind == "f" else "string"


def model_signature(rec: Recommender, user_type: str | None = None) -> ModelSignature:
    """Input (user: `user_type`, item: the model's raw item id type), output (user, rank, item, score), param top_n.

    `user_type` is the snapshot's user id type ('string' or 'long'); without it the user column is untyped, which
    JSON requests accept but CSV requests cannot be parsed by (the server needs a pandas type per column)."""
    item_type = id_type(rec.items.raw_ids) if rec.items is not None else "long"
    user: Any = user_type or AnyType()
    return ModelSignature(
        inputs=Schema([ColSpec(user, "user"), ColSpec(item_type, "item")]),
        outputs=Schema([ColSpec(user, "user"), ColSpec("long", "rank"), ColSpec(item_type, "item"),
                        ColSpec("double", "score")]),
        params=ParamSchema([ParamSpec("top_n", "long", DEFAULT_TOP_N),
                            # business filters (recvae.serving.filters): empty lists filter nothing
                            ParamSpec("allow_items", item_type, [], (-1,)),
                            ParamSpec("deny_items", item_type, [], (-1,)),
                            # what the pyfunc returns (recvae.serving.pyfunc.OUTPUTS): lists by default
                            ParamSpec("output", "string", "topn")]),
    )


def _input_example(rec: Recommender, user_type: str | None) -> pd.DataFrame:
    n = min(3, rec.n_items)
    raw = rec.items.raw_ids[:n] if rec.items is not None else np.arange(n, dtype=np.int64)
    user: Any = {"long": 0, "double": 0.0}.get(user_type or "string", "example-user")
    return pd.DataFrame({"user": [user] * n, "item": raw})


def _kinds(rec: Recommender) -> set[str]:
    """`rec`'s kind and, for an ensemble, its members' kinds."""
    out = {rec.kind}
    for member in getattr(rec, "members", ()):
        out |= _kinds(member)
    return out


def default_pip_requirements(rec: Recommender | None = None) -> list[str]:
    """Pinned requirements of the served pyfunc: what loading and scoring `rec` imports (recvae itself is logged
    with the model); implicit only for an ALS model (or an ensemble holding one)."""
    dists = list(_BASE_REQUIREMENTS)
    for kind in sorted(_kinds(rec)) if rec is not None else ():
        dists += [d for d in EXTRA_REQUIREMENTS.get(kind, ()) if d not in dists]
    reqs = []
    for dist in dists:
        try:
            version = importlib.metadata.version(dist).split("+")[0]  # drop local tags like +cpu
        except importlib.metadata.PackageNotFoundError:
            continue
        reqs.append(f"{dist}=={version}")
    return reqs


def log_recommender(
    rec: Recommender,
    *,
    name: str = "model",
    registered_model_name: str | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    pip_requirements: list[str] | None = None,
    input_example: bool = True,
    snapshot: Any | None = None,
) -> ModelInfo:
    """Log `rec` as a self-contained pyfunc model (models from code, the recvae package logged with it) in the
    active run, optionally registering it. `snapshot`, the data it was trained on, gives the model's snapshot id
    and the user id type of its signature."""
    run = mlflow.active_run()
    meta = {**(extra_meta or {})}
    user_type = None
    if snapshot is not None:
        meta.setdefault("snapshot_id", snapshot.snapshot_id)
        user_type = id_type(snapshot.users.raw_ids)
    if run is not None:
        meta.setdefault("run_id", run.info.run_id)
    with tempfile.TemporaryDirectory(prefix="recvae-model-") as tmp:
        rec_dir = rec.save(Path(tmp) / ARTIFACT_KEY, **meta)
        example = (_input_example(rec, user_type), {"top_n": 10}) if input_example and rec.n_items > 0 else None
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=MODEL_FILE,
            artifacts={ARTIFACT_KEY: str(rec_dir)},
            # The package travels with the model (MLflow puts code/ first on sys.path when loading), so the model
            # loads and serves where recvae is not installed, and always with the code it was logged with.
            code_paths=[str(PACKAGE_DIR)],
            signature=model_signature(rec, user_type),
            input_example=example,
            pip_requirements=pip_requirements if pip_requirements is not None else default_pip_requirements(rec),
            metadata={"recvae_kind": rec.kind, "recvae_version": package_version(), **_json_safe(meta)},
            registered_model_name=registered_model_name,
        )
    if run is not None:
        mlflow.set_tag(TAG_MODEL_KIND, rec.kind)
    logger.info("logged %s model %s (%s)", rec.kind, info.model_uri, info.model_id)
    return info


def _json_safe(d: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(d), default=str))


@dataclass
class LoadedModelInfo:
    """Where a loaded recommender came from."""

    uri: str
    kind: str
    snapshot_id: str | None = None
    run_id: str | None = None
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # the recommender.json contents


_MODELS_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)/?$")


_MODELS_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)/?$")


_RUNS = re.compile(r"^runs:/(?P<run_id>[^/]+)(/.*)?$")


def _resolve_registry(uri: str) -> tuple[str | None, str | None, str | None, str | None]:
    """(name, version, alias, run_id) of a registry or runs URI; ModelNotFoundError if it does not exist."""
    client = MlflowClient()
    if m := _MODELS_ALIAS.match(uri):
        name, alias = m["name"], m["alias"]
        require_registered_model(client, name, uri)
        try:
            mv = client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            known = sorted(client.get_registered_model(name).aliases)
            raise ModelNotFoundError(
                f"{uri}: model {name!r} has no alias {alias!r}; aliases: {', '.join(known) or 'none'}"
            ) from exc
        return name, str(mv.version), alias, mv.run_id
    if m := _MODELS_VERSION.match(uri):
        name, version = m["name"], m["version"]
        require_registered_model(client, name, uri)
        try:
            mv = client.get_model_version(name, version)
        except MlflowException as exc:
            raise ModelNotFoundError(f"{uri}: model {name!r} has no version {version}") from exc
        return name, str(mv.version), None, mv.run_id
    if m := _RUNS.match(uri):
        try:
            client.get_run(m["run_id"])
        except MlflowException as exc:
            raise ModelNotFoundError(f"{uri}: no run {m['run_id']!r} in {mlflow.get_tracking_uri()}") from exc
        return None, None, None, m["run_id"]
    return None, None, None, None


def _find_recommender_dir(model_dir: Path) -> Path:
    """The saved recommender inside a downloaded MLflow model (or `model_dir` itself if it is one)."""
    if (model_dir / META_FILE).exists():
        return model_dir
    mlmodel = model_dir / "MLmodel"
    if mlmodel.exists():
        conf = mlflow.models.Model.load(str(mlmodel)).flavors.get("python_function", {})
        rel = conf.get("artifacts", {}).get(ARTIFACT_KEY, {}).get("path")
        if rel and (model_dir / rel / META_FILE).exists():
            return model_dir / rel
    # a downloaded model holds exactly one saved recommender; anything else (the current directory, a folder of
    # several models) must not be guessed at
    found = sorted(model_dir.glob(f"*/{META_FILE}")) + sorted(model_dir.glob(f"*/*/{META_FILE}"))
    if len(found) != 1:
        raise ModelNotFoundError(f"{model_dir}: neither a saved recommender nor an MLflow model holding one")
    return found[0].parent


def _load_model_dir(uri: str, model_dir: Path) -> tuple[Recommender, dict[str, Any]]:
    """The recommender in a model folder and its metadata; errors name `uri` and the file inside the model (a
    downloaded model's temporary folder means nothing to the user)."""
    from recvae.models.base import ModelLoadError

    def where(exc: BaseException) -> str:
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        return f"{uri}: {text.replace(str(model_dir) + os.sep, '').replace(str(model_dir), '.')}"

    try:
        rec_dir = _find_recommender_dir(model_dir)
        meta = read_meta(rec_dir)
        return load_recommender(rec_dir), meta
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(where(exc)) from exc
    except (ValueError, KeyError, OSError) as exc:  # ModelLoadError, bad JSON or Parquet, unreadable files
        raise ModelLoadError(where(exc)) from exc


def load_recommender_from_uri(
    uri: str | Path, dst_dir: str | Path | None = None
) -> tuple[Recommender, LoadedModelInfo]:
    """Load a Recommender from models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model, an MLflow URI or a
    directory."""
    uri = str(uri).strip()
    if not uri:
        raise ModelNotFoundError("empty model URI: give models:/NAME@ALIAS, models:/NAME/VERSION, "
                                 "runs:/RUN_ID/model or a model folder")
    scheme = uri.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri) else ""
    if scheme and scheme not in ("models", "runs", "file") and len(scheme) > 1:  # one letter: a Windows drive
        raise ModelNotFoundError(f"{mask_url(uri)}: unsupported model URI scheme {scheme!r}; give models:/NAME@ALIAS, "
                                 "models:/NAME/VERSION, runs:/RUN_ID/model or a model folder")
    local = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
    name = version = alias = run_id = None
    tmp: str | None = None
    if "://" not in uri and ":/" not in uri:
        if not local.exists():
            raise ModelNotFoundError(f"{uri}: no such model directory")
        model_dir = local
    else:
        configure_if_needed()
        name, version, alias, run_id = _resolve_registry(uri)
        if dst_dir is None:
            tmp = tempfile.mkdtemp(prefix="recvae-download-")
        try:
            model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst_dir or tmp)))
        except MlflowException as exc:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            raise ModelNotFoundError(f"{uri}: cannot download the model ({exc.message})") from exc
    try:
        rec, meta = _load_model_dir(uri, model_dir)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    info = LoadedModelInfo(
        uri=uri,
        kind=meta.get("kind", "unknown"),
        snapshot_id=meta.get("snapshot_id"),
        run_id=run_id or meta.get("run_id"),
        name=name,
        version=version,
        alias=alias,
        meta=meta,
    )
    logger.info("loaded %s model from %s (snapshot %s)", info.kind, uri, info.snapshot_id)
    return rec, info

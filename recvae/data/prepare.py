"""Source -> validated interactions -> preprocessing -> stable id maps -> split -> saved Snapshot."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recvae.config import Config, ConfigError
from recvae.data import datasets, readers
from recvae.data.preprocess import preprocess
from recvae.data.readers import Source
from recvae.data.snapshot import Snapshot
from recvae.data.split import reindex_snapshot, split
from recvae.data.validate import Validator
from recvae.log import progress

logger = logging.getLogger(__name__)

DEFAULT_SOURCE = Source(format="synthetic", dataset="synthetic", synthetic={"preset": "small", "seed": 0})


def as_source(source: Source | str | Path | None) -> Source:
    """A resolved Source from a Source, a dataset name, or a file/folder path; None is the synthetic 'small'
    preset. A Source without a format is resolved from its `dataset`, else guessed from its `path`."""
    if source is None:
        return DEFAULT_SOURCE
    if isinstance(source, Source):
        if source.format is not None:
            return source
        if source.dataset:
            return datasets.resolve(source.dataset)
        if source.path:
            fields = {f.name: getattr(source, f.name) for f in dataclasses.fields(source) if f.name not in ("format", "path")}
            return Source.from_path(source.path, **fields)
        return DEFAULT_SOURCE
    text = str(source)
    if isinstance(source, str) and text in datasets.REGISTRY:
        return datasets.resolve(text)
    path = Path(text).expanduser()
    if path.exists():
        return Source.from_path(path)
    raise datasets.DatasetNotFoundError(
        f"{text!r} is neither a dataset name ({', '.join(datasets.names())}) nor an existing file or folder"
    )


def default_quarantine(out_dir: str | Path) -> Path:
    """Where lenient mode writes bad rows when no path is given: next to the snapshot folder."""
    out = Path(out_dir)
    return out.parent / f"{out.name}.quarantine.csv"


def check_quarantine(path: str | Path, source: Source, *, force: bool = False) -> None:
    """Refuse a quarantine path that is a folder, an input file, or (unless `force`) any other existing file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"quarantine {path} is a folder; give a file (.csv or .parquet)")
    if not path.parent.is_dir() and path.parent.exists():
        raise ConfigError(f"quarantine {path}: {path.parent} is not a folder")
    if not path.exists():
        return
    if any(path.resolve() == f.resolve() for f in readers.source_files(source)):
        raise ConfigError(f"quarantine {path} is an input file of this source; give another file")
    if not force:
        raise ConfigError(f"quarantine file {path} already exists; give another file, or --force to overwrite it")


def prepare(
    source: Source | str | Path | None = None,
    out_dir: str | Path | None = None,
    config: Config | None = None,
    previous: Snapshot | str | Path | None = None,
    *,
    quarantine: str | Path | None = None,
    force: bool = False,
) -> Snapshot:
    """Read, validate, preprocess and split `source`, and save the snapshot to `out_dir` (if given).

    With `previous` (a Snapshot or its folder), its user and item id maps are extended, so users and items
    it knows keep their indices. In lenient mode (config.data.lenient) bad rows go to `quarantine`
    (default: `<out_dir>.quarantine.csv`); an existing `quarantine` file is only overwritten with `force`.
    The manifest records the source, its fingerprint, the parameters, counts per step, the validation
    report and the time of each stage.
    """
    config = config or Config()
    config.data.validate()
    config.split.validate()
    src = as_source(source)
    if config.data.lenient:
        if quarantine is not None:
            check_quarantine(quarantine, src, force=force)
        elif out_dir is not None:
            quarantine = default_quarantine(out_dir)  # named after the snapshot: ours to rewrite on a rerun
            check_quarantine(quarantine, src, force=True)
    prev = Snapshot.load(previous) if isinstance(previous, (str, Path)) else previous
    state: dict[str, Any] = {}
    timings: dict[str, float] = {}
    unit = "row" if src.format in ("parquet", "sql", "synthetic") else "line"
    path = src.path
    if src.format == "sql" and path:  # a database URL: its password must reach no log, manifest or report
        from recvae.urls import mask_url

        path = mask_url(path)
    validator = Validator(path or src.dataset or src.format, lenient=config.data.lenient, unit=unit)
    label = src.dataset or path or src.format

    def read() -> None:
        data = readers.read(src, validator)
        n = data.train.nnz if isinstance(data, Snapshot) else len(data)
        state["data"] = data
        state["report"] = validator.finish(n, quarantine)

    def clean() -> None:
        if isinstance(state["data"], Snapshot):
            return
        state["data"], state["stats"] = preprocess(state["data"], config.data, implicit=src.is_implicit, source=label)

    def make_split() -> None:
        users = prev.users if prev is not None else None
        items = prev.items if prev is not None else None
        data = state["data"]
        if isinstance(data, Snapshot):
            state["snapshot"] = reindex_snapshot(data, users, items)
        else:
            state["snapshot"] = split(data, config.split, users=users, items=items)
        state.pop("data")

    stages: list[tuple[str, Callable[[], None]]] = [("read", read), ("preprocess", clean), ("split", make_split)]
    if out_dir is not None:
        stages.append(("save", lambda: _save(state, out_dir, src, config, prev, timings)))
    for name, fn in progress(stages, desc="prepare", unit="stage"):
        t0 = time.perf_counter()
        logger.info("prepare %s: %s", label, name)
        fn()
        timings[name] = round(time.perf_counter() - t0, 3)
    snap: Snapshot = state["snapshot"]
    if out_dir is None:
        snap.manifest.update(_manifest(state, src, config, prev, timings))
    snap.manifest["timings_s"] = dict(timings)  # in memory: the saved manifest cannot include its own save
    logger.info("prepared %s: snapshot %s (%s)", label, snap.snapshot_id, ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return snap


def _manifest(state: dict[str, Any], src: Source, config: Config, prev: Snapshot | None, timings: dict[str, float]) -> dict[str, Any]:
    snap: Snapshot = state["snapshot"]
    report = state.get("report")
    total = sum(m.nnz for m in snap.matrices.values()) - (
        snap.matrices["test_tr"].nnz if snap.manifest.get("protocol") in ("lightgcn", "temporal") and "test_tr" in snap.matrices else 0
    )
    n_cells = max(1, len(snap.users) * snap.n_items)
    already_split = src.gives_snapshot
    n_rows = report.n_rows if report is not None else None
    return {
        "source": src.describe(),
        "source_fingerprint": readers.fingerprint(src, n_rows),
        "parameters": {"note": f"{src.format} is already split; data and split parameters do not apply"}
        if already_split
        else {"data": _asdict(config.data), "split": _asdict(config.split)},
        "preprocess": state.get("stats", {}),
        "validation": report.to_dict() if report is not None else None,
        "previous_snapshot": prev.snapshot_id if prev is not None else None,
        "interactions": int(total),
        "density": float(total / n_cells),
        "timings_s": dict(timings),
    }


def _save(state: dict[str, Any], out_dir: str | Path, src: Source, config: Config, prev: Snapshot | None,
          timings: dict[str, float]) -> None:
    snap: Snapshot = state["snapshot"]
    snap.save(out_dir, extra=_manifest(state, src, config, prev, timings))


def _asdict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)

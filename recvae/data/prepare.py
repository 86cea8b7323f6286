"""Source -> validated interactions -> preprocessing -> stable id maps -> split -> saved Snapshot."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from recvae.config import Config, ConfigError
from recvae.data import datasets, readers
from recvae.data.preprocess import preprocess
from recvae.data.readers import Source
from recvae.data.snapshot import Snapshot
from recvae.data.split import reindex_snapshot, split
from recvae.data.validate import ValidationReport, Validator
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
            fields = {f.name: getattr(source, f.name) for f in dataclasses.fields(source)
                      if f.name not in ("format", "path")}
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
        quarantine = _quarantine_path(quarantine, out_dir, src, force=force)
    prev = Snapshot.load(previous) if isinstance(previous, (str, Path)) else previous
    run = _Preparation(src, config, prev, quarantine)
    stages: list[tuple[str, Callable[[], None]]] = [
        ("read", run.read), ("preprocess", run.preprocess), ("split", run.split)
    ]
    if out_dir is not None:
        stages.append(("save", lambda: run.save(out_dir)))
    for name, fn in progress(stages, desc="prepare", unit="stage"):
        t0 = time.perf_counter()
        logger.info("prepare %s: %s", run.label, name)
        fn()
        run.timings[name] = round(time.perf_counter() - t0, 3)
    snap = run.snapshot
    if out_dir is None:
        snap.manifest.update(run.manifest())
    snap.manifest["timings_s"] = dict(run.timings)  # in memory: the saved manifest cannot include its own save
    logger.info("prepared %s: snapshot %s (%s)", run.label, snap.snapshot_id,
                ", ".join(f"{k} {v:.1f}s" for k, v in run.timings.items()))
    return snap


def _quarantine_path(quarantine: str | Path | None, out_dir: str | Path | None, src: Source, *, force: bool
                     ) -> str | Path | None:
    """Where lenient mode writes bad rows: `quarantine` (checked), else next to the snapshot, else nowhere."""
    if quarantine is not None:
        check_quarantine(quarantine, src, force=force)
        return quarantine
    if out_dir is None:
        return None
    path = default_quarantine(out_dir)  # named after the snapshot: ours to rewrite on a rerun
    check_quarantine(path, src, force=True)
    return path


class _Preparation:
    """The stages of one `prepare` call and what each hands to the next."""

    def __init__(self, src: Source, config: Config, prev: Snapshot | None, quarantine: str | Path | None) -> None:
        self.src, self.config, self.prev, self.quarantine = src, config, prev, quarantine
        path = src.shown_path  # a database URL's password must reach no log, manifest or report
        self.validator = Validator(path or src.dataset or src.format or "data", lenient=config.data.lenient,
                                   unit=src.position_unit)
        self.label = src.dataset or path or src.format
        self.timings: dict[str, float] = {}
        self.data: pd.DataFrame | Snapshot | None = None
        self.report: ValidationReport | None = None
        self.stats: dict[str, Any] = {}
        self._snapshot: Snapshot | None = None

    @property
    def snapshot(self) -> Snapshot:
        """The split snapshot (after the split stage)."""
        if self._snapshot is None:
            raise RuntimeError("prepare: no snapshot before the split stage")
        return self._snapshot

    def read(self) -> None:
        """Read and validate the source; in lenient mode bad rows go to the quarantine."""
        data = readers.read(self.src, self.validator)
        n = data.train.nnz if isinstance(data, Snapshot) else len(data)
        self.data = data
        self.report = self.validator.finish(n, self.quarantine)

    def preprocess(self) -> None:
        """Duplicates, threshold and minimum counts (already-split sources skip it)."""
        if isinstance(self.data, pd.DataFrame):
            self.data, self.stats = preprocess(self.data, self.config.data, implicit=self.src.is_implicit,
                                               source=self.label)

    def split(self) -> None:
        """Split interactions (or re-index an already-split source) onto the previous id maps, if any."""
        users = self.prev.users if self.prev is not None else None
        items = self.prev.items if self.prev is not None else None
        if isinstance(self.data, Snapshot):
            self._snapshot = reindex_snapshot(self.data, users, items)
        elif self.data is not None:
            self._snapshot = split(self.data, self.config.split, users=users, items=items)
        self.data = None

    def save(self, out_dir: str | Path) -> None:
        """Save the snapshot with its manifest (timings of the stages before saving)."""
        self.snapshot.save(out_dir, extra=self.manifest())

    def manifest(self) -> dict[str, Any]:
        """What the manifest records beyond the snapshot itself: source, parameters, counts, validation, timings."""
        snap, src, config, report = self.snapshot, self.src, self.config, self.report
        total = sum(m.nnz for m in snap.matrices.values())
        if snap.manifest.get("protocol") in ("lightgcn", "temporal") and "test_tr" in snap.matrices:
            total -= snap.matrices["test_tr"].nnz  # these test users' fold-in rows are their train rows, counted once
        n_cells = max(1, len(snap.users) * snap.n_items)
        n_rows = report.n_rows if report is not None else None
        return {
            "source": src.describe(),
            "source_fingerprint": readers.fingerprint(src, n_rows),
            "parameters": {"note": f"{src.format} is already split; data and split parameters do not apply"}
            if src.gives_snapshot
            else {"data": dataclasses.asdict(config.data), "split": dataclasses.asdict(config.split)},
            "preprocess": self.stats,
            "validation": report.to_dict() if report is not None else None,
            "previous_snapshot": self.prev.snapshot_id if self.prev is not None else None,
            "interactions": int(total),
            "density": float(total / n_cells),
            "timings_s": dict(self.timings),
        }

"""A dataset snapshot: CSR matrices per split part, id maps and a manifest with content hashes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from recvae.data.idmap import IdMap
from recvae.digest import sha256_file

FORMAT_VERSION = 1
# Rows of *_tr and *_te belong to the same users in the same order.
PARTS = ("train", "validation_tr", "validation_te", "test_tr", "test_te")
HELDOUT = {"validation": ("validation_tr", "validation_te"), "test": ("test_tr", "test_te")}


class SnapshotError(ValueError):
    """A snapshot on disk is missing, corrupt, or does not match what it is used with."""


@dataclass
class Snapshot:
    """Interaction matrices (users x items, CSR, float32 ones) of each split part, and the id maps."""

    matrices: dict[str, sp.csr_matrix]
    rows: dict[str, np.ndarray]  # part -> user index (into `users`) of each matrix row
    users: IdMap
    items: IdMap
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        n_items = len(self.items)
        for name, m in self.matrices.items():
            if name not in PARTS:
                raise SnapshotError(f"unknown part {name!r}; parts are {', '.join(PARTS)}")
            if m.shape[1] != n_items:
                raise SnapshotError(f"part {name}: {m.shape[1]} columns but {n_items} items in the id map")
            if len(self.rows[name]) != m.shape[0]:
                raise SnapshotError(f"part {name}: {m.shape[0]} rows but {len(self.rows[name])} user indices")

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def train(self) -> sp.csr_matrix:
        return self.matrices["train"]

    @property
    def snapshot_id(self) -> str:
        return self.manifest.get("snapshot_id") or compute_snapshot_id(self)

    def has(self, split: str) -> bool:
        """Whether held-out `split` ('validation' or 'test') exists with at least one user."""
        tr, _ = HELDOUT[split]
        return tr in self.matrices and self.matrices[tr].shape[0] > 0

    def heldout(self, split: str) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(fold-in, held-out) matrices of 'validation' or 'test' users."""
        if not self.has(split):
            raise SnapshotError(f"snapshot {self.snapshot_id} has no {split} users")
        tr, te = HELDOUT[split]
        return self.matrices[tr], self.matrices[te]

    def history(self) -> tuple[np.ndarray, sp.csr_matrix]:
        """(user indices, every known interaction of those users): what a batch job treats as seen."""
        blocks, users = [], []
        if "train" in self.matrices:
            blocks.append(self.matrices["train"])
            users.append(self.rows["train"])
        for tr, te in HELDOUT.values():
            if tr in self.matrices:
                blocks.append((self.matrices[tr] + self.matrices[te]).tocsr())
                users.append(self.rows[tr])
        m = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, self.n_items), dtype=np.float32)
        m.data[:] = 1.0
        return np.concatenate(users) if users else np.zeros(0, np.int64), m

    def summary(self) -> dict[str, Any]:
        """Counts per part: users, interactions, density."""
        out: dict[str, Any] = {}
        for name, m in self.matrices.items():
            out[name] = {
                "users": int(m.shape[0]),
                "interactions": int(m.nnz),
                "density": float(m.nnz / max(1, m.shape[0] * m.shape[1])),
            }
        return out

    def save(self, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """Write atomically to `path` (a directory); an existing identical snapshot is kept as is."""
        path = Path(path)
        sid = compute_snapshot_id(self)
        existing = _existing_manifest(path, sid)
        if existing is not None:
            self.manifest = existing
            self.path = path
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            manifest = self._write(tmp, sid, extra or {})
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.manifest = manifest
        self.path = path
        return path

    def _write(self, folder: Path, sid: str, extra: dict[str, Any]) -> dict[str, Any]:
        """Write every file and the manifest listing their sha256 into `folder`; returns the manifest."""
        for name, m in self.matrices.items():
            sp.save_npz(folder / f"{name}.npz", m.tocsr(), compressed=True)
            np.save(folder / f"{name}_rows.npy", np.asarray(self.rows[name], dtype=np.int64))
        self.users.save(folder / "users.parquet")
        self.items.save(folder / "items.parquet")
        files = {f.name: sha256_file(f) for f in sorted(folder.iterdir())}
        manifest = {
            **{k: v for k, v in self.manifest.items() if k not in ("files", "snapshot_id", "counts")},
            **extra,
            "format_version": FORMAT_VERSION,
            "snapshot_id": sid,
            "created_at": self.manifest.get("created_at") or datetime.now(UTC).isoformat(),
            "n_users": len(self.users),
            "n_items": self.n_items,
            "counts": self.summary(),
            "files": files,
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        return manifest

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> Snapshot:
        """Read a snapshot directory; with `verify`, every file's sha256 must match the manifest. A missing,
        unlisted, changed or unreadable file raises SnapshotError naming it."""
        path = Path(path)
        manifest = read_manifest(path)
        files: dict[str, Any] = manifest["files"]
        for fname, digest in files.items():
            f = path / fname
            if not f.is_file():
                raise SnapshotError(f"{path}: file {fname} listed in the manifest is missing")
            if verify:
                _check_sha256(f, digest)
        names = [n for n in PARTS if f"{n}.npz" in files or (path / f"{n}.npz").exists()]
        for fname in ["users.parquet", "items.parquet", *(f"{n}{end}" for n in names for end in (".npz", "_rows.npy"))]:
            if fname not in files:
                raise SnapshotError(f"{path / fname}: not listed in the manifest (an incomplete snapshot)")
        read = lambda fname, loader: _read_file(path / fname, loader, files[fname], checked=verify)  # noqa: E731
        matrices = {n: read(f"{n}.npz", lambda f: sp.load_npz(f).tocsr()) for n in names}
        rows = {n: read(f"{n}_rows.npy", _load_rows) for n in names}
        users, items = read("users.parquet", IdMap.load), read("items.parquet", IdMap.load)
        try:
            snap = cls(matrices=matrices, rows=rows, users=users, items=items, manifest=manifest, path=path)
        except SnapshotError as exc:  # shapes that do not fit together
            raise SnapshotError(f"{path}: {exc}") from exc
        if verify and manifest.get("snapshot_id") and compute_snapshot_id(snap) != manifest["snapshot_id"]:
            raise SnapshotError(f"{path}: content does not match snapshot_id {manifest['snapshot_id']} in the manifest")
        return snap


def _existing_manifest(path: Path, sid: str) -> dict[str, Any] | None:
    """The manifest of snapshot `sid` already saved at `path`, or None when `path` is free (absent or empty);
    any other content raises SnapshotError, so nothing there is overwritten."""
    if (path / "manifest.json").exists():
        try:
            existing = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{path / 'manifest.json'}: invalid JSON ({exc}); choose another --out") from exc
        if not isinstance(existing, dict):
            raise SnapshotError(f"{path / 'manifest.json'}: not a snapshot manifest; choose another --out")
        if existing.get("snapshot_id") == sid:
            return existing
        raise SnapshotError(
            f"{path} already holds snapshot {existing.get('snapshot_id')}, not {sid}; choose another --out"
        )
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise SnapshotError(f"{path} exists and is not an empty folder; choose another --out")
    return None


def interactions_matrix(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> sp.csr_matrix:
    """CSR (n_rows x n_cols) of float32 ones at (rows, cols), as a snapshot part holds; repeated pairs count once."""
    m = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
        shape=(n_rows, n_cols),
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    m.sort_indices()
    return m


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of snapshot folder `path`, checked to be a current-format object that lists its files."""
    mf = path / "manifest.json"
    if not mf.exists():
        raise SnapshotError(f"{path}: not a snapshot (no manifest.json)")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"{mf}: invalid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise SnapshotError(f"{mf}: not a snapshot manifest (expected a JSON object)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SnapshotError(f"{mf}: format_version {manifest.get('format_version')} (expected {FORMAT_VERSION})")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise SnapshotError(f"{mf}: the manifest lists no files (an incomplete snapshot; prepare it again)")
    for fname in files:
        if Path(fname).name != fname or fname in (".", ".."):  # only files of this folder, never a path out of it
            raise SnapshotError(f"{mf}: {fname!r} is not a file name of this folder")
    return manifest


_CHANGED = "{f}: sha256 does not match the manifest (file changed or corrupt)"
# What a damaged file raises from np.load, sp.load_npz or pd.read_parquet.
_UNREADABLE = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError, pa.ArrowException)


def _check_sha256(f: Path, digest: Any) -> None:
    if not isinstance(digest, str) or not digest:
        raise SnapshotError(f"{f}: the manifest records no sha256 for it (load with verify=False to read it anyway)")
    if sha256_file(f) != digest:
        raise SnapshotError(_CHANGED.format(f=f))


def _read_file(f: Path, loader: Callable[[Path], Any], digest: Any, *, checked: bool) -> Any:
    """`loader(f)`; a damaged file raises SnapshotError saying so (by its sha256 when not checked already)."""
    try:
        return loader(f)
    except _UNREADABLE as exc:
        recorded = isinstance(digest, str) and bool(digest)
        if recorded and not checked and sha256_file(f) != digest:
            raise SnapshotError(_CHANGED.format(f=f)) from exc
        reason = (str(exc).strip().splitlines() or [""])[0]
        if "pickle" in reason:  # np.load's word for bytes that are no .npy/.npz; its advice to unpickle is not ours
            reason = "not a NumPy file"
        tail = "" if recorded else "; the manifest records no sha256 for it"
        raise SnapshotError(f"{f}: unreadable ({type(exc).__name__}: {reason}){tail}") from exc


def _load_rows(f: Path) -> np.ndarray:
    rows = np.load(f)  # no pickles: allow_pickle stays False
    if rows.ndim != 1 or rows.dtype.kind not in "iu":
        raise ValueError(f"expected a 1-D integer array, got {rows.dtype} of shape {rows.shape}")
    return rows


def compute_snapshot_id(snap: Snapshot) -> str:
    """Content hash of matrices, row users and id maps: equal data gives an equal id."""
    h = hashlib.sha256()
    for name in sorted(snap.matrices):
        m = snap.matrices[name].tocsr()
        m.sort_indices()
        h.update(name.encode())
        h.update(np.asarray(m.shape, np.int64).tobytes())
        for arr in (m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data.astype(np.float32)):
            h.update(arr.tobytes())
        h.update(np.asarray(snap.rows[name], np.int64).tobytes())
    for idmap in (snap.users, snap.items):
        h.update("\x1f".join(map(str, idmap.raw_ids)).encode())
    return "snap-" + h.hexdigest()[:16]

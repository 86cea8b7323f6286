"""The peers' own virtual environments (bench/peers/.venv-NAME), created from their requirements files on first
use and reused while those files are unchanged."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import harness

logger = logging.getLogger("bench.peers")

HERE = Path(__file__).resolve().parent
VENV_STAMP = ".peers-installed.json"


def ensure_venv(folder: str, requirements: str, reinstall: bool = False) -> dict[str, Any]:
    """Create bench/peers/<folder> from bench/peers/<requirements> unless an up-to-date one exists."""
    venv, req = HERE / folder, HERE / requirements
    digest = hashlib.sha256(req.read_bytes()).hexdigest()
    stamp = venv / VENV_STAMP
    if stamp.exists() and not reinstall:
        info = json.loads(stamp.read_text())
        if info.get("requirements_sha256") == digest and (venv / "bin" / "python").exists():
            _ignore_in_git(venv)
            return {**info, "installed_now": False}
    if venv.exists():
        shutil.rmtree(venv)
    python = shutil.which("python3.11") or sys.executable
    logger.info("creating %s with %s and installing %s (a minute or two)", venv, python, req.name)
    with harness.Timer() as t:
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        _ignore_in_git(venv)
        proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(req)],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install -r {req} into {venv} failed:\n{tail(proc.stderr, 40)}")
    version = [str(venv / "bin" / "python"), "-c", "import platform; print(platform.python_version())"]
    info = {
        "venv": str(venv.relative_to(harness.REPO)),
        "requirements": str(req.relative_to(harness.REPO)),
        "requirements_sha256": digest,
        "install_s": round(t.seconds, 1),
        "size_mb": round(_dir_size(venv) / 1024**2, 1),
        "python": subprocess.run(version, capture_output=True, text=True).stdout.strip(),
        "installed_at": harness.now(),
    }
    stamp.write_text(json.dumps(info, indent=2))
    return {**info, "installed_now": True}


def _ignore_in_git(venv: Path) -> None:
    """A `*` .gitignore inside the venv (what Python 3.13's venv writes): git never sees it, the repo's .gitignore
    is untouched."""
    (venv / ".gitignore").write_text("# created by bench/peers/run.py\n*\n")


def _dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def tail(text: str, lines: int) -> str:
    """The last `lines` lines of `text`."""
    return "\n".join(text.strip().splitlines()[-lines:])

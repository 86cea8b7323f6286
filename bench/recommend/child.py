"""Heavy work runs in a fresh child process (bench_recommend.py --_worker KIND), so that each one's peak RSS is its
own; this starts one and reads back its JSON result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import harness

SCRIPT = harness.BENCH / "bench_recommend.py"


def run_worker(kind: str, cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run one worker in a fresh child process and return its JSON result."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"worker-{kind}-{os.getpid()}.json"
    cmd = [sys.executable, str(SCRIPT), "--_worker", kind, "--_config", json.dumps(cfg), "--_out", str(out)]
    subprocess.run(cmd, check=True)
    result = json.loads(out.read_text())
    out.unlink()
    return result

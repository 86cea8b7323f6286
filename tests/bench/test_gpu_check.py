"""bench/gpu_check.sh without a CUDA device: it says so, runs the CPU fallback into --out, and writes gpu.json and
gpu.md there (never bench/results); the CUDA tests it selects are collected and skip with a reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: gpu_check.sh would run the real check")
def test_gpu_check_runs_its_cpu_fallback_and_writes_the_results(tmp_path: Path) -> None:
    results = REPO / "bench" / "results" / "gpu.json"
    before = results.stat().st_mtime_ns if results.exists() else None
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--out", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "NO CUDA DEVICE FOUND" in done.stdout
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["device"] == "cpu" and report["plan"] == "smoke"
    assert report["command"].startswith("bench/gpu_check.sh")
    tests = report["cuda_tests"]
    assert tests["tests"] >= 9 and tests["skipped"] == tests["tests"]  # collected, every one skipped: no GPU
    assert [(r["batch"], r["precision"]) for r in report["training"]["runs"]] == [
        (b, p) for p in ("fp32", "bf16") for b in (500, 4096, 24576)]
    assert all(r["users_per_s"] > 0 for r in report["training"]["runs"]) and report["scoring"]["users_per_s"] > 0
    md = (tmp_path / "gpu.md").read_text()
    assert "No CUDA device was found" in md and report["command"] in md and "716,000" in md
    assert (results.stat().st_mtime_ns if results.exists() else None) == before


def test_the_cuda_tests_are_deselected_by_default() -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/cuda"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "deselected" in done.stdout and "test_cuda_" not in done.stdout, done.stdout

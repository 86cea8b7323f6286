#!/usr/bin/env bash
# Create .venv (if missing) and install recvae with everything it needs. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $PY"
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
# torch first: keep a CUDA build a GPU user installed; otherwise take the CPU wheel 2.13.0.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch 2.13.0 (CPU build)"
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
if ! .venv/bin/python -c "import recvae, airflow, mlflow, implicit, pytest" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.recvae-installed ]; then
  echo "[setup] installing recvae and its dependencies (about 2 minutes on a fresh machine)"
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  touch .venv/.recvae-installed
fi

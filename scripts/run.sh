#!/usr/bin/env bash
# Run the main job end to end on the embedded defaults (SQLite, local MLflow store under .recvae/).
# Extra arguments go to `recvae pipeline`, e.g. `scripts/run.sh --dataset ml-1m`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
exec .venv/bin/recvae pipeline "$@"

#!/usr/bin/env bash
# Lint and type-check (what CI runs before the tests): ruff on the code, DAGs, tests and benchmarks; mypy on recvae/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check recvae dags tests bench
.venv/bin/mypy

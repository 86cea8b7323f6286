#!/usr/bin/env bash
# README's main command as a new user runs it: an empty HOME, no RECVAE_* or MLFLOW_* variables, the defaults under
# ./.recvae; then `recvae db status` must show a published batch with rows. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
for var in $(env | grep -oE '^(RECVAE|MLFLOW)_[A-Z_]*' || true); do unset "$var"; done
HOME=$(mktemp -d)
export HOME
if [ -e .recvae ]; then  # never delete a developer's runs: this check is meant for a fresh clone
  echo "[ci] error: $(pwd)/.recvae exists; run this on a fresh clone (or move .recvae away)" >&2
  exit 1
fi
echo "[ci] scripts/run.sh with HOME=$HOME"
start=$SECONDS
scripts/run.sh "$@"
echo "[ci] main command took $((SECONDS - start)) s"
.venv/bin/recvae db status
current=$(.venv/bin/recvae db query current_batch)
echo "$current"
# the current batch's row_count, found by its header
echo "$current" | awk 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "row_count") c = i }
                       NR == 3 && c && $c > 0 { ok = 1 } END { exit !ok }' \
  || { echo "[ci] error: no published batch with rows in the default database" >&2; exit 1; }
echo "[ci] main command: a published batch is readable"

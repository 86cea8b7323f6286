#!/usr/bin/env bash
# The GPU check, start to end, in one call (each part time-capped: at most about 7 minutes on one H100, --quick 3):
#   1. the CUDA tests: pytest -m cuda tests/cuda (deselected from every other pytest run), time-boxed;
#   2. bench/gpu_check.py: training users/s at the ML-20M shape (fp32, bf16; batches 500, 4096, 24576) and
#      scoring users/s for 1M users, written to bench/results/gpu.json and gpu.md with the tests' counts.
# Without a CUDA device it says so and runs the CPU fallback instead (tiny shapes, about a minute on 2 cores),
# writing into a temporary folder (or --out), never over bench/results.
# Usage: bench/gpu_check.sh [--quick] [--out DIR]      PYTHON=... picks the interpreter (default .venv/bin/python)
# Exit status: 0 when the tests passed and the results were written, else non-zero.
set -uo pipefail
cd "$(dirname "$0")/.."
command_line="bench/gpu_check.sh${*:+ $*}"
quick=() out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=(--quick) ;;
    --out) out="$2"; shift ;;
    --out=*) out="${1#--out=}" ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1 OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"

if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  mode=(); tests_timeout=150
  "$PY" -c 'import torch; print("gpu_check: CUDA device:", torch.cuda.get_device_name(0), "torch", torch.__version__)'
else
  echo "gpu_check: NO CUDA DEVICE FOUND (torch.cuda.is_available() is False): running the CPU fallback;" \
       "the CUDA tests skip and the figures mean nothing"
  mode=(--smoke); tests_timeout=60
  [ -n "$out" ] || out="$(mktemp -d -t recvae-gpu-check.XXXXXX)"
fi
out="${out:-bench/results}"
mkdir -p "$out"
xml="$(mktemp -t recvae-cuda-tests.XXXXXX.xml)"
trap 'rm -f "$xml"' EXIT

echo "gpu_check: 1/2 CUDA tests (pytest -m cuda tests/cuda, at most ${tests_timeout}s)"
timeout "$tests_timeout" "$PY" -m pytest -m cuda tests/cuda -q -p no:cacheprovider --junitxml="$xml"
tests_rc=$?
[ "$tests_rc" -eq 124 ] && echo "gpu_check: the CUDA tests ran past ${tests_timeout}s and were stopped"

echo "gpu_check: 2/2 training and scoring speed (bench/gpu_check.py ${quick[*]} ${mode[*]} --out $out)"
"$PY" bench/gpu_check.py "${quick[@]}" "${mode[@]}" --out "$out" --tests-xml "$xml" \
  --command "$command_line"
bench_rc=$?

echo "gpu_check: CUDA tests exit $tests_rc, benchmark exit $bench_rc; results in $out/gpu.json and $out/gpu.md"
[ "${#mode[@]}" -eq 0 ] || echo "gpu_check: NO CUDA DEVICE FOUND: these were the CPU fallback's results"
# pytest's 5 (nothing collected) is a failure here too: the CUDA tests must exist
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]

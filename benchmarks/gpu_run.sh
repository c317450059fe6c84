#!/usr/bin/env bash
# The device command of the GPU check (made ready by benchmarks/gpu_prepare.sh):
#   bash benchmarks/gpu_run.sh [gpu_check.py flags]        with carry: [".gpu_carry"]
# Installs the carried wheels (no registry there), points tune_lm at the carried corpora
# and runs benchmarks/gpu_check.py into $OUT (the device tool's folder that comes back),
# or into benchmarks/results/gpu_check elsewhere. Here, with --dry-run, it checks itself.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$out"
site=${TMPDIR:-/tmp}/tune_lm_site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$site" .gpu_carry/wheels/*.whl || { echo "installing .gpu_carry/wheels failed: run benchmarks/gpu_prepare.sh and carry .gpu_carry" >&2; exit 3; }
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" TUNE_LM_DATA_DIR="$PWD/.gpu_carry/data" PYTHONUNBUFFERED=1
python3 benchmarks/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"

#!/usr/bin/env bash
# Prepares .gpu_carry/ for the GPU check and prints the exact device command.
#
# The lent GPU machines have Python 3.12 with torch, numpy, pyyaml, tqdm and pytest but
# no package registry and no ../shared; only the repository and the folders named in
# `carry` (64 MiB in all) travel. So this carries:
#   .gpu_carry/wheels/  pydantic and what it needs, built for CPython 3.12 on x86-64,
#                       and pytest-timeout (the check runs pytest with --timeout)
#                       (the versions of requirements-lock.txt);
#   .gpu_carry/data/    PTB and WikiText-2, copied from ../shared/data (or $1).
# Then, with the device tool:  run  command="bash benchmarks/gpu_run.sh"  carry=[".gpu_carry"]
set -euo pipefail
cd "$(dirname "$0")/.."
data_src=${1:-../shared/data}
carry=.gpu_carry
for corpus in ptb wikitext-2; do
  for split in train valid test; do
    [[ -f "$data_src/$corpus/$split.txt" ]] || { echo "missing $data_src/$corpus/$split.txt: give the folder that holds ptb/ and wikitext-2/ as the first argument" >&2; exit 2; }
  done
done

rm -rf "$carry"
mkdir -p "$carry/wheels" "$carry/data"
pins=()
for name in pydantic pydantic_core annotated-types typing-inspection typing_extensions pytest-timeout; do
  pin=$(grep -i -E "^${name//[-_]/[-_]}==" requirements-lock.txt) || { echo "no pin for $name in requirements-lock.txt" >&2; exit 1; }
  pins+=("$pin")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$carry/wheels" "${pins[@]}" 2> >(grep -v "is ignored" >&2)
for corpus in ptb wikitext-2; do
  mkdir -p "$carry/data/$corpus"
  cp "$data_src/$corpus/"{train,valid,test}.txt "$carry/data/$corpus/"
done

tree_bytes=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null || true) | awk '{s += $1} END {print s + 0}')
carry_bytes=$(du -sb "$carry" | cut -f1)
total=$((tree_bytes + carry_bytes))
echo "carry folder: $carry ($((carry_bytes / 1024)) KiB); working tree $((tree_bytes / 1024)) KiB; together $((total / 1048576)) MiB of the 64 MiB allowed"
ls "$carry/wheels"
if (( total >= 64 * 1048576 )); then echo "too large to travel" >&2; exit 1; fi
echo 'device command:  bash benchmarks/gpu_run.sh        carry: [".gpu_carry"]   timeout_s: 590'

#!/usr/bin/env bash
# Rehearses the GPU check's device command here, in a stand-in for the device image:
# a Python 3.12 venv with only what the image has (torch, numpy, pandas, pyyaml, tqdm,
# matplotlib, pytest; no Ray, MLflow, Optuna or pydantic), then
#   bash benchmarks/gpu_run.sh --dry-run
# exactly as the device runs it, with the carried wheels of benchmarks/gpu_prepare.sh.
# Run it after changing the language-model layer or the check. The venv (about 7 GB: PyPI's
# torch for Python 3.12 is a CUDA build) is kept for the next time.
#   bash benchmarks/gpu_standin.sh [VENV]      (default /tmp/tune_lm_gpu_standin)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-/tmp/tune_lm_gpu_standin}
if [[ ! -x $venv/bin/python3 ]]; then
  python312=""
  for candidate in "$(command -v python3.12 || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12; do
    if [[ -x $candidate ]] && "$candidate" -V >/dev/null 2>&1; then python312=$candidate; break; fi
  done
  [[ -n $python312 ]] || { echo "no Python 3.12 here (the device image's version); install one (pyenv install 3.12)" >&2; exit 2; }
  "$python312" -m venv "$venv"
  "$venv/bin/python3" -m pip install -q torch==2.11.0 numpy pandas pyyaml tqdm matplotlib pytest
fi
[[ -d .gpu_carry/wheels ]] || bash benchmarks/gpu_prepare.sh
out=$(mktemp -d)
env -u VIRTUAL_ENV -u PYTHONPATH PATH="$venv/bin:/usr/bin:/bin" OUT="$out" bash benchmarks/gpu_run.sh --dry-run
"$venv/bin/python3" - "$out/gpu_check.json" <<'EOF'
import json, sys
sections = json.load(open(sys.argv[1]))["sections"]
env = sections["environment"]["data"]
print(f"stand-in: Python {env['python']}, torch {env['torch']}; sections "
      + ", ".join(f"{name} {entry['status']}" for name, entry in sections.items())
      + f"; GPU tests collected: {sections['tests']['data']['collected']}")
bad = [name for name, entry in sections.items() if entry["status"] != "ok"]
leaked = [lib for lib in ("ray", "mlflow", "optuna") if env[f"{lib}_imported"]]
sys.exit(1 if bad or leaked or not env["python"].startswith("3.12") else 0)
EOF

"""A short training run as a whole process: ``python -m tune_lm.train`` against the PyTorch
word-language-model example's ``main.py``, same corpus slice, same settings, alternated.

Both train the example's default model (2x200 LSTM, lr 20, clip 0.25, batch 20, bptt 35,
dropout 0.2, seed 1111) for one epoch on the first ``--lines`` lines of PTB's train split
(valid and test whole), score validation and test, save the model, and exit. What is timed
is the wall clock of the whole process: interpreter start, imports, reading and
tokenising the corpus, training, evaluation, saving. tune_lm runs twice per round: with a
cold token cache (a first run on a corpus) and a warm one (every later run).

The example is not part of this repository: point ``--example`` at a checkout of
pytorch/examples' ``word_language_model`` folder (its main.py, data.py, model.py).

    python benchmarks/startup.py --example /path/to/word_language_model --rounds 5 \\
        --json benchmarks/results/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_PTB = REPO.parent / "shared" / "data" / "ptb"


def make_slice(source: Path, lines: int, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    with (source / "train.txt").open(encoding="utf-8") as handle:
        head = [line for _, line in zip(range(lines), handle, strict=False)]
    (target / "train.txt").write_text("".join(head), encoding="utf-8")
    for split in ("valid", "test"):
        (target / f"{split}.txt").write_bytes((source / f"{split}.txt").read_bytes())
    return target


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--example", type=Path, required=True,
                        help="pytorch/examples' word_language_model folder")  # fmt: skip
    parser.add_argument("--ptb", type=Path, default=SHARED_PTB, help="PTB folder")
    parser.add_argument("--lines", type=int, default=6000, help="train lines in the slice")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if not (args.example / "main.py").is_file():
        raise SystemExit(f"--example {args.example}: no main.py there")

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        data = make_slice(args.ptb, args.lines, scratch / "ptb_slice")
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
        example = [sys.executable, "main.py", "--data", str(data), "--epochs", "1",
                   "--save", str(scratch / "example.pt")]  # fmt: skip
        tune_lm = [sys.executable, "-m", "tune_lm.train", "--data", str(data), "--epochs", "1",
                   "--save", str(scratch / "tune_lm.pt"), "--quiet",
                   "--threads", str(args.threads), "--device", "cpu"]  # fmt: skip
        runs: dict[str, list[float]] = {"example": [], "tune_lm cold cache": [],
                                        "tune_lm warm cache": []}  # fmt: skip
        for round_index in range(args.rounds):
            cache = scratch / f"cache{round_index}"  # cold: a cache folder never used before
            tune_env = {**env, "TUNE_LM_CACHE_DIR": str(cache)}
            jobs = [
                ("example", lambda: timed(example, args.example, env)),
                ("tune_lm cold cache", lambda e=tune_env: timed(tune_lm, REPO, e)),
                ("tune_lm warm cache", lambda e=tune_env: timed(tune_lm, REPO, e)),
            ]
            if round_index % 2:  # alternate who goes first; warm always follows cold
                jobs = [jobs[1], jobs[2], jobs[0]]
            for name, job in jobs:
                seconds = job()
                runs[name].append(seconds)
                print(f"round {round_index + 1} {name:20s} {seconds:6.2f} s", flush=True)

    base = statistics.median(runs["example"])
    rows = []
    print(f"\n| process | median wall s ({args.rounds} rounds) | example / this |")
    print("|---|---:|---:|")
    for name, values in runs.items():
        median = statistics.median(values)
        rows.append({"process": name, "median_s": median, "runs_s": values,
                     "speed_vs_example": base / median})  # fmt: skip
        print(f"| {name} | {median:.2f} | {base / median:.3f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                   "threads": args.threads, "train_lines": args.lines, "rows": rows,
                   "command": " ".join(sys.argv)}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()

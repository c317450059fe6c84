"""Orchestration overhead: N short trials through the real search command against the
same trainings run back to back in one process.

The trials are a grid over ``seed`` of one PTB configuration (about 20-30 s each on one
CPU thread), FIFO, ``--concurrency`` at a time with one CPU each. Reported:

- start-up: from launching ``python -m tune_lm.search`` to the first trial starting;
- efficiency = (summed trial seconds / concurrency) / wall seconds of the trial phase
  (first trial start to last trial end), with trial seconds measured two ways: as Ray
  timed them inside the trials, and as the same trainings took back to back here;
- the whole command's wall time (start-up, trials, test scoring, summary, report).

    python benchmarks/orchestration.py --json benchmarks/results/orchestration.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
FIXED = {"epochs": 2, "model": "LSTM", "nlayers": 1, "emsize": 200, "nhid": 200,
         "dropout": 0.2, "batch_size": 20, "bptt": 35, "decoder": "adaptive",
         "max_tokens_per_epoch": 200_000}  # fmt: skip


def space(trials: int, concurrency: int, data: str) -> dict:
    return {"name": "orchestration", "data": data, "searcher": {"type": "grid"},
            "scheduler": {"type": "fifo"},
            "budget": {"num_samples": 1, "max_concurrent": concurrency},
            "resources": {"cpus_per_trial": 1}, "fixed": FIXED,
            "parameters": {"seed": {"grid": list(range(1, trials + 1))}}}  # fmt: skip


def run_search(space_file: Path, work: Path) -> dict:
    """Launch the search; return its wall time and each trial's start, end and seconds."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    launched = time.time()
    subprocess.run(
        [sys.executable, "-m", "tune_lm.search", "--space", str(space_file), "--storage",
         str(work / "runs"), "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}",
         "--progress-every", "600"],
        check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.time() - launched
    trials = []
    for result in (work / "runs" / "orchestration").glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line]
        first, last = lines[0], lines[-1]
        trials.append({"start": first["timestamp"] - first["time_this_iter_s"],
                       "end": last["timestamp"], "seconds": last["time_total_s"]})  # fmt: skip
    return {"launched": launched, "wall_s": wall, "trials": trials}


def back_to_back(trials: int, data: str) -> list[float]:
    """Seconds of each training, one after the other in this process (one thread)."""
    from tune_lm.lm.config import TrainConfig
    from tune_lm.lm.data import load_corpus
    from tune_lm.lm.fit import fit

    corpus = load_corpus(data)
    seconds = []
    for seed in range(1, trials + 1):
        config = TrainConfig(data=data, seed=seed, threads=1, device="cpu", **FIXED)
        start = time.perf_counter()
        fit(config, corpus=corpus, evaluate_test=False)
        seconds.append(time.perf_counter() - start)
        print(f"back to back: seed {seed} took {seconds[-1]:.1f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/ptb"))
    parser.add_argument("--json", default="benchmarks/results/orchestration.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        space_file = work / "orchestration.yaml"
        space_file.write_text(yaml.safe_dump(space(args.trials, args.concurrency, args.data)))
        search = run_search(space_file, work)
    sequential = back_to_back(args.trials, args.data)

    trials = search["trials"]
    phase = max(t["end"] for t in trials) - min(t["start"] for t in trials)
    ray_seconds = sum(t["seconds"] for t in trials)
    figures = {
        "trials": len(trials),
        "concurrency": args.concurrency,
        "median_trial_s_in_ray": statistics.median(t["seconds"] for t in trials),
        "median_trial_s_back_to_back": statistics.median(sequential),
        "startup_s": min(t["start"] for t in trials) - search["launched"],
        "trial_phase_wall_s": phase,
        "command_wall_s": search["wall_s"],
        "efficiency_ray_timed": ray_seconds / args.concurrency / phase,
        "efficiency_vs_back_to_back": sum(sequential) / args.concurrency / phase,
        "efficiency_whole_command": sum(sequential) / args.concurrency / search["wall_s"],
    }
    print("\n| figure | value |\n|---|---:|")
    for key, value in figures.items():
        print(f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"figures": figures, "search": search,
                                           "back_to_back_s": sequential}, indent=2))  # fmt: skip
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""Memory of a reused trial process: how its resident size grows from trial to trial.

Trial processes are reused (Tune's ``reuse_actors``), so one process trains every trial
of a one-at-a-time search. This runs the real search command (WikiText-2, 12 trials of
2 short epochs, 1-layer LSTM/GRU of 64-128 / 128-256 units, one at a time), samples the
resident size of the trial process every 0.5 s, and reports it at each trial's start:
with the heap trimmed at each trial start (tune_lm's default, ``tuning/heap.py``) and
without (``TUNE_LM_KEEP_FREED_HEAP=1``), alternated ``--rounds`` times.

    python benchmarks/reuse_memory.py --json benchmarks/results/reuse_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def space(trials: int, data: str) -> dict:
    return {"name": "reuse_memory", "data": data, "seed": 0,
            "searcher": {"type": "optuna", "sampler": "random"},
            "scheduler": {"type": "fifo"},
            "budget": {"num_samples": trials, "max_concurrent": 1},
            "resources": {"cpus_per_trial": 1},
            "fixed": {"epochs": 2, "nlayers": 1, "batch_size": 20, "decoder": "adaptive",
                      "max_tokens_per_epoch": 20_000},
            "parameters": {"model": {"choice": ["LSTM", "GRU"]},
                           "emsize": {"choice": [64, 128]},
                           "nhid": {"choice": [128, 256]},
                           "bptt": {"choice": [20, 35]}}}  # fmt: skip


def trial_processes() -> dict[int, int]:
    """pid -> resident MB of Ray's trial processes (their title is ``ray::<trainable>``)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            pages = int((entry / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if title.startswith("ray::") and ("ImplicitFunc" in title or "train_trial" in title):
            found[int(entry.name)] = pages * os.sysconf("SC_PAGE_SIZE") // 2**20
    return found


def run(trials: int, data: str, keep_freed: bool) -> dict:
    """One search; the trial process's resident MB when each trial started."""
    samples: list[tuple[float, dict[int, int]]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.time(), trial_processes()))
            time.sleep(0.5)

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "space.yaml").write_text(yaml.safe_dump(space(trials, data)))
        env = {**os.environ, "TUNE_LM_KEEP_FREED_HEAP": "1" if keep_freed else "0"}
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        subprocess.run(
            [sys.executable, "-m", "tune_lm.search", "--space", str(work / "space.yaml"),
             "--storage", str(work / "runs"), "--tracking-uri",
             f"sqlite:///{work / 'mlflow.db'}", "--progress-every", "600"],
            check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        done.set()
        sampler.join()
        firsts = [json.loads(result.read_text().splitlines()[0])
                  for result in (work / "runs" / "reuse_memory").glob("*/result.json")]
    starts = sorted(first["timestamp"] - first["time_this_iter_s"] for first in firsts)
    processes = {pid for _, found in samples for pid in found}
    at_start = []
    for start in starts:  # the last sample before each trial's first epoch ended
        before = [found for when, found in samples if when <= start + 1.0 and found]
        at_start.append(max(before[-1].values()) if before else None)
    peak = max((mb for _, found in samples for mb in found.values()), default=0)
    return {"keep_freed_heap": keep_freed, "trial_processes": len(processes),
            "mb_at_trial_start": at_start, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/wikitext-2"))
    parser.add_argument("--json", default="benchmarks/results/reuse_memory.json")
    args = parser.parse_args()
    runs = []
    for round_ in range(args.rounds):
        for keep_freed in (False, True):
            runs.append(run(args.trials, args.data, keep_freed))
            print(f"round {round_ + 1}, heap {'kept' if keep_freed else 'trimmed'}: "
                  f"{runs[-1]['mb_at_trial_start']}", flush=True)  # fmt: skip
    print("\n| heap at trial start | processes | MB at 2nd trial | MB at last trial "
          "| growth per trial (MB, slope) | peak MB |\n|---|---:|---:|---:|---:|---:|")
    for entry in runs:
        # From the 2nd trial on (the 1st start is the process's own start-up): the
        # least-squares slope of resident MB against the trial's number.
        points = [(i, mb) for i, mb in enumerate(entry["mb_at_trial_start"]) if i and mb]
        known = [mb for _, mb in points]
        growth = (statistics.linear_regression(*zip(*points, strict=True)).slope
                  if len(points) > 1 else float("nan"))  # fmt: skip
        entry["growth_mb_per_trial"] = growth
        print(f"| {'kept (Ray/glibc default)' if entry['keep_freed_heap'] else 'trimmed'} "
              f"| {entry['trial_processes']} | {known[0] if known else '-'} "
              f"| {known[-1] if known else '-'} | {growth:.1f} | {entry['peak_mb']} |")
    trimmed = [e["growth_mb_per_trial"] for e in runs if not e["keep_freed_heap"]]
    kept = [e["growth_mb_per_trial"] for e in runs if e["keep_freed_heap"]]
    print(f"median growth per trial: trimmed {statistics.median(trimmed):.1f} MB, "
          f"kept {statistics.median(kept):.1f} MB ({args.rounds} round(s), alternated)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"trials": args.trials, "runs": runs}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""Search efficiency on replayed curves: many seeds of each way to search, in minutes.

Each search is a real Ray Tune search (the real schedulers, Optuna's samplers, the trial
lifecycle) whose trials replay the PTB curves recorded by ``record_curves.py`` (the
nearest recorded configuration, in the normalised space; see tune_lm/tuning/replay.py).
Compute is counted in trial-epochs, in the order results arrived. The grid is the
seed-style study (LSTM/GRU x emsize 64/200 (nhid = emsize) x lr 5/20, dropout 0.2,
bptt 35: 8 trials of 27 epochs = 216 trial-epochs); every other method searches the
recording's whole space (cell, emsize, nhid, dropout, lr, bptt) and is cut at 3x the
grid's trial-epochs. Four trials run at a time.

    python benchmarks/search_efficiency.py --replay --seeds 20 --out FILE.json

Prints medians with bootstrap 95% intervals; writes JSON (``--out``) and a plot
(``--plot``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CURVES = REPO / "benchmarks" / "results" / "curves_ptb.csv"
FRACTIONS = {"0.11": 1 / 9, "0.33": 1 / 3, "1.0": 1.0, "3.0": 3.0}
CONCURRENT = 4

BASE: dict[str, Any] = {
    "fixed": {"epochs": 27, "nlayers": 1, "batch_size": 20, "decoder": "adaptive",
              "lr_decay": 1.0},
    "budget": {"num_samples": 100_000, "max_concurrent": CONCURRENT},
    "resources": {"cpus_per_trial": 0.5},
}  # fmt: skip
sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_curves import SPACE as WIDE  # noqa: E402  (the recording's own space)

GRID = {
    "searcher": {"type": "grid"},
    "scheduler": {"type": "fifo"},
    "budget": {"num_samples": 1, "max_concurrent": CONCURRENT},
    "fixed": {**BASE["fixed"], "dropout": 0.2, "bptt": 35},
    "derived": {"nhid": "emsize"},
    "parameters": {"model": {"grid": ["LSTM", "GRU"]}, "emsize": {"grid": [64, 200]},
                   "lr": {"grid": [5.0, 20.0]}},
}  # fmt: skip
RANDOM = {"type": "optuna", "sampler": "random"}
TPE = {"type": "optuna", "sampler": "tpe", "n_startup_trials": 10}
TPE_RUNG = {**TPE, "rung_aware": True}
ASHA = {"type": "asha", "grace_period": 1, "reduction_factor": 3}
ASHA_G3 = {**ASHA, "grace_period": 3}
# The PyTorch word_language_model example's defaults, as cells.yaml runs them first.
PYTORCH_DEFAULTS = [{"model": "LSTM", "emsize": 200, "nhid": 200, "dropout": 0.2,
                     "lr": 20.0, "bptt": 35}]  # fmt: skip
HYPERBAND = {"type": "hyperband", "grace_period": 1, "reduction_factor": 3, "brackets": 3}
FIFO = {"type": "fifo"}
METHODS: dict[str, dict[str, Any]] = {
    "grid": GRID,
    "random_fifo": {"searcher": RANDOM, "scheduler": FIFO, "parameters": WIDE},
    "random_asha": {"searcher": RANDOM, "scheduler": ASHA, "parameters": WIDE},
    "tpe_asha": {"searcher": TPE, "scheduler": ASHA, "parameters": WIDE},
    "tpe_asha_rung": {"searcher": TPE_RUNG, "scheduler": ASHA, "parameters": WIDE},
    "hyperband": {"searcher": RANDOM, "scheduler": HYPERBAND, "parameters": WIDE},
    "tpe_hyperband": {"searcher": TPE, "scheduler": HYPERBAND, "parameters": WIDE},
    "random_asha_g3": {"searcher": RANDOM, "scheduler": ASHA_G3, "parameters": WIDE},
    "tpe_asha_g3": {"searcher": TPE, "scheduler": ASHA_G3, "parameters": WIDE},
    "tpe_asha_base": {"searcher": TPE, "scheduler": ASHA, "parameters": WIDE,
                      "baselines": PYTORCH_DEFAULTS},
    "tpe_asha_base_g3": {"searcher": TPE, "scheduler": ASHA_G3, "parameters": WIDE,
                         "baselines": PYTORCH_DEFAULTS},
    "random_asha_base_g3": {"searcher": RANDOM, "scheduler": ASHA_G3, "parameters": WIDE,
                            "baselines": PYTORCH_DEFAULTS},
}


def method_space(method: str, seed: int) -> dict[str, Any]:
    return {"name": f"{method}_s{seed}", "seed": seed, **BASE, **METHODS[method]}


_CURVES: Any = None


def _start_worker(curves_path: str) -> None:
    """One local Ray per worker process, started once (2 logical CPUs, as this machine)."""
    global _CURVES
    import logging

    import ray

    from tune_lm.tuning.replay import load_curves

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no per-trial files
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "3600")  # nothing here is resumed
    logging.getLogger("ray").setLevel(logging.ERROR)
    _CURVES = load_curves(curves_path)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)  # fmt: skip
    devnull = os.open(os.devnull, os.O_WRONLY)  # Tune's per-search banners, not ours
    os.dup2(devnull, 1)


def replay_one(method: str, seed: int, budget: int | None,
               speed: float | None) -> dict[str, Any]:  # fmt: skip
    """One replayed search; the validation perplexity of each trial-epoch, in order."""
    from tune_lm.tuning.rehearsal import rehearse
    from tune_lm.tuning.space import SearchSpace

    space = SearchSpace.from_raw(method_space(method, seed), f"method {method}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="replay_") as folder:
        rehearsal = rehearse(space, _CURVES, f"{folder}/{method}_s{seed}", speed=speed,
                             budget_trial_epochs=budget, quick=True)  # fmt: skip
    return {"method": method, "seed": seed, "val_ppl": [e.val_ppl for e in rehearsal.events],
            "trials": len({e.trial_id for e in rehearsal.events}),
            "wall_s": time.monotonic() - started}  # fmt: skip


def bootstrap_median(values: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, ...]:
    """(median, low, high): the median and a bootstrap 95% interval of it."""
    if not values:
        return (math.nan, math.nan, math.nan)
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return (statistics.median(values), medians[int(0.025 * draws)], medians[int(0.975 * draws)])


def analyse(runs: list[dict[str, Any]], methods: list[str], seeds: list[int]) -> dict[str, Any]:
    grid_runs = [r for r in runs if r["method"] == "grid"]
    grid_trial_epochs = len(grid_runs[0]["val_ppl"])
    grid_best = min(grid_runs[0]["val_ppl"])
    out: dict[str, Any] = {"grid_trial_epochs": grid_trial_epochs, "grid_best": grid_best,
                           "methods": {}}  # fmt: skip
    for method in methods:
        by_seed = {r["seed"]: r for r in runs if r["method"] == method}
        entry: dict[str, Any] = {"to_grid_best": [], "best_at": {k: [] for k in FRACTIONS},
                                 "trials": [], "wall_s": []}  # fmt: skip
        for seed in seeds:
            curve = by_seed[seed]["val_ppl"]
            reached = next((i for i, v in enumerate(curve, 1) if v <= grid_best), None)
            entry["to_grid_best"].append(reached)
            for key, fraction in FRACTIONS.items():
                spent = curve[: max(1, round(fraction * grid_trial_epochs))]
                entry["best_at"][key].append(min(spent))
            entry["trials"].append(by_seed[seed]["trials"])
            entry["wall_s"].append(round(by_seed[seed]["wall_s"], 2))
        out["methods"][method] = entry
    return out


def _fmt(interval: tuple[float, ...], digits: int = 1) -> str:
    median, low, high = interval
    if not math.isfinite(median):
        return "not reached"
    return f"{median:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def print_table(analysis: dict[str, Any], seeds: int) -> None:
    grid = analysis["grid_trial_epochs"]
    print(f"\ngrid: {grid} trial-epochs, best val ppl {analysis['grid_best']:.1f}; medians over "
          f"{seeds} seeds [bootstrap 95% interval]\n")  # fmt: skip
    head = ["method", "trial-epochs to the grid's best (x grid)", "reached",
            *(f"best at {k} x grid" for k in FRACTIONS)]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for method, entry in analysis["methods"].items():
        reached = [r for r in entry["to_grid_best"]]
        as_ratio = [r / grid if r is not None else math.inf for r in reached]
        interval = bootstrap_median(as_ratio)
        cells = [method, _fmt(interval, 2), f"{sum(r is not None for r in reached)}/{seeds}",
                 *(_fmt(bootstrap_median(entry["best_at"][k])) for k in FRACTIONS)]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


def plot(runs: list[dict[str, Any]], analysis: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = analysis["grid_trial_epochs"]
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    for method in analysis["methods"]:
        curves = [r["val_ppl"] for r in runs if r["method"] == method]
        length = min(len(c) for c in curves)
        xs, mid, low, high = [], [], [], []
        for spent in range(1, length + 1):
            bests = sorted(min(c[:spent]) for c in curves)
            xs.append(spent / grid)
            mid.append(statistics.median(bests))
            low.append(bests[len(bests) // 4])
            high.append(bests[(3 * len(bests)) // 4])
        (line,) = axes.plot(xs, mid, label=method)
        axes.fill_between(xs, low, high, color=line.get_color(), alpha=0.15)
    axes.axhline(analysis["grid_best"], color="grey", linestyle=":", label="grid's best")
    axes.set_xscale("log")
    axes.set_ylim(analysis["grid_best"] * 0.9, analysis["grid_best"] * 1.6)
    axes.set_xlabel("compute spent (x the grid's trial-epochs)")
    axes.set_ylabel("best validation perplexity so far")
    axes.set_title(f"Replayed PTB searches: median and quartiles over "
                   f"{len(curves)} seeds")  # fmt: skip
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 of each method")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--curves", type=Path, default=CURVES)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" /
                        "search_efficiency_replay.json")  # fmt: skip
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "images" /
                        "search_efficiency_replay.png")  # fmt: skip
    parser.add_argument("--speed", type=float, default=None,
                        help="replay in wall-clock time, this many recorded seconds per real "
                             "second (default: the virtual clock, results in recorded-time "
                             "order)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=3, help="searches replayed at once")
    args = parser.parse_args(argv)
    methods = ["grid", *(m for m in args.methods if m != "grid")]
    seeds = list(range(args.seeds))
    started = time.monotonic()
    with ProcessPoolExecutor(args.jobs, initializer=_start_worker,
                             initargs=(str(args.curves),)) as pool:  # fmt: skip
        grid = pool.submit(replay_one, "grid", 0, None, args.speed).result()
        budget = 3 * len(grid["val_ppl"])
        print(f"grid: {len(grid['val_ppl'])} trial-epochs; others cut at {budget}", flush=True)
        # The grid has no seed: its one run stands for every seed.
        jobs = [pool.submit(replay_one, m, s, budget, args.speed)
                for s in seeds for m in methods if m != "grid"]  # fmt: skip
        runs = [{**grid, "seed": s} for s in seeds]
        for job in jobs:
            runs.append(job.result())
            run = runs[-1]
            print(f"{time.monotonic() - started:6.0f}s {run['method']:14s} seed {run['seed']:2d}: "
                  f"{len(run['val_ppl'])} trial-epochs, {run['trials']} trials, best "
                  f"{min(run['val_ppl']):.1f} ({run['wall_s']:.0f} s)", flush=True)  # fmt: skip
    analysis = analyse(runs, methods, seeds)
    print_table(analysis, len(seeds))
    wall = time.monotonic() - started
    searches = len(runs) - len(seeds) + 1
    print(f"\n{searches} replayed searches in {wall:.0f} s ({args.jobs} at a time)")
    report = {**analysis, "seeds": len(seeds), "wall_s": round(wall, 1),
              "curves": str(args.curves.relative_to(REPO) if args.curves.is_relative_to(REPO)
                            else args.curves),
              "speed": args.speed or "virtual clock", "concurrent_trials": CONCURRENT,
              "spaces": {m: method_space(m, 0) for m in methods}}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(runs, analysis, args.plot)
    print(f"JSON: {args.out}\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

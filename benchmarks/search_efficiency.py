"""Search efficiency: best validation perplexity per unit of compute, five ways to search.

On a reduced PTB task (1-layer models, adaptive softmax, 50,000 training tokens
per epoch, 4 epochs, batch 20) it runs the seed-style grid, random
search + FIFO, random + ASHA, TPE + FIFO and TPE + ASHA, each as a real
``python -m tune_lm.search`` (local Ray, Optuna), once per seed. Compute is counted in
trial-epochs (one trial training one epoch and scoring the whole validation split), not
seconds, so the answer does not depend on how busy the machine is. The budget is the
grid's compute (8 configurations x 4 epochs = 32 trial-epochs); every other method is
cut there. Target: TPE + ASHA reaches the grid's final best validation perplexity with at
most a third of the grid's compute (median over seeds).

    python benchmarks/search_efficiency.py --out /tmp/search_efficiency

``--replay`` runs the replayed benchmark instead (benchmarks/replay_efficiency.py: 20
seeds of six methods on recorded PTB curves, in minutes).

Prints a markdown table, writes JSON (``--json``) and a plot (``--plot``);
``--analyse-only FOLDER`` redoes the analysis of an earlier ``--out`` without training.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
TOKENS_PER_EPOCH = 50_000
EPOCHS = 4
TARGET_FRACTION = 1 / 3  # of the grid's compute, for TPE + ASHA

BASE_SPACE: dict[str, Any] = {
    "scheduler": {"type": "fifo"},
    "budget": {"max_concurrent": 2},
    "resources": {"cpus_per_trial": 1},
    "fixed": {"epochs": EPOCHS, "nlayers": 1, "batch_size": 20, "decoder": "adaptive",
              "max_tokens_per_epoch": TOKENS_PER_EPOCH, "clip": 0.25},
    "derived": {"nhid": "emsize"},  # nhid follows emsize (as in the seed study's cells)
}  # fmt: skip
# What random search and TPE may try: the grid's cells and more it cannot express.
WIDE_PARAMETERS = {
    "model": {"choice": ["LSTM", "GRU"]},
    "bptt": {"choice": [20, 35, 50]},
    "emsize": {"choice": [50, 100, 200]},
    "lr": {"loguniform": [2.0, 40.0]},
    "dropout": {"quniform": [0.0, 0.5, 0.05]},
}
RANDOM = {"type": "optuna", "sampler": "random"}
TPE = {"type": "optuna", "sampler": "tpe", "n_startup_trials": 5}
FIFO = {"type": "fifo"}
ASHA = {"type": "asha", "grace_period": 1, "reduction_factor": 2}
FIFO_SAMPLES = 8  # = the grid's 8 trials: the same 32 trial-epochs
ASHA_SAMPLES = 20  # enough to spend the 32 trial-epochs when ASHA stops most trials early


def sampled(searcher: dict, scheduler: dict, num_samples: int) -> dict[str, Any]:
    """Overrides of a random/TPE method: the wide space, its searcher and scheduler."""
    budget = {"num_samples": num_samples}
    return {"searcher": searcher, "scheduler": scheduler, "budget": budget,
            "parameters": WIDE_PARAMETERS}  # fmt: skip


# Each method is the base space plus these overrides (sections merged one level deep).
METHODS: dict[str, dict[str, Any]] = {
    "grid": {  # the seed-style study: 2 cells x 2 bptt x 2 emsize, lr 20, dropout 0.2
        "searcher": {"type": "grid"},
        "budget": {"num_samples": 1},
        "fixed": {"lr": 20.0, "dropout": 0.2},
        "parameters": {
            "model": {"grid": ["LSTM", "GRU"]},
            "bptt": {"grid": [35, 50]},
            "emsize": {"grid": [200, 100]},
        },  # fmt: skip
    },
    "random_fifo": sampled(RANDOM, FIFO, FIFO_SAMPLES),
    "random_asha": sampled(RANDOM, ASHA, ASHA_SAMPLES),
    "tpe_fifo": sampled(TPE, FIFO, FIFO_SAMPLES),
    "tpe_asha": sampled(TPE, ASHA, ASHA_SAMPLES),
}
GRID_COMPUTE = 2 * 2 * 2 * EPOCHS  # model x bptt x emsize, every trial to the end


def method_space(method: str) -> dict[str, Any]:
    """The search-space dict of ``method``: the base space with its overrides merged in."""
    space = copy.deepcopy(BASE_SPACE)
    for section, values in METHODS[method].items():
        if isinstance(space.get(section), dict) and section != "parameters":
            space[section].update(copy.deepcopy(values))
        else:
            space[section] = copy.deepcopy(values)
    return {"name": method, **space}


def run_search(method: str, seed: int, data: Path, out: Path) -> dict[str, Any]:
    """One real search in a subprocess; returns its name, exit code and wall seconds."""
    name = f"{method}_s{seed}"
    space_file = out / "spaces" / f"{method}.yaml"
    space_file.parent.mkdir(parents=True, exist_ok=True)
    space_file.write_text(yaml.safe_dump(method_space(method), sort_keys=False))
    log_file = out / "logs" / f"{name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tune_lm.search", "--space", str(space_file),
               "--data", str(data), "--storage", str(out / "runs"), "--name", name,
               "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}", "--seed", str(seed)]  # fmt: skip
    # One torch thread in the driver: it scores the winner (every grid cell) on test, and
    # on a busy 2-core machine two spinning threads made that ~80x slower (1.4 s -> 108 s).
    # Trials set their own threads (= cpus_per_trial), so the compute measured is the same.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    with log_file.open("w") as log:
        code = subprocess.run(command, cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT).returncode  # fmt: skip
    return {"search": name, "returncode": code, "wall_s": time.perf_counter() - start}


def read_results(experiment: Path) -> list[dict[str, Any]]:
    """Every evaluation of every trial, in the order they finished."""
    rows = []
    for result_file in experiment.glob("*/result.json"):
        lines = result_file.read_text().splitlines()
        trial = [row for row in map(json.loads, filter(str.strip, lines)) if "val_ppl" in row]
        # Ray's timestamp is whole seconds, time_total_s is exact seconds since the trial
        # started: each result bounds the start to a 1 s window; their overlap is tighter.
        latest_start = max((r["timestamp"] - r["time_total_s"] for r in trial), default=0)
        earliest_start = min((r["timestamp"] + 1 - r["time_total_s"] for r in trial), default=0)
        for row in trial:
            row["finished_s"] = (latest_start + earliest_start) / 2 + row["time_total_s"]
        rows += trial
    return sorted(rows, key=lambda r: r["finished_s"])


def compute_curve(rows: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(trial-epochs spent, best val ppl so far) after each evaluation. Compute is the
    sum of each trial's epoch increments, so fractional evaluations count as such."""
    epochs_done: dict[str, float] = {}
    spent, best, curve = 0.0, math.inf, []
    for row in rows:
        spent += row["epoch"] - epochs_done.get(row["trial_id"], 0.0)
        epochs_done[row["trial_id"]] = row["epoch"]
        best = min(best, row["val_ppl"])
        curve.append((spent, best))
    return curve


def best_at(curve: list[tuple[float, float]], compute: float) -> float:
    """Best val ppl after at most ``compute`` trial-epochs (inf before the first result)."""
    return min((best for spent, best in curve if spent <= compute + 1e-9), default=math.inf)


def compute_to_reach(curve: list[tuple[float, float]], target: float, budget: float) -> float:
    """Trial-epochs spent when the best first reaches ``target``; inf if not within budget."""
    return next((s for s, best in curve if best <= target and s <= budget + 1e-9), math.inf)


def analyse(runs: Path, methods: list[str], seeds: list[int]) -> dict[str, Any]:
    """Per method and seed: best at the budget, compute to reach the grid's best."""
    curves = {
        (m, s): compute_curve(read_results(runs / f"{m}_s{s}")) for m in methods for s in seeds
    }
    per_seed: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in methods}
    for seed in seeds:
        grid = curves.get(("grid", seed)) or []
        budget = grid[-1][0] if grid else GRID_COMPUTE
        grid_best = grid[-1][1] if grid else math.nan
        for method in methods:
            curve = curves[(method, seed)]
            per_seed[method][seed] = {
                "best_val_ppl_at_budget": best_at(curve, budget),
                "compute_to_grid_best": compute_to_reach(curve, grid_best, budget),
                "compute_used": curve[-1][0] if curve else 0.0,
                "budget": budget,
                "grid_best_val_ppl": grid_best,
                "curve": [[s, b] for s, b in curve if s <= budget + 1e-9],
            }
    summary = {}
    for method, by_seed in per_seed.items():
        runs_done = [r for r in by_seed.values() if r["curve"]]
        if not runs_done:
            continue
        budget = statistics.median(r["budget"] for r in runs_done)
        to_grid = statistics.median(r["compute_to_grid_best"] for r in runs_done)
        summary[method] = {
            "seeds": len(runs_done),
            "median_best_val_ppl_at_budget": statistics.median(
                r["best_val_ppl_at_budget"] for r in runs_done
            ),
            "median_compute_to_grid_best": to_grid,
            "fraction_of_grid_compute": to_grid / budget,
        }
    verdict = None
    if "tpe_asha" in summary:
        fraction = summary["tpe_asha"]["fraction_of_grid_compute"]
        verdict = {"fraction": fraction, "target": TARGET_FRACTION,
                   "passed": fraction <= TARGET_FRACTION}  # fmt: skip
    return {"per_seed": per_seed, "summary": summary, "target": verdict}


def _json_safe(value: Any) -> Any:
    """inf ("never reached") and nan ("no grid run") become null: JSON has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _number(value: float, digits: int = 1) -> str:
    return "never" if math.isinf(value) else "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def print_table(analysis: dict[str, Any]) -> None:
    print(
        "\n| method | median best val ppl at budget | median trial-epochs to grid best "
        "| fraction of grid compute | per seed: best ppl / trial-epochs to grid best |"
    )
    print("|---|---:|---:|---:|---|")
    for method, row in analysis["summary"].items():
        seeds_text = ", ".join(
            f"s{seed}: {_number(r['best_val_ppl_at_budget'])} / "
            f"{_number(r['compute_to_grid_best'], 0)}"
            for seed, r in analysis["per_seed"][method].items()
            if r["curve"]
        )
        print(
            f"| {method} | {_number(row['median_best_val_ppl_at_budget'])} "
            f"| {_number(row['median_compute_to_grid_best'], 0)} "
            f"| {_number(row['fraction_of_grid_compute'], 2)} | {seeds_text} |"
        )
    verdict = analysis["target"]
    if verdict:
        print(
            f"\nTPE + ASHA reaches the grid's best with {_number(verdict['fraction'], 2)} of "
            f"the grid's compute (target <= {verdict['target']:.2f}): "
            f"{'PASS' if verdict['passed'] else 'FAIL'}"
        )


def plot(analysis: dict[str, Any], path: Path) -> None:
    """Best-so-far val ppl vs trial-epochs: median per method, light lines per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    budget = GRID_COMPUTE
    for color, (method, by_seed) in zip(colors, analysis["per_seed"].items(), strict=False):
        curves = [r["curve"] for r in by_seed.values() if r["curve"]]
        if not curves:
            continue
        budget = max(r["budget"] for r in by_seed.values() if r["curve"])
        steps = [c / 4 for c in range(4, int(budget * 4) + 1)]  # every quarter trial-epoch
        for curve in curves:
            xs, ys = zip(*curve, strict=True)
            axes.step(xs, ys, where="post", color=color, alpha=0.25, linewidth=1)
        medians = [statistics.median(best_at(c, x) for c in curves) for x in steps]
        label = method.replace("_", " + ").replace("tpe", "TPE").replace("fifo", "FIFO")
        label = label.replace("asha", "ASHA").replace("random", "random search")
        axes.step(steps, medians, where="post", color=color, linewidth=2.2, label=label)
    grid_bests = [
        r["grid_best_val_ppl"] for r in analysis["per_seed"].get("grid", {}).values() if r["curve"]
    ]
    if grid_bests:
        axes.axhline(statistics.median(grid_bests), color="black", linestyle="--", linewidth=1,
                     label="grid's final best (median)")  # fmt: skip
        axes.axvline(budget * TARGET_FRACTION, color="grey", linestyle=":", linewidth=1,
                     label="target: 1/3 of the grid's compute")  # fmt: skip
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:.0f}"))
    axes.yaxis.set_minor_formatter(matplotlib.ticker.StrMethodFormatter("{x:.0f}"))
    axes.set_xlim(0, budget)
    axes.set_xlabel("compute spent (trial-epochs)")
    axes.set_ylabel("best validation perplexity so far")
    axes.set_title("Search efficiency on reduced PTB (median over seeds; light: each seed)")
    axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    if "--replay" in sys.argv[1:]:  # the replayed benchmark (issue 16): its own module
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from replay_efficiency import main as replay_main

        sys.exit(replay_main([a for a in sys.argv[1:] if a != "--replay"]))
    raw_text = argparse.RawDescriptionHelpFormatter  # keep the docstring's command as written
    parser = argparse.ArgumentParser(
        description=__doc__, allow_abbrev=False, formatter_class=raw_text
    )
    add = parser.add_argument
    add("--data", type=Path, default=REPO.parent / "shared" / "data" / "ptb", help="PTB folder")
    add("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one search per method and seed")
    add("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), metavar="METHOD",
        help=f"a subset of: {', '.join(METHODS)}")  # fmt: skip
    add("--out", type=Path, help="work folder (default: a new temporary one)")
    add("--json", type=Path, default=REPO / "benchmarks" / "results" / "search_efficiency.json")
    add("--plot", type=Path, default=REPO / "docs" / "images" / "search_efficiency.png")
    add("--analyse-only", type=Path, metavar="FOLDER",
        help="analyse the searches of an earlier --out, without training")  # fmt: skip
    args = parser.parse_args()

    out = args.analyse_only or args.out or Path(tempfile.mkdtemp(prefix="search_efficiency_"))
    out = out.resolve()
    wall_file = out / "wall_s.json"
    if not args.analyse_only:
        out.mkdir(parents=True, exist_ok=True)
        print(f"work folder: {out}", flush=True)
        walls = json.loads(wall_file.read_text()) if wall_file.is_file() else {}
        for seed in args.seeds:
            for method in args.methods:
                run = run_search(method, seed, args.data.resolve(), out)
                walls[run["search"]] = run["wall_s"]
                wall_file.write_text(json.dumps(walls, indent=2))
                status = "ok" if run["returncode"] == 0 else f"FAILED (exit {run['returncode']})"
                print(
                    f"{run['search']:16s} {status}, {run['wall_s']:6.0f} s "
                    f"(log: {out / 'logs' / (run['search'] + '.log')})",
                    flush=True,
                )
    analysis = analyse(out / "runs", args.methods, args.seeds)
    print_table(analysis)
    walls = json.loads(wall_file.read_text()) if wall_file.is_file() else {}
    missing = [f"{m}_s{s}" for m in args.methods for s in args.seeds
               if not analysis["per_seed"][m][s]["curve"]]  # fmt: skip
    if missing:
        print(f"\nPARTIAL: no results for {', '.join(missing)}")
    report = {
        "task": {"data": str(args.data), "tokens_per_epoch": TOKENS_PER_EPOCH, "epochs": EPOCHS,
                 "grid_compute_trial_epochs": GRID_COMPUTE, "seeds": args.seeds},
        "complete": not missing, "missing_searches": missing,
        "spaces": {m: method_space(m) for m in args.methods},
        "wall_s": walls, "total_wall_s": sum(walls.values()),
        **analysis,
    }  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_json_safe(report), indent=1))
    plot(analysis, args.plot)
    print(f"\nJSON: {args.json}\nplot: {args.plot}")


if __name__ == "__main__":
    main()

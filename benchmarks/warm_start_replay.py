"""Does a warm start pay? Replayed searches on the recorded PTB curves, cold against warm.

For each seed s: a *source* search (TPE + ASHA, seed s, ``--trials`` trials) is replayed
and its summary written; then, with another seed (s + 100), the same search is replayed
cold and warm-started from the source (``--warm-start``: its 3 best configurations
queued first, its trials given to TPE as priors). Each replay is a real Ray Tune search
on the virtual clock (tune_lm/tuning/sim_clock.py). Printed per seed and as medians:
trial-epochs until the best validation perplexity first reached ``--target``, and the
best within the first ``--budget`` trial-epochs.

    python benchmarks/warm_start_replay.py --seeds 5 --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from replay_efficiency import ASHA_G3, BASE, CURVES, TPE, WIDE  # noqa: E402


def space_for(seed: int, trials: int) -> Any:
    from tune_lm.tuning.space import SearchSpace

    raw = {"name": f"warm_s{seed}", "seed": seed, **BASE, "searcher": TPE,
           "scheduler": ASHA_G3, "parameters": WIDE,
           "budget": {"num_samples": trials, "max_concurrent": 4}}  # fmt: skip
    return SearchSpace.from_raw(raw, f"warm start benchmark, seed {seed}")


def replay(space: Any, curves: Any, folder: Path, priors: list | None = None) -> Any:
    from tune_lm.tuning.rehearsal import report_rehearsal, run_rehearsal

    rehearsal, rows = run_rehearsal(space, curves, str(folder), address=None, speed=None,
                                    progress_every=1e9, priors=priors)  # fmt: skip
    report_rehearsal(rehearsal, rows, space, folder)
    return rehearsal


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=40, help="trials per search")
    parser.add_argument("--target", type=float, default=310.0)
    parser.add_argument("--budget", type=int, default=72, help="trial-epochs (1/3 grid)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" /
                        "warm_start_replay.json")  # fmt: skip
    args = parser.parse_args(argv)
    from tune_lm.tuning.console import console
    from tune_lm.tuning.replay import load_curves
    from tune_lm.tuning.warm_start import plan_warm_start, with_queued

    curves = load_curves(str(CURVES))
    runs = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="warm_") as tmp, console.capture(
            Path(tmp) / "log.txt", verbose=False):  # fmt: skip
        for seed in range(args.seeds):
            source = Path(tmp) / f"source_s{seed}"
            replay(space_for(seed, args.trials), curves, source)
            target_space = space_for(seed + 100, args.trials)
            cold = replay(target_space, curves, Path(tmp) / f"cold_s{seed}")
            start = plan_warm_start(str(source), target_space)
            warm = replay(with_queued(target_space, start), curves, Path(tmp) / f"warm_s{seed}",
                          priors=start.priors)  # fmt: skip
            run = {"seed": seed,
                   **{f"{name}_to_target": r.trial_epochs_to_reach(args.target)
                      for name, r in (("cold", cold), ("warm", warm))},
                   **{f"{name}_best_at_budget": r.best_within(args.budget)
                      for name, r in (("cold", cold), ("warm", warm))}}  # fmt: skip
            runs.append(run)
            print(f"{time.monotonic() - started:6.0f}s seed {seed}: {run}", flush=True)

    def median(key: str) -> float:
        values = [r[key] if r[key] is not None else math.inf for r in runs]
        return statistics.median(values)

    summary = {key: median(key) for key in runs[0] if key != "seed"}
    print(f"\nmedians over {len(runs)} seeds (never reached counts as inf): {summary}")
    report = {"seeds": len(runs), "trials_per_search": args.trials, "target": args.target,
              "budget_trial_epochs": args.budget, "runs": runs, "medians": summary,
              "wall_s": round(time.monotonic() - started, 1),
              "curves": str(CURVES.relative_to(REPO))}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

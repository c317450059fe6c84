"""Is the replay trustworthy? Real searches on the recorded task, set beside the replay.

Runs, for real (every trial trained), the searches that ``replay_efficiency.py``
replays: the same spaces, seeds, scheduler, searcher and 4 trials at a time, on the task
``record_curves.py`` recorded (PTB, 1-layer models, adaptive softmax, constant lr, epochs
of 20,000 training tokens, validation on the first 10,000 tokens of PTB's validation
split, training seed 1111 as recorded). Each search is cut at ``--budget`` x the grid's
216 trial-epochs, counted in the order results arrived, as in the replay. Then, per
method, each real seed's best validation perplexity at 1/9, 1/3 and 1 x the grid is set
beside the replayed seeds' (from the replay's JSON): the replay is trustworthy where the
real values fall inside the replayed seeds' range.

    TUNE_LM_DATA_DIR=../shared/data python benchmarks/replay_agreement.py \
        --seeds 3 --methods tpe_asha_base_g3 random_asha --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import record_curves  # noqa: E402
import replay_efficiency as replay  # noqa: E402

GRID_TRIAL_EPOCHS = 216
TASK = {"max_tokens_per_epoch": 20_000, "eval_batch_size": 10, "seed": 1111}


def real_search(method: str, seed: int, corpus: Any, budget: int) -> dict[str, Any]:
    """One real search of ``method`` (its replay benchmark space, trained for real)."""
    from tune_lm.tuning.rehearsal import Rehearsal, _Recorder
    from tune_lm.tuning.space import SearchSpace
    from tune_lm.tuning.tuner import build_tuner

    raw = replay.method_space(method, seed)
    raw = {**raw, "fixed": {**raw["fixed"], **TASK}, "data": "ptb"}
    space = SearchSpace.from_raw(raw, f"method {method}")
    rehearsal = Rehearsal()
    recorder = _Recorder(rehearsal, budget)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agreement_") as folder:
        tuner = build_tuner(space, corpus, f"{folder}/{method}_s{seed}", resume=False,
                            callbacks=[recorder], stop=recorder, study_on_disk=False,
                            verbose=0)  # fmt: skip
        tuner.fit()
    values = [e.val_ppl for e in rehearsal.events[:budget]]
    return {"method": method, "seed": seed, "val_ppl": values,
            "trials": len({e.trial_id for e in rehearsal.events[:budget]}),
            "wall_s": round(time.monotonic() - started, 1)}  # fmt: skip


def best_at(values: list[float], fraction: float) -> float:
    return min(values[: max(1, round(fraction * GRID_TRIAL_EPOCHS))])


def compare(real: list[dict[str, Any]], replayed: dict[str, Any]) -> dict[str, Any]:
    """Per method and budget: the real seeds' bests, the replayed seeds' median and range,
    and whether every real value falls inside that range."""
    out: dict[str, Any] = {}
    for method in dict.fromkeys(r["method"] for r in real):
        entry = {}
        for key, fraction in replay.FRACTIONS.items():
            if fraction > max(len(r["val_ppl"]) for r in real) / GRID_TRIAL_EPOCHS:
                continue
            values = [best_at(r["val_ppl"], fraction) for r in real if r["method"] == method]
            pool = replayed["methods"].get(method, {}).get("best_at", {}).get(key, [])
            inside = bool(pool) and all(min(pool) <= v <= max(pool) for v in values)
            entry[key] = {"real": [round(v, 1) for v in values],
                          "real_median": round(statistics.median(values), 1),
                          "replay_median": round(statistics.median(pool), 1) if pool else None,
                          "replay_range": [round(min(pool), 1), round(max(pool), 1)] if pool
                          else None, "real_inside_replay_range": inside}  # fmt: skip
        out[method] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="run seeds FIRST..FIRST+SEEDS-1 (more seeds for an earlier run: "
                             "then compare both with --from-runs A.json B.json)")  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=["tpe_asha_base_g3", "random_asha"],
                        choices=[m for m in replay.METHODS if m != "grid"])  # fmt: skip
    parser.add_argument("--budget", type=float, default=1.0, help="x the grid's trial-epochs")
    parser.add_argument("--replayed", type=Path, default=REPO / "benchmarks" / "results" /
                        "search_efficiency_replay.json")  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" /
                        "replay_agreement.json")  # fmt: skip
    parser.add_argument("--from-runs", type=Path, nargs="+", default=None,
                        help="compare the real runs of earlier --out JSONs, running none")
    args = parser.parse_args(argv)
    if args.from_runs is not None:
        earlier = [json.loads(path.read_text()) for path in args.from_runs]
        runs = [run for e in earlier for run in e["runs"]]
        return report(runs, args, len({run["seed"] for run in runs}),
                      round(sum(e["wall_s"] for e in earlier), 1))  # fmt: skip
    from tune_lm.tuning.tuner import connect_ray, disconnect

    corpus = record_curves._reduced_ptb(10_000)  # noqa: SLF001 (the recording's own task)
    budget = round(args.budget * GRID_TRIAL_EPOCHS)
    started, real = time.monotonic(), []
    connect_ray(None)
    try:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for method in args.methods:
                real.append(real_search(method, seed, corpus, budget))
                run = real[-1]
                partial = args.out.with_suffix(".partial.json")  # kept if the run is cut
                partial.parent.mkdir(parents=True, exist_ok=True)
                done = seed + 1 - args.first_seed
                partial.write_text(json.dumps({"seeds": done, "runs": real,
                                               "wall_s": round(time.monotonic() - started)}))
                print(f"{time.monotonic() - started:6.0f}s {method} seed {seed}: "
                      f"{len(run['val_ppl'])} trial-epochs, {run['trials']} trials, best "
                      f"{min(run['val_ppl']):.1f} ({run['wall_s']:.0f} s)", flush=True)  # fmt: skip
    finally:
        disconnect()
    return report(real, args, args.seeds, round(time.monotonic() - started, 1))


def report(real: list[dict[str, Any]], args: argparse.Namespace, seeds: int,
           wall_s: float) -> int:  # fmt: skip
    """The comparison printed as a table and written (with the runs) to ``args.out``."""
    budget = max(len(r["val_ppl"]) for r in real)
    replayed = json.loads(args.replayed.read_text())
    comparison = compare(real, replayed)
    print(f"\nreal searches ({seeds} seeds) against the replay ({replayed['seeds']} "
          f"seeds): best val ppl at each budget (x the grid's {GRID_TRIAL_EPOCHS} "
          "trial-epochs)\n")  # fmt: skip
    print("| method | budget | real, per seed | real median | replay median | replay range "
          "(all seeds) | real inside |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for method, entry in comparison.items():
        for key, cell in entry.items():
            print(f"| {method} | {key} | {', '.join(map(str, cell['real']))} | "
                  f"{cell['real_median']} | {cell['replay_median']} | {cell['replay_range']} "
                  f"| {'yes' if cell['real_inside_replay_range'] else 'NO'} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seeds": seeds, "budget_trial_epochs": budget,
                                    "task": TASK, "replayed": str(args.replayed),
                                    "comparison": comparison, "runs": real, "wall_s": wall_s},
                                   indent=1))  # fmt: skip
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

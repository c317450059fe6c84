"""Record a pool of real trials once, to replay searches over it many times (issue 16).

Each configuration of a cells-like space (cell type, embedding and hidden sizes, dropout,
learning rate, BPTT), drawn at random from a fixed seed, is trained on a reduced but real
task, PTB, to the full budget, and its whole validation-perplexity curve is kept with the
training seconds of every epoch: one CSV row per (configuration, epoch).

The task: 1-layer models with an adaptive softmax and a constant learning rate, epochs
of ``--epoch-tokens`` training tokens (the training cursor runs on through the corpus
from one epoch to the next), and validation on a fixed slice of PTB's validation split
(its first ``--valid-tokens`` tokens, every one scored, ``<eos>`` included). A trial that
diverges stops there: its curve ends early. The recording is resumable: configurations
already in the CSV are skipped, and each finished trial's rows are appended in one
write, so a killed run loses only the trials it was training.

    python benchmarks/record_curves.py --out benchmarks/results/curves_ptb.csv --trials 200

After the random pool it records the ``ANCHORS`` (the grid the replay benchmark compares
with) exactly, as configurations 1000-1007.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import math
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

# The pool's space, as data (also what a replay's nearest-neighbour distance normalises).
SPACE = {
    "model": {"choice": ["LSTM", "GRU", "RNN_TANH"]},
    "emsize": {"logint": [32, 256]},
    "nhid": {"logint": [32, 256]},
    "dropout": {"uniform": [0.0, 0.5]},
    "lr": {"loguniform": [1.0, 40.0]},
    "bptt": {"int": [10, 50]},
}
# A constant learning rate (lr_decay 1): with the default annealing (lr / 4 whenever
# validation does not improve) on epochs this short, a first recording saw most curves
# stall at the unigram plateau (~750) by epoch 10 and stay there.
FIXED = {"nlayers": 1, "batch_size": 20, "decoder": "adaptive", "eval_batch_size": 10,
         "lr_decay": 1.0, "threads": 1, "device": "cpu", "seed": 1111}  # fmt: skip
COLUMNS = ["config_id", *SPACE, "epoch", "val_ppl", "epoch_time_s", "eval_time_s"]
# Anchors, recorded exactly after the random pool (ids from ANCHOR_IDS): the seed-style
# grid that replay_efficiency.py compares every search with (LSTM/GRU x emsize 64/200,
# nhid = emsize, x lr 5/20, dropout 0.2, bptt 35), whose LSTM 200 lr 20 cell is also the
# PyTorch example's defaults that cells.yaml runs first as a baseline. Recorded, they
# replay their own curves instead of their nearest random neighbour's.
ANCHOR_IDS = 1000
ANCHORS = [{"model": model, "emsize": size, "nhid": size, "dropout": 0.2, "lr": lr, "bptt": 35}
           for model in ("LSTM", "GRU") for size in (64, 200) for lr in (5.0, 20.0)]


def draw(config_id: int, seed: int) -> dict[str, Any]:
    """Configuration ``config_id`` of the pool: the same for a given seed, whatever else
    has been drawn (so a resumed recording draws the same pool)."""
    rng = random.Random(f"{seed}:{config_id}")
    drawn: dict[str, Any] = {}
    for name, spec in SPACE.items():
        ((kind, values),) = spec.items()
        if kind == "choice":
            drawn[name] = rng.choice(values)
        elif kind == "uniform":
            drawn[name] = round(rng.uniform(*values), 3)
        elif kind == "loguniform":
            drawn[name] = round(math.exp(rng.uniform(*map(math.log, values))), 3)
        elif kind == "logint":
            low, high = values  # log-uniform over the integers low..high, both included
            drawn[name] = min(high, int(math.exp(rng.uniform(math.log(low),
                                                             math.log(high + 1)))))
        elif kind == "int":
            drawn[name] = rng.randint(*values)
    return drawn


@functools.cache
def _reduced_ptb(valid_tokens: int) -> Any:
    """PTB with the validation slice, loaded once per worker process (not once a trial)."""
    from tune_lm.lm.data import load_corpus

    corpus = load_corpus("ptb")
    return dataclasses.replace(corpus, valid=corpus.valid[:valid_tokens],
                               test=corpus.test[:2000])  # fmt: skip


def train_one(config_id: int, drawn: dict[str, Any], args: argparse.Namespace) -> list[dict]:
    """One trial to the full budget; its rows (one per epoch)."""
    import torch

    from tune_lm.lm.config import TrainConfig
    from tune_lm.lm.fit import fit

    torch.set_num_threads(1)
    corpus = _reduced_ptb(args.valid_tokens)
    config = TrainConfig(data="ptb", epochs=args.epochs, max_tokens_per_epoch=args.epoch_tokens,
                         **FIXED, **drawn)  # fmt: skip
    rows: list[dict] = []
    last = [time.perf_counter()]

    def on_epoch_end(epoch: float, metrics: dict, state: Any) -> None:
        now = time.perf_counter()
        wall = now - last[0]
        last[0] = now
        rows.append({"config_id": config_id, **drawn, "epoch": int(round(epoch)),
                     "val_ppl": metrics["val_ppl"], "epoch_time_s": metrics["epoch_time_s"],
                     "eval_time_s": max(0.0, wall - metrics["epoch_time_s"])})  # fmt: skip

    fit(config, corpus=corpus, on_epoch_end=on_epoch_end, evaluate_test=False)
    return rows


def done_ids(path: Path) -> set[int]:
    if not path.is_file():
        return set()
    with path.open(newline="") as handle:
        return {int(row["config_id"]) for row in csv.DictReader(handle)}


def append(path: Path, rows: list[dict]) -> None:
    """One trial's rows in one write (a kill loses the trial, never half of it)."""
    new = not path.is_file()
    lines = []
    if new:
        lines.append(",".join(COLUMNS))
    for row in rows:
        lines.append(",".join(_cell(row[c]) for c in COLUMNS))
    with path.open("a") as handle:
        handle.write("\n".join(lines) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _cell(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/curves_ptb.csv"))
    parser.add_argument("--trials", type=int, default=200, help="configurations in the pool")
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument("--epoch-tokens", type=int, default=20000)
    parser.add_argument("--valid-tokens", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop-after-s", type=float, default=None,
                        help="start no new trial after this many seconds")  # fmt: skip
    parser.add_argument("--no-anchors", action="store_true",
                        help="record the random pool only, not the grid's configurations")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    configs = {i: draw(i, args.seed) for i in range(args.trials)}
    if not args.no_anchors:
        configs.update({ANCHOR_IDS + i: anchor for i, anchor in enumerate(ANCHORS)})
    done = done_ids(args.out)
    todo = [i for i in configs if i not in done]
    print(f"{len(todo)} of {len(configs)} configurations to record into {args.out}", flush=True)
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        pending = {}
        queue = list(todo)

        def submit() -> None:
            over = args.stop_after_s is not None and time.monotonic() - started > args.stop_after_s
            if queue and not over:
                config_id = queue.pop(0)
                future = pool.submit(train_one, config_id, configs[config_id], args)
                pending[future] = config_id

        for _ in range(args.workers):
            submit()
        while pending:
            future = next(as_completed(pending))
            config_id = pending.pop(future)
            rows = future.result()
            append(args.out, rows)
            last = rows[-1] if rows else {}
            print(f"{time.monotonic() - started:7.0f}s config {config_id}: {len(rows)} epochs, "
                  f"val ppl {last.get('val_ppl', float('nan')):.1f}, "
                  f"{sum(r['epoch_time_s'] + r['eval_time_s'] for r in rows):.0f}s",
                  flush=True)  # fmt: skip
            submit()
    return 0


if __name__ == "__main__":
    sys.exit(main())

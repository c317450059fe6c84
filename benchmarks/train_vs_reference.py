"""Training speed and 1-epoch quality of tune_lm against a textbook loop.

The textbook loop is the shape of the PyTorch word-language-model example: model
returns log-softmax, NLLLoss, ``model.zero_grad()``, clip, manual SGD update, and
evaluation on the trimmed batchified split divided by its length. Both run in this
process on the same corpus, one after the other, with the same threads.

    python benchmarks/train_vs_reference.py --data ../shared/data/ptb --seeds 1111 1 2

Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

import torch
import torch.nn.functional as F
from textbook import textbook_train  # benchmarks/ is on sys.path when run as a script

from tune_lm.lm.batching import batchify, get_window, window_starts
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.data import load_corpus
from tune_lm.lm.fit import fit


def textbook_epoch(config: TrainConfig, corpus) -> dict[str, float]:
    """One epoch the textbook way; returns val ppl, seconds, tokens/s."""
    model, tokens, seconds = textbook_train(config, corpus)
    # Evaluation as in the example: trimmed columns, first token of each column unscored.
    model.eval()
    valid = batchify(corpus.valid, config.eval_batch_size)
    hidden = model.init_hidden(config.eval_batch_size)
    total = 0.0
    with torch.no_grad():
        for begin in window_starts(valid.size(0), config.bptt):
            inputs, targets = get_window(valid, begin, config.bptt)
            features, hidden = model(inputs, hidden)
            log_probs = F.log_softmax(model.decoder(features).view(-1, corpus.ntokens), dim=1)
            total += len(inputs) * F.nll_loss(log_probs, targets.reshape(-1)).item()
    return {
        "val_ppl": math.exp(total / (len(valid) - 1)),
        "epoch_time_s": seconds,
        "tokens_per_s": tokens / seconds,
    }


def tune_lm_epoch(config: TrainConfig, corpus) -> dict[str, float]:
    result = fit(config.replace(epochs=1), corpus=corpus, evaluate_test=False)
    first = result.history[0]
    return {k: first[k] for k in ("val_ppl", "epoch_time_s", "tokens_per_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("--data", default="ptb")
    parser.add_argument("--model", default="LSTM")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1111])
    parser.add_argument("--which", choices=["both", "tune_lm", "textbook"], default="both")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--max-tokens", type=int, default=None, help="cap tokens (quick check)")
    parser.add_argument("--json", default="benchmarks/train_vs_reference.json")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    corpus = load_corpus(args.data)
    if args.max_tokens:
        corpus = type(corpus)(**{**corpus.__dict__, "train": corpus.train[: args.max_tokens]})
    rows = []
    for seed in args.seeds:
        config = TrainConfig(
            data=args.data, model=args.model, seed=seed, device="cpu", threads=args.threads
        )
        runners = [("tune_lm", tune_lm_epoch), ("textbook", textbook_epoch)]
        if len(rows) % 4 == 2:  # alternate which loop goes first, so order effects cancel
            runners.reverse()
        for name, runner in runners:
            if args.which in ("both", name):
                row = {"loop": name, "seed": seed, **runner(config, corpus)}
                rows.append(row)
                print(
                    f"{name:8s} seed {seed:5d}: val ppl {row['val_ppl']:8.2f} | "
                    f"{row['epoch_time_s']:7.1f} s | {row['tokens_per_s']:7.0f} tok/s",
                    flush=True,
                )
    print("\n| loop | seeds | median val ppl | median s/epoch | median tokens/s |")
    print("|---|---|---:|---:|---:|")
    summary = {}
    for name in ("tune_lm", "textbook"):
        mine = [row for row in rows if row["loop"] == name]
        if not mine:
            continue
        summary[name] = {
            k: statistics.median(r[k] for r in mine)
            for k in ("val_ppl", "epoch_time_s", "tokens_per_s")
        }
        s = summary[name]
        print(
            f"| {name} | {len(mine)} | {s['val_ppl']:.2f} | {s['epoch_time_s']:.1f} | "
            f"{s['tokens_per_s']:.0f} |"
        )
    if len(summary) == 2:
        ratio = summary["tune_lm"]["tokens_per_s"] / summary["textbook"]["tokens_per_s"]
        print(f"\nspeed ratio tune_lm / textbook: {ratio:.3f}")
    with open(args.json, "w") as handle:
        json.dump({"threads": args.threads, "runs": rows, "median": summary}, handle, indent=2)


if __name__ == "__main__":
    main()

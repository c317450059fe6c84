"""Training throughput, the speed features on and off, against a textbook loop; then the
adaptive softmax's speed and quality on WikiText-2 and a trial's peak memory.

Part 1, same process and data: for each standard configuration (2x200 LSTM/GRU on PTB and
WikiText-2, 2x650 LSTM on PTB) train ``--tokens`` tokens with

- ``textbook``: the PyTorch word-language-model example's loop (decoder, log-softmax +
  NLLLoss, ``model.zero_grad()``, clip, manual SGD, a ``loss.item()`` per batch);
- ``tune_lm``: ``fit()`` with the identical model and settings (fused cross-entropy,
  torch SGD, no per-batch host sync);
- ``tune_lm bf16``: the same with ``precision=bf16`` (training under bfloat16 autocast);
- ``adaptive`` and ``adaptive bf16``: the adaptive-softmax decoder (a different model).

Variants alternate within each round (order reversed every other round) and the table
gives medians over ``--rounds``. Training tokens per second only: the validation split
is cut to a few hundred tokens here, because evaluation speed is not what is measured.

Part 2, one subprocess per decoder (``python -m tune_lm.train``, the real CLI): the
2x200 LSTM on WikiText-2 trained for ``--quality-tokens`` tokens with the full and with
the adaptive softmax: training tokens/s, validation perplexity on the whole split after
the same tokens, and the trial process's peak resident memory.

    python benchmarks/throughput.py --json benchmarks/results/throughput.json

Uses ../shared/data when it is there (else TUNE_LM_DATA_DIR, the cache or a download).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from textbook import textbook_train  # benchmarks/ is on sys.path when run as a script

from tune_lm.lm.config import TrainConfig
from tune_lm.lm.corpus import Corpus
from tune_lm.lm.data import load_corpus
from tune_lm.lm.device import bf16_is_fast
from tune_lm.lm.fit import fit

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {  # name: (corpus, TrainConfig changes)
    "PTB LSTM 2x200": ("ptb", {"model": "LSTM"}),
    "PTB GRU 2x200": ("ptb", {"model": "GRU"}),
    "WT2 LSTM 2x200": ("wikitext-2", {"model": "LSTM"}),
    "WT2 GRU 2x200": ("wikitext-2", {"model": "GRU"}),
    "PTB LSTM 2x650": ("ptb", {"model": "LSTM", "emsize": 650, "nhid": 650, "dropout": 0.5}),
}
VARIANTS = {  # name: TrainConfig changes (None: the textbook loop)
    "textbook": None,
    "tune_lm": {},
    "tune_lm bf16": {"precision": "bf16"},
    "adaptive": {"decoder": "adaptive"},
    "adaptive bf16": {"decoder": "adaptive", "precision": "bf16"},
}


def textbook_tokens_per_s(config: TrainConfig, corpus: Corpus, max_tokens: int) -> float:
    """The example's training loop over ``max_tokens`` tokens; training tokens/s."""
    _, tokens, seconds = textbook_train(config, corpus, max_tokens)
    return tokens / seconds


def tune_lm_tokens_per_s(config: TrainConfig, corpus: Corpus, max_tokens: int) -> float:
    result = fit(config.replace(epochs=1, max_tokens_per_epoch=max_tokens), corpus=corpus,
                 evaluate_test=False)  # fmt: skip
    return result.history[0]["tokens_per_s"]


def throughput(args: argparse.Namespace) -> list[dict]:
    rows = []
    for setting, (data, changes) in SETTINGS.items():
        if args.settings and setting not in args.settings:
            continue
        full = load_corpus(data)
        # Training speed only: a short validation split keeps evaluation out of the way.
        corpus = dataclasses.replace(full, valid=full.valid[:400], test=full.test[:400])
        config = TrainConfig(data=data, device="cpu", threads=args.threads, **changes)
        speeds: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for round_index in range(args.rounds):
            order = list(VARIANTS) if round_index % 2 == 0 else list(VARIANTS)[::-1]
            for name in order:
                variant = VARIANTS[name]
                if variant is None:
                    speed = textbook_tokens_per_s(config, corpus, args.tokens)
                else:
                    speed = tune_lm_tokens_per_s(config.replace(**variant), corpus, args.tokens)
                speeds[name].append(speed)
                print(f"{setting:15s} round {round_index + 1} {name:14s} {speed:8.0f} tok/s",
                      flush=True)  # fmt: skip
        base = statistics.median(speeds["textbook"])
        for name, values in speeds.items():
            median = statistics.median(values)
            rows.append({"setting": setting, "variant": name, "tokens_per_s": median,
                         "runs": values, "vs_textbook": median / base})  # fmt: skip
    return rows


def quality_and_memory(args: argparse.Namespace) -> list[dict]:
    """Full vs adaptive softmax on WikiText-2 through the real CLI, one process each."""
    rows = []
    for decoder in ("full", "adaptive"):
        with tempfile.TemporaryDirectory() as scratch:
            metrics = Path(scratch) / "metrics.json"
            command = [sys.executable, "-m", "tune_lm.train", "--data", "wikitext-2",
                       "--model", "LSTM", "--epochs", "1", "--decoder", decoder,
                       "--max-tokens-per-epoch", str(args.quality_tokens), "--device", "cpu",
                       "--threads", str(args.threads), "--quiet", "--metrics-json",
                       str(metrics)]  # fmt: skip
            started = time.perf_counter()
            child = subprocess.Popen(command, cwd=REPO)
            peak_kib = 0
            while child.poll() is None:  # the high-water mark of the trainer's own memory
                peak_kib = max(peak_kib, _high_water_kib(child.pid))
                time.sleep(0.2)
            if child.returncode != 0:
                raise SystemExit(f"{' '.join(command)} exited {child.returncode}")
            wall = time.perf_counter() - started
            payload = json.loads(metrics.read_text())
        first = payload["history"][0]
        rows.append({
            "decoder": decoder, "tokens": args.quality_tokens,
            "tokens_per_s": first["tokens_per_s"], "val_ppl": first["val_ppl"],
            "wall_s": wall, "peak_rss_mib": peak_kib / 1024,
        })  # fmt: skip
        print(f"WT2 LSTM 2x200 {decoder:8s}: {first['tokens_per_s']:7.0f} tok/s, val ppl "
              f"{first['val_ppl']:.2f} after {args.quality_tokens} tokens, peak RSS "
              f"{peak_kib / 1024:.0f} MiB, {wall:.0f} s", flush=True)  # fmt: skip
    return rows


def _high_water_kib(pid: int) -> int:
    """VmHWM of a running process (its peak resident memory since exec), in KiB.
    (Not ru_maxrss: a forked child inherits this big process's resident set until exec.)"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--tokens", type=int, default=21_000, help="training tokens per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--settings", nargs="*", choices=list(SETTINGS), help="a subset")
    parser.add_argument("--quality-tokens", type=int, default=300_000)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--json", default="benchmarks/results/throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    shared = REPO.parent / "shared" / "data"
    if shared.is_dir():  # the team's copy of the corpora, also for the CLI subprocesses
        os.environ.setdefault("TUNE_LM_DATA_DIR", str(shared))
    machine = {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
               "torch": torch.__version__,
               "bf16_native": bf16_is_fast(torch.device("cpu"))}  # fmt: skip
    rows = throughput(args) if not args.skip_throughput else (
        json.loads(Path(args.json).read_text())["throughput"] if Path(args.json).is_file() else []
    )  # skipped: keep the figures of the previous run in --json
    quality = [] if args.skip_quality else quality_and_memory(args)

    print("\n| setting | " + " | ".join(VARIANTS) + " |")
    print("|---|" + "---:|" * len(VARIANTS))
    for setting in dict.fromkeys(row["setting"] for row in rows):
        cells = {row["variant"]: row for row in rows if row["setting"] == setting}
        print(f"| {setting} | " + " | ".join(
            f"{cells[v]['tokens_per_s']:,.0f} ({cells[v]['vs_textbook']:.2f}x)" for v in VARIANTS
        ) + " |")  # fmt: skip
    same_model = [row["vs_textbook"] for row in rows if row["variant"] == "tune_lm"]
    bf16 = [row["vs_textbook"] for row in rows if row["variant"] == "tune_lm bf16"]
    targets = {
        "fp32_vs_textbook_min": min(same_model, default=None),
        "fp32_vs_textbook_median": statistics.median(same_model) if same_model else None,
        "bf16_vs_textbook_min": min(bf16, default=None),
        "bf16_vs_textbook_median": statistics.median(bf16) if bf16 else None,
    }
    if len(quality) == 2:
        full, adaptive = quality
        targets["adaptive_speedup_wt2"] = adaptive["tokens_per_s"] / full["tokens_per_s"]
        targets["adaptive_val_ppl_change"] = adaptive["val_ppl"] / full["val_ppl"] - 1
        targets["peak_rss_mib_full"] = full["peak_rss_mib"]
        targets["peak_rss_mib_adaptive"] = adaptive["peak_rss_mib"]
    print("\ntargets: " + json.dumps(targets, indent=2))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(
        {"machine": machine, "args": vars(args), "throughput": rows, "wt2_decoders": quality,
         "targets": targets}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""The measurements of ``gpu_check.py``: matrix-product peak, training throughput against
the textbook loop, full-epoch times, and trial packing (one process per trial).

Everything here needs only torch and tune_lm's language-model layer, so it runs on a GPU
machine without Ray or MLflow. On a CPU the same code runs at toy sizes (``--dry-run``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from textbook import textbook_train  # benchmarks/ is on sys.path when run as a script

from tune_lm.lm import metrics as M
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.corpus import Corpus
from tune_lm.lm.data import load_corpus
from tune_lm.lm.fit import fit

# name: (corpus, TrainConfig changes); every other setting is the example's default
# (batch 20, bptt 35, lr 20, clip 0.25, dropout 0.2).
SETTINGS = {
    "PTB LSTM 2x200": ("ptb", {"model": "LSTM"}),
    "PTB GRU 2x200": ("ptb", {"model": "GRU"}),
    "WT2 LSTM 2x200": ("wikitext-2", {"model": "LSTM"}),
    "WT2 GRU 2x200": ("wikitext-2", {"model": "GRU"}),
    "PTB LSTM 2x650": ("ptb", {"model": "LSTM", "emsize": 650, "nhid": 650, "dropout": 0.5}),
    "PTB GRU 2x650": ("ptb", {"model": "GRU", "emsize": 650, "nhid": 650, "dropout": 0.5}),
}
VARIANTS = {  # name: TrainConfig changes (None: the textbook loop)
    "textbook fp32": None,
    "tune_lm fp32": {},
    "tune_lm bf16": {"precision": "bf16"},
    "graphed fp32": {"cuda_graph": True},  # the step replayed as one CUDA graph
    "graphed bf16": {"cuda_graph": True, "precision": "bf16"},
    "adaptive fp32": {"decoder": "adaptive"},
}
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int,
                  tf32: bool = False) -> float:  # fmt: skip
    """Throughput of a (size x size) @ (size x size) product, TFLOP/s (mean of ``repeats``
    after three warm-ups)."""
    left = torch.randn(size, size, device=device, dtype=dtype)
    right = torch.randn(size, size, device=device, dtype=dtype)
    was = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        for _ in range(3):
            left @ right
        synchronize(device)
        started = time.perf_counter()
        for _ in range(repeats):
            left @ right
        synchronize(device)
        seconds = time.perf_counter() - started
    finally:
        torch.backends.cuda.matmul.allow_tf32 = was
    return 2 * size**3 * repeats / seconds / 1e12


def peak(device: torch.device, size: int, repeats: int) -> dict[str, float]:
    return {
        "bf16_tflops": matmul_tflops(device, torch.bfloat16, size, repeats),
        "fp32_tflops": matmul_tflops(device, torch.float32, size, repeats),
        "tf32_tflops": matmul_tflops(device, torch.float32, size, repeats, tf32=True),
        "size": size,
    }


def train_flops_per_token(config: TrainConfig, ntokens: int) -> float | None:
    """Matrix-product FLOPs of one training token (forward + backward = 3x forward) for
    the full-softmax model; None for the adaptive softmax (its cost depends on the word)."""
    if config.decoder != "full":
        return None
    gates = GATES[config.model]
    forward = 0
    for layer in range(config.nlayers):
        inputs = config.emsize if layer == 0 else config.nhid
        forward += 2 * gates * config.nhid * (inputs + config.nhid)
    forward += 2 * config.nhid * ntokens
    return 3.0 * forward


def short_eval(corpus: Corpus, tokens: int = 400) -> Corpus:
    """The corpus with validation and test cut to ``tokens``: training speed is measured,
    so evaluation must stay out of the way."""
    return dataclasses.replace(corpus, valid=corpus.valid[:tokens], test=corpus.test[:tokens])


def tune_lm_tokens_per_s(config: TrainConfig, corpus: Corpus, warmup_batches: int,
                         measure_batches: int) -> float:  # fmt: skip
    """fit() for warm-up + measured batches, evaluated every ``warmup_batches``: the first
    segment is the warm-up, the median of the others is the speed (each segment's clock
    stops after a device sync, in fit). As a CUDA graph, a model with dropout between
    layers steps eagerly once and is captured again after each evaluation (fit seeds
    there); real runs evaluate about once an epoch, hence long segments here."""
    batch_tokens = config.batch_size * config.bptt
    segment = max(1, warmup_batches) * batch_tokens
    segments = max(1, measure_batches // max(1, warmup_batches))
    run = config.replace(epochs=1, max_tokens_per_epoch=segment * (segments + 1),
                         eval_every_tokens=segment)  # fmt: skip
    history = fit(run, corpus=corpus, evaluate_test=False).history
    measured = history[1:] or history
    return statistics.median(entry[M.TOKENS_PER_S] for entry in measured)


def textbook_tokens_per_s(config: TrainConfig, corpus: Corpus, device: torch.device,
                          warmup_batches: int, measure_batches: int) -> float:  # fmt: skip
    batch_tokens = config.batch_size * config.bptt
    _, tokens, seconds = textbook_train(config, corpus, measure_batches * batch_tokens,
                                        device=device, warmup_batches=warmup_batches)  # fmt: skip
    return tokens / seconds


def measure_variant(variant: str, config: TrainConfig, corpus: Corpus, device: torch.device,
                    warmup_batches: int, measure_batches: int) -> float:  # fmt: skip
    changes = VARIANTS[variant]
    if changes is None:
        return textbook_tokens_per_s(config, corpus, device, warmup_batches, measure_batches)
    return tune_lm_tokens_per_s(config.replace(**changes), corpus, warmup_batches,
                                measure_batches)  # fmt: skip


def full_epoch(config: TrainConfig, corpus: Corpus) -> dict[str, float]:
    """One whole training epoch and one validation pass over the whole split."""
    started = time.perf_counter()
    result = fit(config.replace(epochs=1), corpus=corpus, evaluate_test=False)
    wall = time.perf_counter() - started
    first = result.history[0]
    return {"train_s": first[M.EPOCH_TIME_S], "epoch_with_validation_s": wall,
            "tokens_per_s": first[M.TOKENS_PER_S], "val_ppl": first[M.VAL_PPL]}  # fmt: skip


class _MeasureDone(Exception):
    """Raised from the evaluation callback to end a packing worker's run."""


def packing_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One trial of a packing run: warm up, report ready, wait for the common start, train
    for ``seconds``, then report tokens/s and this process's peak GPU memory.

    ``spec``: config (TrainConfig dict), ready_file, go_file, seconds, segment_batches,
    result_file.
    """
    config = TrainConfig.from_dict(spec["config"])
    corpus = short_eval(load_corpus(config.data))
    segment_tokens = config.batch_size * config.bptt * spec["segment_batches"]
    run = config.replace(epochs=1_000_000, eval_every_tokens=segment_tokens,
                         max_tokens_per_epoch=segment_tokens * 1000)  # fmt: skip
    clock: dict[str, float] = {"tokens": 0}

    def on_evaluation(_epoch: float, _result: dict[str, float], _state: Any) -> None:
        now = time.time()
        if "start" not in clock:  # the first segment was the warm-up
            Path(spec["ready_file"]).write_text("ready")
            go_file = Path(spec["go_file"])
            while not go_file.exists():
                time.sleep(0.005)
            go = float(go_file.read_text())
            time.sleep(max(0.0, go - time.time()))
            clock["start"] = time.time()
            return
        clock["tokens"] += segment_tokens
        clock["end"] = now
        if now - clock["start"] >= spec["seconds"]:
            raise _MeasureDone

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(_MeasureDone):  # the callback ends the run
        fit(run, corpus=corpus, evaluate_test=False, on_epoch_end=on_evaluation)
    seconds = clock.get("end", time.time()) - clock.get("start", time.time())
    result = {"tokens": clock["tokens"], "seconds": seconds,
              "tokens_per_s": clock["tokens"] / seconds if seconds > 0 else math.nan}  # fmt: skip
    if torch.cuda.is_available():
        result["peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    Path(spec["result_file"]).write_text(json.dumps(result))
    return result

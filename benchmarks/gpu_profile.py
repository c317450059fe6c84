"""Where a training step's time goes (the GPU check's ``profile`` section).

The H200 ran every 2x200 and 2x650 model at the same ~6 ms per step, eager: either the
host (Python, one launch per kernel) or a chain of small serial kernels (cuDNN steps
through the bptt window one time step at a time) bounds it. This tells the two apart: for
the eager step and the step as a CUDA graph it measures the wall time per step, the time
the GPU spends in kernels per step (torch's profiler, CUPTI), and the kernels per step.
``gpu_busy`` near 1 means the device's own chain bounds the step, and no launch saving can
help; well below 1 means the GPU waits for the host. (Where the profiler records a replayed
graph as one device event, "kernels" counts those; the GPU ms are right either way.)
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from tune_lm.lm.batching import batchify, get_window, window_starts
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.corpus import Corpus
from tune_lm.lm.device import training_autocast
from tune_lm.lm.fit import make_optimizer
from tune_lm.lm.model import RNNLanguageModel
from tune_lm.lm.step import GraphedStep, eager_step

TOP_KERNELS = 6


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_step(config: TrainConfig, corpus: Corpus, device: torch.device, warmup: int,
                 timed: int, profiled: int) -> dict[str, Any]:  # fmt: skip
    """The training step as ``fit`` runs it (same model, optimizer, step): ``warmup``
    steps (capture included), ``timed`` steps on the clock, ``profiled`` under the profiler."""
    torch.manual_seed(config.seed)
    model = RNNLanguageModel.from_config(config, corpus.ntokens).to(device)
    model.train()
    optimizer = make_optimizer(config, model)
    data = batchify(corpus.train, config.batch_size).to(device)
    starts = window_starts(data.size(0), config.bptt)
    full = [s for s in starts if s + config.bptt + 1 <= data.size(0)]  # no short window
    if config.cuda_graph:
        step = GraphedStep(model, optimizer, config, device)
    else:
        step = functools.partial(eager_step, model, optimizer, config,
                                 training_autocast(config, device))  # fmt: skip
    state = {"hidden": None, "index": 0}

    def run(count: int) -> None:
        for _ in range(count):
            inputs, targets = get_window(data, full[state["index"] % len(full)], config.bptt)
            _, state["hidden"] = step(inputs, targets, state["hidden"])
            state["index"] += 1

    run(warmup)
    _synchronize(device)
    started = time.perf_counter()
    run(timed)
    _synchronize(device)
    wall_ms = (time.perf_counter() - started) * 1000 / timed

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as trace:
        run(profiled)
        _synchronize(device)
    kernels = [e for e in trace.events() if e.device_type == DeviceType.CUDA]
    by_name: Counter[str] = Counter()
    for event in kernels:  # kernels, memcpys and memsets, graph-launched ones included
        by_name[event.name[:80]] += event.time_range.elapsed_us()
    device_us = sum(by_name.values())
    if device.type == "cuda" and not kernels:
        raise RuntimeError("the profiler recorded no CUDA kernels (CUPTI unavailable?), so "
                           "the GPU's share of the step is unknown")  # fmt: skip
    cpu_ops = [e for e in trace.events() if e.device_type == DeviceType.CPU]
    result = {
        "wall_ms_per_step": wall_ms,
        "device_ms_per_step": device_us / 1000 / profiled,
        "gpu_busy": device_us / 1000 / profiled / wall_ms if kernels else None,
        "kernels_per_step": len(kernels) / profiled,
        "host_ops_per_step": len(cpu_ops) / profiled,
        "top_kernels_ms_per_step": {name: us / 1000 / profiled
                                    for name, us in by_name.most_common(TOP_KERNELS)},
        "steps": {"warmup": warmup, "timed": timed, "profiled": profiled},
    }  # fmt: skip
    if isinstance(step, GraphedStep):
        result["captures"] = step.captures
    return result


# (setting of gpu_measure.SETTINGS, variant): the 2x200 cells and the 2x650 LSTM, eager
# and as a CUDA graph, fp32 (the target settings)
PROFILED = [(setting, graph) for setting in ("PTB LSTM 2x200", "PTB GRU 2x200", "PTB LSTM 2x650")
            for graph in (False, True)]  # fmt: skip


def profile_section(check: Any) -> dict[str, Any]:
    """The GPU check's ``profile`` section (``check``: gpu_check.Check)."""
    from gpu_measure import SETTINGS, short_eval

    warmup, timed, profiled = (2, 3, 2) if check.args.dry_run else (20, 100, 20)
    rows, errors = [], {}
    for setting, graph in PROFILED[:2] if check.args.dry_run else PROFILED:
        if check.left_s() < 10 and not check.args.dry_run:
            return {"rows": rows, "partial": True, "errors": errors}
        if graph and not check.graphs:
            continue
        check.child.beat()
        data, changes = SETTINGS[setting]
        corpus = short_eval(check.corpus(data))
        config = TrainConfig(data=data, device=str(check.device), cuda_graph=graph,
                             **{**changes, **check.toy})  # fmt: skip
        step = "CUDA graph" if graph else "eager"
        try:
            measured = profile_step(config, corpus, check.device, warmup, timed, profiled)
            row = {"setting": setting, "step": step, **measured}
        except Exception as error:  # the other rows still count
            check.child.check_after_error(check.device, error)
            errors[f"{setting} {step}"] = f"{type(error).__name__}: {error}"[:500]
            continue
        rows.append(row)
        busy = row["gpu_busy"]
        print(f"   {setting} {step}: {row['wall_ms_per_step']:.2f} ms/step, GPU busy "
              f"{'-' if busy is None else f'{busy:.0%}'}, "
              f"{row['kernels_per_step']:.0f} kernels/step", flush=True)  # fmt: skip
    return {"rows": rows, "partial": False, "errors": errors}

"""Will a training fit in memory? A lower bound of what training surely allocates, checked
before anything is allocated, so that an absurd size (``--emsize 10000000000``) is refused
with the fields to change instead of failing in torch's allocator (or being killed by the
kernel) after the corpus has loaded.

The bound counts only what cannot be avoided: the weights, their gradients, the
optimizer's state, and one training batch's logits and their gradient (a full softmax's
output is batch_size x bptt x vocabulary). Activations, cuDNN workspaces and the
allocator's caching come on top, so a configuration refused here could never have run.
"""

from __future__ import annotations

import os

import torch

from tune_lm.lm.config import TrainConfig
from tune_lm.lm.errors import ConfigError

GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
FLOAT_BYTES = 4  # weights, gradients and logits are float32 (bf16 autocast keeps fp32 weights)
GIB = 1024**3


def parameter_count(config: TrainConfig, ntokens: int) -> int:
    """Weights of the embedding, the recurrent layers and a full-softmax decoder (an
    adaptive one is counted as nothing: a lower bound)."""
    gates = GATES.get(config.model, 1)
    embedding = ntokens * config.emsize
    first = gates * config.nhid * (config.emsize + config.nhid + 2)
    others = (config.nlayers - 1) * gates * config.nhid * (2 * config.nhid + 2)
    decoder = 0
    if config.decoder != "adaptive":
        decoder = ntokens + (0 if config.tied else config.nhid * ntokens)
    return embedding + first + others + decoder


def training_bytes(config: TrainConfig, ntokens: int) -> int:
    """At least this many bytes on the training device (see the module's note)."""
    weights = parameter_count(config, ntokens)
    optimizer_copies = 2 if config.optimizer == "adamw" else 0  # SGD keeps no state
    logits = 0 if config.decoder == "adaptive" else config.batch_size * config.bptt * ntokens
    return FLOAT_BYTES * ((2 + optimizer_copies) * weights + 2 * logits)


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` now (CUDA's free memory; MemAvailable for the CPU), or
    None where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_problem(config: TrainConfig, ntokens: int, available: int | None,
                   where: str) -> str | None:  # fmt: skip
    """Why ``config`` cannot train within ``available`` bytes (``where``: the device or
    node, for the message), else None."""
    needed = training_bytes(config, ntokens)
    if available is None or needed <= available:
        return None
    logits = "" if config.decoder == "adaptive" else (
        f", batch_size {config.batch_size} x bptt {config.bptt} x vocabulary {ntokens} "
        "logits")  # fmt: skip
    return (f"training {config.model} emsize {config.emsize}, nhid {config.nhid}, nlayers "
            f"{config.nlayers} needs at least {needed / GIB:,.1f} GiB (its "
            f"{parameter_count(config, ntokens):,} weights with their gradients"
            f"{' and AdamW state' if config.optimizer == 'adamw' else ''}{logits}), but "
            f"{where} has {available / GIB:,.1f} GiB free. Lower emsize, nhid, nlayers, "
            f"batch_size or bptt, or use decoder adaptive for a large vocabulary")  # fmt: skip


def check_fits_in_memory(config: TrainConfig, ntokens: int, device: torch.device) -> None:
    """Refuse a training that cannot fit in ``device``'s free memory, before allocating."""
    problem = memory_problem(config, ntokens, available_bytes(device), f"the {device} device")
    if problem:
        raise ConfigError(problem)

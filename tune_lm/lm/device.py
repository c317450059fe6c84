"""Where a training run computes and at what precision: the device, bf16 autocast (on
CUDA, and on CPUs whose oneDNN runs bf16 fast), and oneDNN's switch."""

from __future__ import annotations

import logging

import torch

from tune_lm.lm.config import TrainConfig
from tune_lm.lm.errors import ConfigError

log = logging.getLogger(__name__)

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name!r} but no CUDA GPU is visible; use --device cpu")
        count, index = torch.cuda.device_count(), int(name.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(f"device={name!r} but this machine has {count} CUDA GPU(s), "
                              f"cuda:0 to cuda:{count - 1}; use one of them, or cuda")  # fmt: skip
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device='mps' (an Apple GPU) but this machine or this torch has no "
                          "MPS; use --device cpu or auto")  # fmt: skip
    return torch.device(name)


def training_autocast(
    config: TrainConfig, device: torch.device, *, cache: bool = True
) -> TrainingPrecision:
    """bf16 autocast for the training forward pass (``precision: bf16``), else a no-op.

    Weights, optimizer state and gradients stay fp32; evaluation is not autocast, so the
    reported perplexities are fp32 scores of the trained weights. Reusable: enter it once
    per batch. ``cache=False`` for a region captured as a CUDA graph (torch asks that
    autocast's cast cache be off there)."""
    enabled = config.precision == "bf16"
    emulated = enabled and not bf16_is_fast(device)
    if emulated:
        log.warning("precision=bf16 on %s without native bf16 support: expect it slower", device)
    return TrainingPrecision(device, enabled, keep_onednn=not (emulated and device.type == "cpu"),
                             cache=cache)  # fmt: skip


class TrainingPrecision:
    """torch.autocast, plus oneDNN switched off while it is active on a CPU without native
    bf16: oneDNN has no bf16 LSTM there (it fails to build the primitive), while torch's
    own kernels run the recurrent layers in fp32 and the rest in emulated bf16."""

    def __init__(
        self, device: torch.device, enabled: bool, keep_onednn: bool = True, cache: bool = True
    ) -> None:
        self.autocast = torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=cache
        )
        self.keep_onednn = keep_onednn
        self._onednn_was = True

    def __enter__(self) -> TrainingPrecision:
        if not self.keep_onednn:
            self._onednn_was = torch.backends.mkldnn.enabled
            torch.backends.mkldnn.enabled = False
        self.autocast.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.autocast.__exit__(*exc_info)
        if not self.keep_onednn:
            torch.backends.mkldnn.enabled = self._onednn_was


def bf16_is_fast(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False

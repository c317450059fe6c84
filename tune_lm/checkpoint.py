"""Checkpoints on disk: plain tensors and primitives, written atomically.

A model checkpoint is ``{"format", "config", "vocab", "model_state", "metrics"}``;
a training state (for resuming) is the dict of :meth:`tune_lm.train.TrainState.to_dict`.
Both load with ``torch.load(weights_only=True)``: nothing is unpickled but tensors,
strings, numbers, lists and dicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tune_lm.atomic import atomic_file
from tune_lm.config import TrainConfig
from tune_lm.errors import TuneLMError
from tune_lm.model import RNNLanguageModel

MODEL_FORMAT = "tune_lm.model/1"


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` written whole or not at all (see :func:`tune_lm.atomic.atomic_file`)."""
    with atomic_file(path) as out:
        torch.save(obj, out)


def save_model(
    path: str | Path,
    model: RNNLanguageModel,
    config: TrainConfig,
    vocab: tuple[str, ...] | list[str],
    metrics: dict[str, float] | None = None,
    model_state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Save weights (``model_state`` if given, else the model's), config and vocabulary."""
    state = model_state if model_state is not None else model.state_dict()
    atomic_torch_save(
        {
            "format": MODEL_FORMAT,
            "config": config.to_dict(),
            "vocab": list(vocab),
            "model_state": {name: tensor.detach().cpu() for name, tensor in state.items()},
            "metrics": dict(metrics or {}),
        },
        path,
    )


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[RNNLanguageModel, TrainConfig, list[str]]:
    """Rebuild the model saved by :func:`save_model`; returns (model, config, vocab)."""
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise TuneLMError(f"checkpoint {path} does not exist") from None
    except Exception as error:  # a truncated or foreign file
        raise TuneLMError(f"checkpoint {path} cannot be read ({error})") from None
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise TuneLMError(f"{path} is not a tune_lm model checkpoint ({MODEL_FORMAT})")
    config = TrainConfig.from_dict(saved["config"], source=str(path))
    model = RNNLanguageModel.from_config(config, len(saved["vocab"])).to(device)
    model.load_state_dict(saved["model_state"])
    return model, config, saved["vocab"]

"""A training run's resumable state: what :func:`tune_lm.lm.fit.fit` saves at every
evaluation boundary and resumes from, exactly (weights, optimizer, learning rate,
hidden state, generators' seeds), which config changes a resume may make, and which a
population-based schedule may make mid-training (:func:`adopt`)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from tune_lm.lm.config import PERTURBABLE, TrainConfig
from tune_lm.lm.errors import ConfigError
from tune_lm.lm.model import Hidden

STATE_FORMAT = "tune_lm.train_state/1"
# Fields that may differ between a saved state and the config that resumes it.
RESUMABLE_CHANGES = {"epochs", "device", "threads", "data", "cuda_graph"}


@dataclass
class TrainState:
    """Everything needed to continue a run exactly where an evaluation left it."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    lr: float
    epoch: int  # completed epochs
    window: int  # windows done in the current epoch
    cursor: int  # index of the next training window in the corpus (wraps when capped)
    hidden: list[torch.Tensor] | None  # training hidden state at the cursor
    best_val_loss: float
    best_model: dict[str, torch.Tensor] | None
    train_time_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    rng: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    # Each change adopt() made: {"epoch", "window", and per field [old, new]}.
    perturbations: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of plain tensors/primitives, safe to ``torch.save`` and to load
        with ``weights_only=True``. Call it inside the callback: the live state moves on."""
        return copy.deepcopy({"format": STATE_FORMAT, **self.__dict__})

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainState:
        if saved.get("format") != STATE_FORMAT:
            raise ConfigError(f"not a tune_lm training state (expected {STATE_FORMAT})")
        return cls(**{key: value for key, value in saved.items() if key != "format"})


def hidden_to_list(hidden: Hidden | None) -> list[torch.Tensor] | None:
    if hidden is None:
        return None
    return [hidden] if isinstance(hidden, torch.Tensor) else list(hidden)


def hidden_from_list(parts: list[torch.Tensor] | None, device: torch.device) -> Hidden | None:
    if parts is None:
        return None
    parts = [part.to(device) for part in parts]
    return parts[0] if len(parts) == 1 else tuple(parts)


def rng_state() -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def reseed(seed: int, evaluations: int) -> None:
    """Seed every generator from (seed, evaluations done) at each evaluation boundary.

    A run resumed from a boundary then draws exactly the random numbers an unbroken run
    draws after it: restoring saved generator states would not do that on a GPU, where
    cuDNN keeps its own dropout stream between layers that torch re-initialises only
    after a manual seed."""
    torch.manual_seed((seed * 1_000_003 + evaluations) % 2**63)


def check_resumable(state: TrainState, config: TrainConfig) -> None:
    current = config.to_dict()
    changed = sorted(
        key
        for key in current
        if key not in RESUMABLE_CHANGES and state.config.get(key) != current[key]
    )
    if changed:
        details = ", ".join(f"{k}: {state.config.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ConfigError(
            f"cannot resume: the saved state was trained with a different config ({details}). "
            "Resume with the original values, or start a new run"
        )


def adopt(state: TrainState, config: TrainConfig) -> TrainState:
    """``state`` continued under ``config``, which may differ from the config it was
    trained with in :data:`PERTURBABLE` fields (and those a resume may change): the new
    learning rate takes over from the saved one (annealed or not), the new dropout from
    the next batch on, and the change is recorded in ``perturbations``. Any other
    difference is refused, as by :func:`check_resumable`. ``state`` is left as it was."""
    current = config.to_dict()
    changes = {key: [state.config.get(key), current[key]] for key in PERTURBABLE
               if key in current and state.config.get(key) != current[key]}  # fmt: skip
    if not changes:
        return state
    adopted = dataclasses.replace(
        state,
        config={**state.config, **{key: new for key, (_, new) in changes.items()}},
        lr=config.lr if "lr" in changes else state.lr,
        perturbations=[*state.perturbations,
                       {"epoch": state.epoch, "window": state.window, **changes}],
    )  # fmt: skip
    check_resumable(adopted, config)
    return adopted

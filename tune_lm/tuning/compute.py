"""The compute ledger: what a search spent, so that results are compared at equal compute.

Per phase (``search``: the trials; ``confirm``: the finalists' runs; ``test``: scoring the
chosen weights on test): trial-epochs, the trials' training seconds (validation and
start-up excluded), and the CPU- and GPU-seconds those trials held (training seconds x
the CPUs and GPUs reserved per trial). Confirmation runs score test inside their own
trials; ``test`` is the driver's scoring of the search's winner (or Pareto set).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from tune_lm.lm import metrics as M
from tune_lm.tuning.space import SearchSpace


def phase(epochs_and_seconds: Iterable[tuple[float, float]], space: SearchSpace) -> dict[str, Any]:
    """Totals of (epochs run, training seconds) pairs, one pair per trial."""
    pairs = [(e, s) for e, s in epochs_and_seconds if math.isfinite(e) and math.isfinite(s)]
    seconds = sum(s for _, s in pairs)
    return {"trials": len(pairs), "trial_epochs": round(sum(e for e, _ in pairs), 3),
            "train_seconds": round(seconds, 1),
            "cpu_seconds": round(seconds * space.resources.cpus_per_trial, 1),
            "gpu_seconds": round(seconds * space.resources.gpus_per_trial, 1)}  # fmt: skip


def trial_spend(history: list[dict[str, float]]) -> tuple[float, float]:
    """(epochs run, training seconds) of one trial, from its evaluations."""
    epochs = max((h[M.EPOCH] for h in history if M.EPOCH in h), default=0.0)
    seconds = max((h[M.TRAIN_TIME_S] for h in history if M.TRAIN_TIME_S in h), default=0.0)
    return float(epochs), float(seconds)


def compute_ledger(histories: Iterable[list[dict[str, float]]], space: SearchSpace, *,
                   test_seconds: float,
                   confirm: list[tuple[float, float]] | None = None) -> dict[str, Any]:  # fmt: skip
    """The search's compute ledger (see the module's doc) from its trials' evaluations."""
    spent = {"search": phase((trial_spend(history) for history in histories), space)}
    if confirm is not None:
        spent["confirm"] = phase(confirm, space)
    spent["test"] = {"seconds": round(test_seconds, 3)}  # a tiny model scores in ms
    spent["total"] = {key: round(sum(p.get(key, 0) for p in spent.values()), 1)
                      for key in ("trial_epochs", "train_seconds", "cpu_seconds", "gpu_seconds")}
    return spent


def describe_compute(spent: dict[str, Any]) -> str:
    """One line: each phase's trial-epochs and CPU/GPU-hours."""
    parts = []
    for name in ("search", "confirm"):
        if name in spent:
            part = spent[name]
            gpu = f", {part['gpu_seconds'] / 3600:.2f} GPU-h" if part["gpu_seconds"] else ""
            parts.append(f"{name} {part['trial_epochs']:g} trial-epochs, "
                         f"{part['cpu_seconds'] / 3600:.2f} CPU-h{gpu}")  # fmt: skip
    parts.append(f"test {spent['test']['seconds']:.0f} s")
    return "; ".join(parts)

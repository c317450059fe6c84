"""Which trials are a space's baselines (``baselines:``), so that no early stop ends them.

A baseline is a configuration the user already trusts (e.g. the PyTorch example's
defaults). It is run first, and to its full budget whatever ASHA's rungs say: its
values still count at every rung (they raise the bar for the others), but a search that
stopped it at epoch 3 could end worse than what its user already knew. Good
configurations are often slow starters, so this happens: in the replayed PTB curves the
PyTorch defaults' nearest recorded trial is in the worse half at epoch 3 and second of
200 at epoch 27.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def is_baseline(config: Mapping[str, Any], baselines: Iterable[Mapping[str, Any]]) -> bool:
    """Whether a trial's ``config`` gives every parameter of one baseline its value."""
    return any(all(k in config and config[k] == v for k, v in baseline.items())
               for baseline in baselines)  # fmt: skip

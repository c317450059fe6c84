"""The results of a search: its trials' rows, the winner, the Pareto set, and which
trials get a test score. A pure function of Tune's results and the space: no Ray here."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points that no other point dominates (every coordinate minimised:
    another point at least as good everywhere and better somewhere)."""
    front = []
    for i, point in enumerate(points):
        if not all(math.isfinite(v) for v in point):
            continue
        dominated = any(
            all(a <= b for a, b in zip(other, point, strict=True)) and tuple(other) != tuple(point)
            for j, other in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front

"""Differences with their noise: is one configuration really better than another?

Two samples of a score (one value per seed) are compared by the difference of their
means with Welch's 95% interval (unequal variances; Student's t with the
Welch-Satterthwaite degrees of freedom). The difference is *within noise* when the
interval holds 0. With two or three seeds each the interval is wide: that is the answer,
not a flaw (Melis et al. 2018 found about 1 perplexity point between seeds of the same
tuned LSTM).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Difference:
    """mean(b) - mean(a), its 95% interval, and the verdict in words."""

    diff: float
    low: float
    high: float

    @property
    def within_noise(self) -> bool:
        return not (self.low > 0 or self.high < 0)

    def words(self, unit: str = "") -> str:
        interval = f"{self.diff:+.2f}{unit} [95% CI {self.low:+.2f}, {self.high:+.2f}]"
        if not math.isfinite(self.low):
            return f"{interval}: too few seeds to tell"
        return f"{interval}: {'within noise' if self.within_noise else 'a real difference'}"

    def as_dict(self) -> dict[str, float | bool]:
        return {"diff": self.diff, "ci95_low": self.low, "ci95_high": self.high,
                "within_noise": self.within_noise}  # fmt: skip


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN where there are too few values)."""
    finite = [v for v in values if math.isfinite(v)]
    mean = statistics.fmean(finite) if finite else math.nan
    sd = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return mean, sd


def difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """mean(b) - mean(a) with Welch's 95% interval (infinite with fewer than 2 values
    each; a point when both samples have no spread at all)."""
    a = [v for v in a if math.isfinite(v)]
    b = [v for v in b if math.isfinite(v)]
    if not a or not b:
        return Difference(math.nan, -math.inf, math.inf)
    diff = statistics.fmean(b) - statistics.fmean(a)
    if len(a) < 2 or len(b) < 2:
        return Difference(diff, -math.inf, math.inf)
    var_a, var_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if var_a + var_b == 0:
        return Difference(diff, diff, diff)
    freedom = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, freedom)) * math.sqrt(var_a + var_b)
    return Difference(diff, diff - half, diff + half)

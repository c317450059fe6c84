"""Expected best validation perplexity against the number of trials (Dodge et al. 2019,
"Show your work"): would more budget still pay?

From the N trials a search ran, the expected best of n trials (n = 1 .. N) drawn from
them with replacement is exact: with the values sorted best first, v_1 <= ... <= v_N, the
best of n draws is v_i with probability ((N-i+1)/N)^n - ((N-i)/N)^n. Its 95% interval
comes from resampling the trials (bootstrap). The estimator treats trials as independent
draws of one procedure: exact for random search; for a searcher that learns (TPE) or a
scheduler that stops trials early (ASHA: a stopped trial counts with its best so far),
it describes the trials the search made, in any order, and is a conservative view of
what the same number of trials would give again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _weights(total: int) -> np.ndarray:
    """W[n-1, i]: probability that the best of n draws is the (i+1)-th best of ``total``."""
    left = (total - np.arange(total)) / total  # (N - i) / N for i = 0 .. N-1
    powers = np.arange(1, total + 1)[:, None]
    return left[None, :] ** powers - (left[None, :] - 1 / total) ** powers


def expected_best(values: Sequence[float], n: int) -> float:
    """Expected minimum of ``n`` draws with replacement from ``values`` (finite only)."""
    ordered = np.sort([v for v in values if math.isfinite(v)])
    if not len(ordered) or n < 1:
        return math.nan
    left = (len(ordered) - np.arange(len(ordered))) / len(ordered)
    return float(np.sum(ordered * (left**n - (left - 1 / len(ordered)) ** n)))


def expected_best_curve(values: Sequence[float], draws: int = 1000,
                        seed: int = 0) -> list[dict[str, float]]:  # fmt: skip
    """For n = 1 .. N: the expected best of n trials and a bootstrap 95% interval."""
    finite = np.array([v for v in values if math.isfinite(v)], dtype=float)
    if not len(finite):
        return []
    weights = _weights(len(finite))
    expected = weights @ np.sort(finite)
    rng = np.random.default_rng(seed)
    samples = np.sort(rng.choice(finite, size=(draws, len(finite)), replace=True), axis=1)
    spread = samples @ weights.T  # draws x N
    low, high = np.quantile(spread, [0.025, 0.975], axis=0)
    return [{"trials": n + 1, "expected_best": float(expected[n]),
             "ci95_low": float(low[n]), "ci95_high": float(high[n])}
            for n in range(len(finite))]  # fmt: skip

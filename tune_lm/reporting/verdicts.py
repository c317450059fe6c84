"""Grouped comparisons with their noise: is LSTM's best really better than GRU's?

A grouped table (``by_model``, ``--by bptt``, ...) compares the best trial of each group.
Each of those is one run, so the difference between two groups carries the seed-to-seed
noise of both. That noise is measured where the search measured it:

- the confirmed finalists (``confirm:``): each trained under several fresh seeds;
- else a grid's repeats (``budget.num_samples`` > 1): each cell under several seeds.

The pooled standard deviation s over those (root mean square of their sample standard
deviations) gives each group's difference from the best group a 95% interval of
± 1.96 x sqrt(2) x s (two single runs, normal approximation), and the verdict "within
noise" when the difference is inside it. Without either measurement the table says the
noise is unknown, and how to measure it.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from tune_lm.lm import metrics as M

Z95 = 1.96


def seed_noise(summary: dict[str, Any]) -> tuple[float, str] | None:
    """(pooled seed-to-seed sd of validation perplexity, where it was measured), or None."""
    confirmed = [e.get("val_ppl_sd") for e in summary.get("confirmed") or []]
    sds = [float(sd) for sd in confirmed if isinstance(sd, int | float) and math.isfinite(sd)]
    where = f"{len(sds)} confirmed finalist(s)"
    if not sds:
        names = [n for n in summary.get("space", {}).get("parameters", {}) if n != "seed"]
        cells: dict[tuple, list[float]] = {}
        for trial in summary.get("trials", []):
            value = trial.get(M.BEST_VAL_PPL)
            if "seed" in trial and isinstance(value, int | float) and math.isfinite(value):
                cells.setdefault(tuple(str(trial.get(n)) for n in names), []).append(value)
        sds = [statistics.stdev(values) for values in cells.values() if len(values) > 1]
        where = f"{len(sds)} grid cell(s) repeated over seeds"
    if not sds:
        return None
    return math.sqrt(statistics.fmean(sd * sd for sd in sds)), where


def add_verdicts(rows: list[dict[str, Any]], noise: tuple[float, str] | None) -> None:
    """Each grouped row (sorted best first) gets ``vs_best`` and ``verdict``."""
    finite = [row for row in rows if math.isfinite(row[M.BEST_VAL_PPL])]
    if not finite:
        return
    best = finite[0][M.BEST_VAL_PPL]
    for row in rows:
        diff = row[M.BEST_VAL_PPL] - best
        if row is finite[0]:
            row["vs_best"], row["verdict"] = "", "best"
        elif not math.isfinite(diff):
            row["vs_best"], row["verdict"] = "", "no finished trial"
        elif noise is None:
            row["vs_best"] = f"{diff:+.2f}"
            row["verdict"] = "noise unknown (confirm: or grid repeats measure it)"
        else:
            half = Z95 * math.sqrt(2) * noise[0]
            row["vs_best"] = f"{diff:+.2f} [{diff - half:+.2f}, {diff + half:+.2f}]"
            row["verdict"] = ("within noise" if diff < half else "worse") + \
                f" (seed sd {noise[0]:.2f} from {noise[1]})"

"""The values an experiment's earlier trials reached at ASHA's rungs, read back from their
``result.json`` files, so that a restored ASHA (``--resume``, ``--extend``) judges new
results against them as the ASHA that saw them did."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

from tune_lm.lm import metrics as M


def first_values_at(result_file: Path, milestones: Iterable[float],
                    metric: str = M.VAL_PPL) -> tuple[str | None, dict[float, float]]:  # fmt: skip
    """(trial id, {milestone: the metric at the first evaluation at or after it}) of one
    trial's ``result.json``: what ASHA recorded for it at each rung it reached. Lines cut
    by a crash and non-finite values are skipped."""
    trial_id, found = None, {}
    wanted = sorted(set(milestones))
    try:
        lines = result_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None, {}
    for line in lines:
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if not isinstance(result, dict):
            continue
        trial_id = trial_id or result.get("trial_id")
        epoch, value = result.get(M.EPOCH), result.get(metric)
        if not isinstance(epoch, int | float) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            continue
        for milestone in wanted:
            if epoch >= milestone and milestone not in found:
                found[milestone] = float(value)
    return (str(trial_id) if trial_id is not None else None), found


def rung_values(experiment_dir: Path, milestones: Iterable[float],
                metric: str = M.VAL_PPL) -> dict[float, dict[str, float]]:  # fmt: skip
    """{milestone: {trial id: value}} over every trial folder of ``experiment_dir``."""
    milestones = list(milestones)
    rungs: dict[float, dict[str, float]] = {m: {} for m in milestones}
    for result_file in sorted(experiment_dir.glob("*/result.json")):
        trial_id, values = first_values_at(result_file, milestones, metric)
        if trial_id is None:
            continue
        for milestone, value in values.items():
            rungs[milestone][trial_id] = value
    return rungs

"""The values an experiment's earlier trials reached at ASHA's rungs, read back from their
``result.json`` files, so that a restored ASHA, Hyperband or MO-ASHA (``--resume``,
``--extend``) judges new results against them as the scheduler that saw them did.

Hyperband puts each trial in one of its brackets at random; which one is noted in
``asha_brackets.jsonl`` beside the experiment, so that a restored Hyperband keeps every
trial, earlier or resumed, in its own bracket.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tune_lm.lm import metrics as M
from tune_lm.tuning.console import say
from tune_lm.tuning.layout import BRACKETS_FILE


def first_values_at(result_file: Path, milestones: Iterable[float],
                    metrics: Sequence[str] = (M.VAL_PPL,),
                    ) -> tuple[str | None, dict[float, tuple[float, ...]]]:  # fmt: skip
    """(trial id, {milestone: the metrics at the first evaluation at or after it}) of one
    trial's ``result.json``: what ASHA recorded for it at each rung it reached. Lines cut
    by a crash, and evaluations where a metric is missing or not finite, are skipped."""
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
        epoch, values = result.get(M.EPOCH), [result.get(name) for name in metrics]
        if not isinstance(epoch, int | float):
            continue
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            continue
        for milestone in wanted:
            if epoch >= milestone and milestone not in found:
                found[milestone] = tuple(float(v) for v in values)
    return (str(trial_id) if trial_id is not None else None), found


def rung_values(experiment_dir: Path, milestones: Iterable[float],
                metrics: Sequence[str] = (M.VAL_PPL,),
                ) -> dict[float, dict[str, tuple[float, ...]]]:  # fmt: skip
    """{milestone: {trial id: metric values}} over every trial folder of ``experiment_dir``."""
    milestones = list(milestones)
    rungs: dict[float, dict[str, tuple[float, ...]]] = {m: {} for m in milestones}
    for result_file in sorted(experiment_dir.glob("*/result.json")):
        trial_id, values = first_values_at(result_file, milestones, metrics)
        if trial_id is None:
            continue
        for milestone, value in values.items():
            rungs[milestone][trial_id] = value
    return rungs


def record_bracket(experiment_dir: Path, trial_id: str, bracket: int) -> None:
    experiment_dir.mkdir(parents=True, exist_ok=True)
    with (experiment_dir / BRACKETS_FILE).open("a", encoding="utf-8") as out:
        out.write(json.dumps({"trial_id": trial_id, "bracket": bracket}) + "\n")


def read_brackets(experiment_dir: Path) -> dict[str, int]:
    """trial id -> its Hyperband bracket, as noted when the trial was added."""
    found: dict[str, int] = {}
    path = experiment_dir / BRACKETS_FILE
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
                found[str(entry["trial_id"])] = int(entry["bracket"])
            except (ValueError, KeyError, TypeError):  # a line cut by a crash
                continue
    return found


class RefilledOnRestore:
    """Mixin for tune_lm's ASHA schedulers. Unpickled by ``Tuner.restore`` (a resumed or
    extended search), a scheduler's rungs are empty; it notes which trials were restored
    as ended and, before it judges the first new result, records what they reached at
    its rungs (``refill_rungs``, by the scheduler). A trial restored unfinished reports
    its later epochs itself."""

    label = "ASHA"  # the scheduler's name in what tune_lm says

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._refill = True
        self._ended_before: set[str] = set()

    def note_restored(self, trial: Any) -> None:
        if getattr(self, "_refill", False) and trial.status in ("TERMINATED", "ERROR"):
            self._ended_before.add(trial.trial_id)  # restored as ended: it reports no more

    def refill_once(self) -> None:
        if self.__dict__.pop("_refill", False):
            added = self.refill_rungs()
            if added:
                say(f"{self.label}: {added} rung value(s) of the earlier trials "
                    "restored; new results are judged against them")  # fmt: skip

    def refill_rungs(self) -> int:
        raise NotImplementedError

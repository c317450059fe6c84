"""MO-ASHA: ASHA whose rungs promote by non-dominated sorting on several objectives.

With ``objectives: [val_ppl, epoch_time_s]`` plain ASHA stops trials on perplexity
alone, so a fast model that is slightly worse never reaches the budget at which the
trade-off could be judged. ``scheduler: {type: mo_asha}`` (after Schmucker et al.,
"Multi-objective asynchronous successive halving", 2021) ranks the trials recorded at a
rung by Pareto front, ties within a front broken by the first objective, and lets a
trial go on when it is among the best ``1 / reduction_factor`` of them (always the
first to arrive), as ASHA does with one objective.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from tune_lm.lm import metrics as M
from tune_lm.tuning.baselines import is_baseline
from tune_lm.tuning.rung_history import RefilledOnRestore, rung_values


def front_ranks(points: dict[str, tuple[float, ...]]) -> dict[str, int]:
    """Each point's Pareto front, 0 for the non-dominated (all objectives minimised)."""
    left, ranks, front = dict(points), {}, 0
    while left:
        best = [k for k, p in left.items()
                if not any(_dominates(q, p) for j, q in left.items() if j != k)]  # fmt: skip
        for key in best:
            ranks[key] = front
            del left[key]
        front += 1
    return ranks


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


class MultiObjectiveASHA(RefilledOnRestore, ASHAScheduler):
    """See the module. Its stops go to ``ledger`` (a StopLedger), like ASHA's; the
    ``baselines`` are never stopped early (see :mod:`tune_lm.tuning.baselines`).
    Restored, it refills its rungs from the earlier trials (``RefilledOnRestore``)."""

    label = "MO-ASHA"

    def __init__(self, *, ledger: Any, max_t: float, objectives: list[str], modes: list[str],
                 rungs: list[float], baselines: list[dict[str, Any]] | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(max_t=max_t, **kwargs)
        self.baselines = [dict(b) for b in baselines or ()]
        self.ledger, self.max_epochs = ledger, max_t
        self.objectives = list(objectives)
        self.signs = [1.0 if mode == "min" else -1.0 for mode in modes]
        self.rung_epochs = sorted(rungs)
        self.recorded: dict[float, dict[str, tuple[float, ...]]] = {r: {} for r in rungs}
        self.rf = float(kwargs.get("reduction_factor", 3.0))

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        self.note_restored(trial)

    def refill_rungs(self) -> int:
        """Record at each rung what the trials that had ended before the restore reached
        there, read from their result.json. Returns how many points were added."""
        if self.ledger.path is None:
            return 0  # remote storage: the trials' results are not in a local folder
        found = rung_values(self.ledger.path.parent, self.rung_epochs, self.objectives)
        added = 0
        for rung, recorded in self.recorded.items():
            for trial_id, values in found.get(rung, {}).items():
                if trial_id not in recorded and trial_id in self._ended_before:
                    recorded[trial_id] = tuple(s * v for s, v in zip(self.signs, values,
                                                                     strict=True))  # fmt: skip
                    added += 1
        return added

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self.refill_once()
        decision = self.decide(trial.trial_id, result)
        epoch = result.get(M.EPOCH)
        if decision == TrialScheduler.STOP and epoch is not None and epoch < self.max_epochs:
            if self.baselines and is_baseline(trial.config, self.baselines):
                return TrialScheduler.CONTINUE  # its values still counted at the rung
            self.ledger.record(trial.trial_id, float(epoch))
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self.refill_once()
        if result:
            self.decide(trial.trial_id, result)  # its values count at the rungs it passed

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._trial_info.pop(trial.trial_id, None)

    def decide(self, trial_id: str, result: dict) -> str:
        """CONTINUE or STOP for a trial's new result (the whole MO-ASHA rule)."""
        epoch = result.get(M.EPOCH)
        values = [result.get(name) for name in self.objectives]
        if epoch is None or not all(isinstance(v, int | float) for v in values):
            return TrialScheduler.CONTINUE
        if epoch >= self.max_epochs:
            return TrialScheduler.STOP
        point = tuple(s * v if math.isfinite(v) else math.inf
                      for s, v in zip(self.signs, values, strict=True))  # fmt: skip
        for rung in reversed(self.rung_epochs):
            recorded = self.recorded[rung]
            if epoch >= rung and trial_id not in recorded:
                recorded[trial_id] = point
                ranks = front_ranks(recorded)
                order = sorted(recorded, key=lambda t: (ranks[t], recorded[t][0], t))
                keep = max(1, int(len(recorded) / self.rf))
                return (TrialScheduler.CONTINUE if order.index(trial_id) < keep
                        else TrialScheduler.STOP)  # fmt: skip
        return TrialScheduler.CONTINUE

"""A replayed search (:mod:`tune_lm.tuning.replay`) run through the real Tuner, and what
it did, result by result, in the order the results arrived."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import tune

from tune_lm.lm import metrics as M
from tune_lm.tuning.capacity import trials_at_once
from tune_lm.tuning.replay import Curves, replay_trial
from tune_lm.tuning.sim_clock import make_clock
from tune_lm.tuning.space import SearchSpace


@dataclass(frozen=True)
class Event:
    """One evaluation of a replayed trial: the n-th trial-epoch of the search."""

    trial_id: str
    epoch: int
    val_ppl: float
    replayed_from: str


@dataclass
class Rehearsal:
    """What a replayed search did: its evaluations in arrival order, and Tune's results."""

    events: list[Event] = field(default_factory=list)
    results: Any = None

    @property
    def trial_epochs(self) -> int:
        return len(self.events)

    def best_within(self, trial_epochs: int) -> float:
        """The best validation perplexity seen in the first ``trial_epochs`` evaluations."""
        return min((e.val_ppl for e in self.events[:trial_epochs]), default=math.inf)

    def trial_epochs_to_reach(self, target: float) -> int | None:
        """How many trial-epochs it took to see ``target`` or better (None: never)."""
        for spent, event in enumerate(self.events, start=1):
            if event.val_ppl <= target:
                return spent
        return None


class _Recorder(tune.Callback, tune.Stopper):
    """Tune callback keeping every result in arrival order; as a stopper, it ends the
    whole search once ``budget`` trial-epochs have been spent (None: no such limit)."""

    def __init__(self, rehearsal: Rehearsal, budget: int | None) -> None:
        self.rehearsal, self.budget = rehearsal, budget

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:  # fmt: skip
        if M.VAL_PPL in result and M.EPOCH in result:
            self.rehearsal.events.append(Event(trial.trial_id, int(result[M.EPOCH]),
                                               float(result[M.VAL_PPL]),
                                               str(result.get("replayed_from", ""))))  # fmt: skip

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.budget is not None and len(self.rehearsal.events) >= self.budget


def slots(space: SearchSpace) -> int:
    """Trials at once: the space's max_concurrent, else as many as the connected Ray's
    nodes hold at the space's resources per trial, as a real search would."""
    return space.budget.max_concurrent or max(1, trials_at_once(space))


def rehearse(space: SearchSpace, curves: Curves, path: str, *, speed: float | None = None,
             budget_trial_epochs: int | None = None, callbacks: list | None = None,
             ledger: Any = None, quick: bool = False,
             priors: list[dict[str, Any]] | None = None) -> Rehearsal:  # fmt: skip
    """Run ``space``'s search at ``path`` (a new experiment folder) on ``curves``: the real
    searcher and scheduler, trials replaying recorded curves. Ray must be connected.
    ``speed``: None for the virtual clock (results in recorded-time order, as fast as
    Ray takes them), else recorded seconds per real second.
    ``quick``: nothing kept but the events (no study journal, no console tables): for
    benchmarks that replay hundreds of searches."""
    from tune_lm.tuning.tuner import build_tuner

    concurrent = slots(space)
    space = space.model_copy(update={"budget": space.budget.model_copy(
        update={"max_concurrent": concurrent})})  # fmt: skip
    share = ray.cluster_resources().get("CPU", 1) / concurrent
    clock, keeper = make_clock(concurrent, space.total_trials) if speed is None else (None, None)
    trainable = tune.with_resources(
        tune.with_parameters(replay_trial, space=space, curves=curves, speed=speed,
                             clock=clock),  # fmt: skip
        {"cpu": min(1.0, share)},
    )
    rehearsal = Rehearsal()
    recorder = _Recorder(rehearsal, budget_trial_epochs)
    kept = [recorder, *([keeper] if keeper else []), *(callbacks or [])]
    tuner = build_tuner(space, None, path, resume=False, callbacks=kept,
                        ledger=ledger, trainable=trainable, stop=recorder,
                        study_on_disk=not quick, priors=priors,
                        verbose=0 if quick else 1)  # fmt: skip
    try:
        rehearsal.results = tuner.fit()
    finally:
        if clock is not None:
            ray.kill(clock)
    if budget_trial_epochs is not None:
        del rehearsal.events[budget_trial_epochs:]
    return rehearsal


def run_rehearsal(space: SearchSpace, curves: Curves, path: str, *, address: str | None,
                  speed: float | None, progress_every: float,
                  priors: list[dict[str, Any]] | None = None,
                  ) -> tuple[Rehearsal, list]:  # fmt: skip
    """The command's replay: Ray joined (or started), the search rehearsed with the usual
    progress lines and ASHA ledger, Ray left; the rehearsal and its summary rows."""
    from pathlib import Path

    from tune_lm.tuning.progress import ProgressPrinter
    from tune_lm.tuning.results import conclude
    from tune_lm.tuning.searchers import StopLedger
    from tune_lm.tuning.tuner import connect_ray, disconnect, trial_outcomes

    connect_ray(address)
    try:
        ledger = StopLedger(Path(path))
        progress = ProgressPrinter(space, interval_s=progress_every, ledger=ledger)
        rehearsal = rehearse(space, curves, path, speed=speed, callbacks=[progress],
                             ledger=ledger, priors=priors)  # fmt: skip
    finally:
        disconnect()
    conclusion = conclude(trial_outcomes(rehearsal.results, space), space,
                          asha_stops=ledger.stopped())  # fmt: skip
    return rehearsal, [conclusion.rows, conclusion.best, conclusion.pareto]


def report_rehearsal(rehearsal: Rehearsal, rows: list, space: SearchSpace,
                     folder: Any, warm: dict[str, Any] | None = None) -> list[str]:  # fmt: skip
    """The summary table (written like a search's, with ``warm``: the warm start's
    record), and what the search would cost: trial-epochs, recorded training seconds,
    and when the best was first seen."""
    from tune_lm.tuning.summary import outcome_counts, top_table, write_summary

    table, best, pareto = rows
    paths = write_summary(folder, table, space, best, pareto,
                          extra={"warm_start": warm} if warm else None)  # fmt: skip
    lines = [top_table(table), f"trials: {outcome_counts(table)}"]
    if rehearsal.events:
        best_value = min(e.val_ppl for e in rehearsal.events)
        first = rehearsal.trial_epochs_to_reach(best_value)
        seconds = sum(r.epoch_time_s * r.epochs_run for r in table
                      if math.isfinite(r.epoch_time_s))  # fmt: skip
        lines.append(
            f"replayed: {rehearsal.trial_epochs} trial-epochs ({seconds / 3600:.2f} h of "
            f"recorded training and validation); best val ppl {best_value:.2f}, first seen "
            f"after {first} trial-epochs ({first / rehearsal.trial_epochs:.0%} of them), from "
            f"recorded trial {min(rehearsal.events, key=lambda e: e.val_ppl).replayed_from}")
    lines.append("summary: " + ", ".join(str(p) for k, p in paths.items() if ":" not in k))
    return lines

"""Live progress of a search: trials running / finished / stopped, best so far, elapsed
and an estimate of the time left. A Tune callback on the driver prints a line for each
trial that ends, and a progress line every ``interval_s`` seconds of silence.

The estimate counts trial-epochs. A trial is expected to run
:func:`expected_epochs` (all of them under FIFO; under ASHA each rung lets through
1/reduction_factor of the trials that reach it), the observed wall-clock seconds per
trial-epoch (evaluation included) price them, and the trials running at once share the
work. A time budget caps it.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

from ray.tune import Callback

from tune_lm.lm import metrics as M
from tune_lm.tuning.console import say
from tune_lm.tuning.results import trial_status
from tune_lm.tuning.searchers import StopLedger
from tune_lm.tuning.space import SearchSpace, parse_duration
from tune_lm.tuning.summary import describe

log = logging.getLogger(__name__)


def expected_epochs(rungs: Sequence[float], reduction_factor: float, max_epochs: float,
                    done: float = 0.0) -> float:  # fmt: skip
    """Epochs a trial that has run ``done`` epochs is still expected to run.

    ``rungs`` are ASHA's comparison points (none: FIFO, every trial runs to the end).
    Past each rung above ``done`` only 1/reduction_factor of the trials carry on."""
    points = [r for r in rungs if r > done] + [max_epochs]
    remaining, survival, previous = 0.0, 1.0, done
    for point in points:
        remaining += survival * max(point - previous, 0.0)
        survival /= reduction_factor
        previous = point
    return remaining


def estimate_remaining_s(
    *,
    space: SearchSpace,
    total_trials: int,
    running_epochs: Sequence[float],
    started: int,
    seconds_per_epoch: float,
    concurrency: int,
    elapsed_s: float,
) -> float:
    """Seconds left: the unstarted trials' expected epochs plus what the running ones
    still need, at ``seconds_per_epoch``, ``concurrency`` trials at a time."""
    rungs, rf = space.asha_rungs, space.scheduler.reduction_factor
    fresh = expected_epochs(rungs, rf, space.epochs)
    work = max(total_trials - started, 0) * fresh
    work += sum(expected_epochs(rungs, rf, space.epochs, done) for done in running_epochs)
    left = work * seconds_per_epoch / max(concurrency, 1)
    if space.budget.time_budget:
        left = min(left, max(parse_duration(space.budget.time_budget) - elapsed_s, 0.0))
    return left


def total_trials(space: SearchSpace) -> int:
    """Trials the search will run: num_samples, times the grid's size for a grid."""
    return space.total_trials


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressPrinter(Callback):
    """Tune callback: a line for each trial that ends (its outcome, best perplexity and
    settings), and a progress line every ``interval_s`` when nothing else was printed,
    and when the last trial ends."""

    def __init__(self, space: SearchSpace, interval_s: float = 30.0,
                 ledger: StopLedger | None = None) -> None:  # fmt: skip
        self.space, self.interval_s, self.ledger = space, interval_s, ledger
        self.total = total_trials(space)
        self._start: float | None = None
        self._last_print = 0.0
        self._per_epoch: dict[str, float] = {}  # trial id -> wall seconds per epoch
        self._epochs: dict[str, float] = {}
        self._trial_best: dict[str, float] = {}  # trial id -> best val_ppl so far
        self._best: tuple[float, str] | None = None
        self._most_running = 1
        self._ended: dict[str, str] = {}  # trial id -> TERMINATED | ERROR, as callbacks say

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_start"] = None  # a resumed search's clock starts again
        return state

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:  # fmt: skip
        epoch = float(result.get(M.EPOCH, 0.0) or 0.0)
        seconds = result.get("time_total_s")
        if epoch > 0 and seconds:
            self._per_epoch[trial.trial_id] = float(seconds) / epoch
            self._epochs[trial.trial_id] = epoch
        value = result.get(M.VAL_PPL)
        if value is None or math.isnan(value):
            return
        mine = self._trial_best.get(trial.trial_id, math.inf)
        self._trial_best[trial.trial_id] = min(mine, float(value))
        if math.isfinite(value) and (self._best is None
                                     or (value, trial.trial_id) < self._best):  # fmt: skip
            self._best = (float(value), trial.trial_id)

    # Tune calls these before it changes the trial's status: remember the outcome.
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended[trial.trial_id] = "TERMINATED"
        self._trial_ended(trials, trial, error=None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended[trial.trial_id] = "ERROR"
        message = getattr(trial, "error_msg", None) or "the trial raised an error"
        self._trial_ended(trials, trial, error=str(message))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._start is None:  # the clock starts; the first line waits for news
            self._start = self._last_print = time.monotonic()
        if time.monotonic() - self._last_print >= self.interval_s:
            self._print(self.line(trials))

    def trial_line(self, trials: list, trial: Any, error: str | None) -> str:
        """``trial 3/16 c6f99be3 completed: best val ppl 297.37 | LSTM emsize 128 ...``"""
        last = trial.last_result or {}
        asha = self.ledger is not None and trial.trial_id in self.ledger.stopped()
        outcome = trial_status([last] if M.EPOCH in last else [], error, self.space,
                               asha_stopped=asha)  # fmt: skip
        if asha:
            outcome += f" (not among the best 1/{self.space.scheduler.reduction_factor:g} there)"
        best = self._trial_best.get(trial.trial_id)
        done = self._ended_count(trials)
        settings = describe(self.space.searched(trial.config or {}))
        measured = f": best {M.VAL_PPL} {best:.2f}" if best is not None else ""
        return f"trial {done}/{self.total} {trial.trial_id} {outcome}{measured} | {settings}"

    def _trial_ended(self, trials: list, trial: Any, error: str | None) -> None:
        self._print(self.trial_line(trials, trial, error))
        if self._ended_count(trials) >= self.total:  # the last one: where the search stands
            self._print(self.line(trials))

    def line(self, trials: list) -> str:
        """The progress line for Tune's current trial list."""
        if self._start is None:
            self._start = time.monotonic()
        elapsed = time.monotonic() - self._start
        status = {t.trial_id: self._ended.get(t.trial_id, t.status) for t in trials}
        running = [t for t in trials if status[t.trial_id] == "RUNNING"]
        self._most_running = max(self._most_running, len(running))
        finished = [t for t in trials if status[t.trial_id] in ("TERMINATED", "ERROR")]
        ended_early = [
            t for t in finished
            if status[t.trial_id] == "TERMINATED"
            and self._epochs_run(t) < self.space.epochs
        ]  # fmt: skip
        by_asha = self.ledger.stopped() if self.ledger is not None else {}
        stopped_early = sum(1 for t in ended_early if t.trial_id in by_asha or not self.ledger)
        cut = len(ended_early) - stopped_early  # by the time budget, not by ASHA
        failed = sum(1 for t in finished if status[t.trial_id] == "ERROR")
        parts = [
            f"{_clock(elapsed)} elapsed",
            f"trials: {len(running)} running, {len(finished)}/{self.total} finished "
            f"({stopped_early} stopped early, {f'{cut} cut by the time budget, ' if cut else ''}"
            f"{failed} failed)",
        ]
        best = self._best_of(trials)
        if best is not None:
            parts.append(f"best {M.VAL_PPL} {best[0]:.2f} ({best[1]})")
        if self._per_epoch:
            left = estimate_remaining_s(
                space=self.space,
                total_trials=self.total,
                running_epochs=[self._epochs.get(t.trial_id, 0.0) for t in running],
                started=sum(1 for t in trials if status[t.trial_id] != "PENDING"),
                seconds_per_epoch=statistics.median(self._per_epoch.values()),
                concurrency=self.space.budget.max_concurrent or self._most_running,
                elapsed_s=elapsed,
            )
            parts.append(f"about {_clock(left)} left")
        return "progress: " + " | ".join(parts)

    def _best_of(self, trials: list) -> tuple[float, str] | None:
        """The best val_ppl seen, or kept by Tune for a restored search's earlier trials
        (each trial's ``metric_analysis``)."""
        found = [self._best] if self._best is not None else []
        for trial in trials:
            low = (getattr(trial, "metric_analysis", None) or {}).get(M.VAL_PPL, {}).get("min")
            if isinstance(low, int | float) and math.isfinite(low):
                found.append((float(low), trial.trial_id))
        return min(found) if found else None

    def _ended_count(self, trials: list) -> int:
        """Trials that have ended, those of a restored search's earlier run included."""
        ended = ("TERMINATED", "ERROR")
        return sum(1 for t in trials if self._ended.get(t.trial_id, t.status) in ended)

    def _epochs_run(self, trial: Any) -> float:
        """Epochs a trial ran: from the results seen, or (a trial that ended before a
        restore, after the callback's last snapshot) Tune's record of its last result."""
        last = (getattr(trial, "last_result", None) or {}).get(M.EPOCH) or 0.0
        return max(self._epochs.get(trial.trial_id, 0.0), float(last))

    def retarget(self, space: SearchSpace) -> None:
        """A restored search that now runs ``space`` (``--extend`` added trials)."""
        self.space, self.total = space, total_trials(space)

    def _print(self, text: str) -> None:
        self._last_print = time.monotonic()
        say(text)

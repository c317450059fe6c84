"""The results of a search: its trials' rows, the winner, the Pareto set, and which
trials get a test score. A pure function of Tune's results and the space: no Ray here."""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from tune_lm.lm import metrics as M
from tune_lm.tuning.space import SearchSpace


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


@dataclass
class TrialRow:
    trial_id: str
    params: dict[str, Any]  # the searched parameters
    epochs_run: float
    best_val_ppl: float
    epoch_time_s: float  # median over evaluations
    tokens_per_s: float
    status: str  # completed | stopped early by ASHA at epoch E | diverged | failed: ...
    test_ppl: float | None = None
    extra: dict[str, float] = field(default_factory=dict)  # M.test_at_epoch(E): test ppl
    evaluated: int = -1  # evaluations it reported (-1: not known)
    # One dict per evaluation (with Tune's "timestamp"); read back for the report.
    history: list[dict[str, float]] = field(default_factory=list, repr=False)

    @classmethod
    def from_flat(cls, flat: dict[str, Any], parameters: list[str],
                  history: list[dict[str, float]]) -> TrialRow:  # fmt: skip
        """A row as summary.json holds it (:meth:`flat`), with its trial's history."""
        return cls(
            trial_id=str(flat["trial_id"]),
            params={name: flat.get(name) for name in parameters},
            epochs_run=_number(flat.get(M.EPOCHS_RUN), missing=0.0),
            best_val_ppl=_number(flat.get(M.BEST_VAL_PPL), missing=math.inf),  # none: last
            epoch_time_s=_number(flat.get(M.EPOCH_TIME_S)),
            tokens_per_s=_number(flat.get(M.TOKENS_PER_S)),
            status=str(flat.get("status")),
            test_ppl=flat.get(M.TEST_PPL),
            extra={k: v for k, v in flat.items() if M.is_test_at_epoch(k)},
            evaluated=0 if flat.get(M.BEST_VAL_PPL) is None else -1,
            history=history,
        )

    def flat(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            **self.params,
            M.EPOCHS_RUN: self.epochs_run,
            # inf: diverged; none: never evaluated (inf only to rank it last)
            M.BEST_VAL_PPL: None if self.evaluated == 0 else self.best_val_ppl,
            M.EPOCH_TIME_S: self.epoch_time_s,
            M.TOKENS_PER_S: self.tokens_per_s,
            "status": self.status,
            M.TEST_PPL: self.test_ppl,
            **self.extra,
        }


def trial_status(history: list[dict[str, float]], error: str | None, space: SearchSpace,
                 *, asha_stopped: bool = False, interrupted: str | None = None) -> str:  # fmt: skip
    """What became of a trial. Only ``asha_stopped`` (ASHA's own record of its decision)
    makes an early end "stopped early by ASHA"; otherwise it was the Ctrl-C/SIGTERM
    ``interrupted`` names, or the time budget."""
    if error:
        return f"failed: {error.strip().splitlines()[-1][:200]}"
    if not history:
        if interrupted:
            return f"stopped by {interrupted} before its first evaluation"
        if space.budget.time_budget:
            return "stopped by the time budget before its first evaluation"
        return "stopped before its first evaluation"
    if not math.isfinite(history[-1].get(M.VAL_PPL, math.inf)):
        return "diverged"
    last_epoch = history[-1].get(M.EPOCH, 0.0)
    if last_epoch >= space.epochs:
        return "completed"
    if asha_stopped:
        return f"stopped early by ASHA at epoch {last_epoch:g}"
    if history[-1].get(M.CURVE_ENDS) in (True, 1):  # a replayed trial, not the time budget
        return f"stopped at epoch {last_epoch:g}, where its recorded curve ends"
    if interrupted:
        return f"stopped at epoch {last_epoch:g} by {interrupted} (--resume continues it)"
    if space.budget.time_budget:
        return f"stopped at epoch {last_epoch:g} by the time budget"
    return f"stopped at epoch {last_epoch:g}"


def make_row(
    trial_id: str,
    params: dict[str, Any],
    history: list[dict[str, float]],
    error: str | None,
    space: SearchSpace,
    *,
    asha_stopped: bool = False,
    interrupted: str | None = None,
) -> TrialRow:
    val = [h[M.VAL_PPL] for h in history if M.VAL_PPL in h]
    times = [h[M.EPOCH_TIME_S] for h in history if M.EPOCH_TIME_S in h]
    speeds = [h[M.TOKENS_PER_S] for h in history if M.TOKENS_PER_S in h]
    extra = {}
    for entry in history:
        extra.update(
            {k: v for k, v in entry.items() if M.is_test_at_epoch(k) and v == v}
        )  # (v == v drops the NaNs that fill evaluations without that metric)
    return TrialRow(
        trial_id=trial_id,
        params=params,
        epochs_run=history[-1].get(M.EPOCH, 0.0) if history else 0.0,
        best_val_ppl=min(val) if val else math.inf,
        epoch_time_s=statistics.median(times) if times else math.nan,
        tokens_per_s=statistics.median(speeds) if speeds else math.nan,
        status=trial_status(history, error, space, asha_stopped=asha_stopped,
                            interrupted=interrupted),
        extra=extra,
        evaluated=len(val),
    )


def _number(value: Any, missing: float = math.nan) -> float:
    """A table value as a float; absent is ``missing``, unreadable is NaN (drawn as
    missing)."""
    try:
        return float(value) if value is not None else missing
    except (TypeError, ValueError):
        return math.nan


@dataclass
class TrialOutcome:
    """What Tune knows of one trial, as plain values (see ``tuner.trial_outcomes``)."""

    trial_id: str
    params: dict[str, Any]  # the searched values
    history: list[dict[str, float]]  # one dict per evaluation
    error: str | None
    source: Any = None  # Tune's own result, for the weights; opaque here


@dataclass
class Conclusion:
    """A search's verdict: every trial's row, the winner, the Pareto set (several
    objectives), and the trials to score once on test."""

    rows: list[TrialRow]
    best: TrialRow | None
    pareto: list[TrialRow]
    to_test: list[TrialRow]

    @property
    def finished(self) -> list[TrialRow]:
        """The trials with a finite best validation perplexity."""
        return [row for row in self.rows if math.isfinite(row.best_val_ppl)]


def objective_point(row: TrialRow, space: SearchSpace) -> tuple[float, ...]:
    """A trial's objectives, each to be minimised."""
    values = {M.VAL_PPL: row.best_val_ppl, M.EPOCH_TIME_S: row.epoch_time_s,
              M.TOKENS_PER_S: -row.tokens_per_s}  # fmt: skip
    return tuple(values[name] for name in space.objectives)


def conclude(
    outcomes: Sequence[TrialOutcome], space: SearchSpace, *,
    asha_stops: Collection[str] = (), interrupted: str | None = None,
) -> Conclusion:  # fmt: skip
    """Rows, winner (lowest validation perplexity), Pareto set, and who gets a test score:
    the winner; every finished trial of a grid study; the Pareto set with several
    objectives; nobody when the search was interrupted (the resumed search scores)."""
    rows = [make_row(o.trial_id, o.params, o.history, o.error, space,
                     asha_stopped=o.trial_id in asha_stops, interrupted=interrupted)
            for o in outcomes]  # fmt: skip
    finished = [row for row in rows if math.isfinite(row.best_val_ppl)]
    # Ties go to the lower trial id, as in the summary's order and the progress line.
    best = min(finished, key=lambda row: (row.best_val_ppl, row.trial_id)) if finished else None
    to_test = finished if space.searcher.type == "grid" else [best] if best else []
    pareto: list[TrialRow] = []
    if len(space.objectives) > 1:  # several objectives: the non-dominated trials, not one
        front = pareto_front([objective_point(row, space) for row in finished])
        pareto = [finished[i] for i in front]
        to_test = pareto
    if interrupted:
        to_test = []
    return Conclusion(rows=rows, best=best, pareto=pareto, to_test=to_test)

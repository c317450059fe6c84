"""TPE that models the highest ASHA rung with enough observations (in the spirit of BOHB).

Optuna's TPE, told ASHA's stops as PRUNED trials, ranks finished trials first and then
pruned ones by how deep they got and their value there. With ``searcher: {rung_aware:
true}`` its model is instead fitted on one budget: the highest rung (or the last epoch)
at which at least ``min_points`` trials have a value, each trial valued *at that rung*
(the value a trial that went further had when it passed it). Trials that stopped below
that rung stay PRUNED, behind every trial that reached it. As the search goes on and
the deeper rungs fill, the model moves up to them.

How: the sampler hands TPE a view of the study whose trials are rewritten that way.
TPE reads a study's trials through ``Study._get_trials``, a private Optuna method; a
test (tests/test_replay.py) checks that the view still changes what TPE sees.
"""

from __future__ import annotations

import copy
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

VALUE_AT_EPOCH = "val_ppl_at_epoch_{epoch:g}"  # user attribute: the value at a rung


class RungAwareTPESampler(optuna.samplers.TPESampler):
    """TPE fitted on the highest rung with ``min_points`` trials (see the module)."""

    def __init__(self, *, rungs: list[float], min_points: int | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.rungs, self.min_points = sorted(set(rungs)), min_points

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        view = _RungView(study, self.rungs, self._enough(search_space))
        return super().sample_relative(view, trial, search_space)  # type: ignore[arg-type]

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:  # fmt: skip
        view = _RungView(study, self.rungs, self._enough({param_name: None}))
        return super().sample_independent(view, trial, param_name,  # type: ignore[arg-type]
                                          param_distribution)  # fmt: skip

    def _enough(self, search_space: dict[str, Any]) -> int:
        """BOHB's rule: one more observation than there are parameters, at least 5."""
        return self.min_points or max(5, len(search_space) + 1)


class _RungView:
    """A study whose finished trials read as valued at the model's rung."""

    def __init__(self, study: optuna.Study, rungs: list[float], min_points: int) -> None:
        self._study, self._rungs, self._min_points = study, rungs, min_points

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Any = None,
                    use_cache: bool = False) -> list[FrozenTrial]:  # fmt: skip
        trials = self._study._get_trials(deepcopy=False, states=states, use_cache=use_cache)
        return at_model_rung(trials, self._rungs, self._min_points)

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)


def model_rung(trials: list[FrozenTrial], rungs: list[float], min_points: int) -> float | None:
    """The highest rung at which at least ``min_points`` finished trials have a value."""
    for rung in reversed(rungs):
        key = VALUE_AT_EPOCH.format(epoch=rung)
        if sum(key in t.user_attrs for t in trials if t.state.is_finished()) >= min_points:
            return rung
    return None


def at_model_rung(trials: list[FrozenTrial], rungs: list[float],
                  min_points: int) -> list[FrozenTrial]:  # fmt: skip
    """``trials`` with every finished trial that reached the model rung COMPLETE with its
    value there, and the others PRUNED (unchanged when no rung has enough yet)."""
    rung = model_rung(trials, rungs, min_points)
    if rung is None:
        return trials
    key = VALUE_AT_EPOCH.format(epoch=rung)
    viewed = []
    for trial in trials:
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            trial = copy.copy(trial)
            if key in trial.user_attrs:
                trial.state, trial.values = TrialState.COMPLETE, [trial.user_attrs[key]]
            elif trial.state == TrialState.COMPLETE:  # finished without reaching the rung
                trial.state = TrialState.PRUNED  # (a divergence): behind those that did
        viewed.append(trial)
    return viewed

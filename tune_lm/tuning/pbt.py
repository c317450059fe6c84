"""Population-based training: Ray's PBT over a space's learning rate and dropout.

Every ``perturbation_interval`` epochs, a trial in the worst ``quantile_fraction`` of the
population continues from the latest checkpoint of one in the best fraction, with the
parameters in ``mutate`` perturbed (x0.8 or x1.2, a neighbouring choice, or resampled
with ``resample_probability``). Tune restarts it from that checkpoint with the new
config; the trainable then adopts the change into the training state, which records it
(:func:`tune_lm.lm.train_state.adopt`). Perturbed values are kept inside the space's
ranges (Ray's PBT multiplies without bounds: a dropout of 0.5 would reach 1.04 after four
increases).
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

from tune_lm.lm import metrics as M
from tune_lm.tuning.space import SearchSpace


class KeepInRange:
    """PBT's explore step, finished: each perturbed value clipped to its range and put
    on its step (a picklable callable: Ray saves the scheduler with the experiment)."""

    def __init__(self, space: SearchSpace, names: list[str]) -> None:
        self.parameters = {name: space.parameters[name] for name in names
                           if space.parameters[name].kind != "choice"}  # fmt: skip

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for name, parameter in self.parameters.items():
            if name in config:
                value = min(parameter.high, max(parameter.low, config[name]))
                config[name] = parameter.on_step(type(config[name])(value))
        return config


class FinishingPBT(PopulationBasedTraining):
    """Ray's PBT, which never perturbs a trial at its last epoch. Ray's would: the trial
    then "continued" from another trial's checkpoint with new values and trained nothing
    more (synchronous), so the summary showed the other trial's id and values it never
    trained with; or (asynchronous) it trained again from an earlier epoch of another
    trial. A trial that has trained its epochs ends as it is."""

    def __init__(self, *args: Any, max_epochs: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_epochs = max_epochs

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if result.get(M.EPOCH, 0) >= self.max_epochs:
            return TrialScheduler.CONTINUE  # the trainable ends the trial after this result
        return super().on_trial_result(tune_controller, trial, result)


def make_pbt(space: SearchSpace) -> PopulationBasedTraining:
    names = space.pbt_mutations
    mutations = {
        name: list(space.parameters[name].values) if space.parameters[name].kind == "choice"
        else space.parameters[name].to_tune(tune)
        for name in names
    }  # fmt: skip
    return FinishingPBT(
        max_epochs=space.epochs,
        time_attr=M.EPOCH,
        perturbation_interval=space.scheduler.perturbation_interval,
        hyperparam_mutations=mutations,
        quantile_fraction=space.scheduler.quantile_fraction,
        resample_probability=space.scheduler.resample_probability,
        custom_explore_fn=KeepInRange(space, names),
        synch=space.scheduler.synchronous,
    )

"""PBT's rules for a search space: a population drawn at random by Tune, perturbing what
training can change mid-run (lr, dropout) and what the space searches."""

from __future__ import annotations

from typing import Any

from tune_lm.lm.config import PERTURBABLE
from tune_lm.tuning.params import space_error


def check_pbt(space: Any) -> None:
    """PBT: a population drawn at random by Tune, perturbing what training can change
    mid-run (lr, dropout) and that the space searches. ``space``: the SearchSpace being
    validated (not imported here: space.py imports this module)."""
    if space.scheduler.type != "pbt":
        return
    if "searcher" in space.model_fields_set:
        raise space_error("field 'searcher' has no effect with 'scheduler: {type: pbt}': "
                          "PBT's population is drawn at random from the parameters "
                          "(Ray's PBT takes no searcher); remove 'searcher'")  # fmt: skip
    if len(space.objectives) > 1:
        raise space_error("'scheduler: {type: pbt}' optimises val_ppl alone; remove the "
                          "other objectives, or use type: mo_asha")  # fmt: skip
    if space.confirm is not None:
        raise space_error("field 'confirm' cannot go with 'scheduler: {type: pbt}': a PBT "
                          "trial's weights grew under its parents' values too, so no "
                          "configuration of it can be trained again from scratch; remove "
                          "'confirm' (or --confirm), or use type: asha")  # fmt: skip
    if space.baselines:
        raise space_error("field 'baselines' has no effect with 'scheduler: {type: pbt}' "
                          "(its population is drawn at random); remove it")  # fmt: skip
    for name in space.pbt_mutations:
        if name not in PERTURBABLE:
            raise space_error(
                f"field 'scheduler.mutate' names {name!r}, which training cannot change "
                f"mid-run (the weights' shapes or the data would change); PBT can perturb "
                f"{list(PERTURBABLE)}")  # fmt: skip
        if name not in space.parameters:
            raise space_error(f"field 'scheduler.mutate' names {name!r}, which the space "
                              f"does not search; add it to 'parameters' (a range or a "
                              f"choice) or remove it from mutate")  # fmt: skip
    if not space.pbt_mutations:
        raise space_error("'scheduler: {type: pbt}' needs something to perturb: lr or "
                          "dropout, searched in 'parameters' and not left out of "
                          "'scheduler.mutate'")  # fmt: skip
    if space.total_trials < 2:
        raise space_error(f"'scheduler: {{type: pbt}}' needs a population of at least 2 trials "
                          f"(budget.num_samples, or --num-samples), got {space.total_trials}: "
                          "alone, a trial has no better one to copy, so PBT would never act")
    if space.scheduler.perturbation_interval >= space.epochs:
        raise space_error(
            f"field 'scheduler.perturbation_interval' is "
            f"{space.scheduler.perturbation_interval:g} epochs, not less than the "
            f"{space.epochs} epochs trials train, so PBT would never act; lower it")

"""How many different trials a space makes: a big grid gets a warning, and an Optuna
space with a single configuration is refused when it would train it several times
(every trial alike, with one seed). ``space``: a
:class:`~tune_lm.tuning.space.SearchSpace` (not imported: it imports this module)."""

from __future__ import annotations

from typing import Any

from tune_lm.tuning.params import space_error

GRID_WARN_TRIALS = 100  # a grid this big gets a warning with its count


def grid_shape(space: Any) -> str:
    """``2 model x 3 bptt``: each grid parameter's size."""
    return " x ".join(f"{parameter.grid_size} {name}"
                      for name, parameter in space.parameters.items()
                      if parameter.kind == "grid")  # fmt: skip


def grid_warning(space: Any) -> str | None:
    """A line for the user when a grid search is big (the CLI logs it once), else None."""
    if space.searcher.type != "grid" or space.total_trials <= GRID_WARN_TRIALS:
        return None
    return (
        f"the grid runs {space.total_trials:,} trials (budget.num_samples "
        f"{space.budget.num_samples} x {grid_shape(space)}) of up to {space.epochs} epochs "
        "each (fixed.epochs)"
    )


def only_configuration(space: Any) -> dict[str, Any] | None:
    """The one configuration an Optuna search of ``space`` can propose (None: it has
    more, or it is a grid or PBT)."""
    if space.searcher.type != "optuna" or space.scheduler.type == "pbt":
        return None
    if any(p.kind != "choice" or len(p.values) > 1 for p in space.parameters.values()):
        return None
    return {name: parameter.values[0] for name, parameter in space.parameters.items()}


def check_trials_differ(space: Any) -> None:
    """Several trials of a single configuration would all train it alike."""
    only = only_configuration(space)
    if only is None or space.budget.num_samples < 2:
        return
    raise space_error(
        f"the space has one configuration ({only or 'nothing searched'}), so its "
        f"{space.budget.num_samples} trials (budget.num_samples) would all train it alike, "
        "with one seed. Set num_samples: 1, give a parameter more values, or repeat it over "
        "seeds with a grid ('searcher: {type: grid}', num_samples: N)"
    )

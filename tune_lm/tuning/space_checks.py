"""The checks every search space passes before anything starts: unknown keys (with the
closest valid one suggested), keys the chosen searcher or scheduler would ignore, wrong
types, ranges whose kind does not fit their option (floats for a whole number), empty
or inverted ranges, cycles in ``derived``, grids too big to mean it, searcher and
objective combinations, and the training configs at the corners of the space, which
:class:`~tune_lm.lm.config.TrainConfig` must accept.
"""

from __future__ import annotations

import difflib
import importlib.util
import itertools
import math
import random
import typing
from typing import Any

from pydantic import ValidationError

from tune_lm.lm.config import TrainConfig, describe_validation_error
from tune_lm.lm.errors import ConfigError, short_repr
from tune_lm.tuning.space import (
    GRID_MAX_TRIALS,
    GRID_WARN_TRIALS,
    PARAMETER_KINDS,
    BudgetSpec,
    ResourcesSpec,
    SchedulerSpec,
    SearcherSpec,
    SearchSpace,
    SpaceError,
)

_MAX_COMBINATIONS_CHECKED = 4096
_FLOAT_KINDS = {"uniform": "int", "loguniform": "logint", "quniform": "qint"}  # -> int kind


def validate(raw: dict[str, Any], source: str) -> SearchSpace:
    try:
        space = SearchSpace(**raw)
    except ValidationError as error:
        raise SpaceError(f"{source}: {_explain(error)}") from None
    except TypeError as error:
        raise SpaceError(f"{source}: {error}") from None
    for check in (_check_ignored_keys, _check_fields, _check_derived, _check_parameters,
                  _check_searcher, _check_grid_size, _check_combinations,
                  _check_epochs, _check_something_searched):  # fmt: skip
        check(space, source)
    return space


def _explain(error: ValidationError) -> str:
    known = set(SearchSpace.model_fields)
    for model in (SearcherSpec, SchedulerSpec, BudgetSpec, ResourcesSpec):
        known |= set(model.model_fields)
    hints = []
    for problem in error.errors():
        if problem["type"] == "extra_forbidden":
            key = str(problem["loc"][-1])
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            if close:
                hints.append(f"Did you mean {close[0]!r} instead of {key!r}?")
    return " ".join([describe_validation_error(error), *hints])


def _unknown_field(section: str, name: str, source: str) -> SpaceError:
    close = difflib.get_close_matches(name, list(TrainConfig.model_fields), n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return SpaceError(
        f"{source}: field '{section}.{name}' is not a training option.{hint} "
        f"Training options: {', '.join(TrainConfig.model_fields)}"
    )


def _check_fields(space: SearchSpace, source: str) -> None:
    for section, names in (("fixed", space.fixed), ("parameters", space.parameters),
                           ("derived", space.derived)):  # fmt: skip
        for name in names:
            if name not in TrainConfig.model_fields:
                raise _unknown_field(section, name, source)
    for name, other in space.derived.items():
        if other not in TrainConfig.model_fields:
            raise _unknown_field(f"derived.{name}", other, source)
        if name in space.parameters or name in space.fixed:
            raise SpaceError(
                f"{source}: field 'derived.{name}' is also in "
                f"{'parameters' if name in space.parameters else 'fixed'}; keep it in one place"
            )
    both = set(space.fixed) & set(space.parameters)
    if both:
        raise SpaceError(f"{source}: {sorted(both)} are both fixed and searched; keep one")
    if "data" in space.fixed or "data" in space.parameters:
        raise SpaceError(f"{source}: set the corpus with the top-level 'data:' key")


def _check_ignored_keys(space: SearchSpace, source: str) -> None:
    """A key the file sets that the chosen searcher or scheduler never reads is refused:
    the user believes it acts. Only keys given count (``model_fields_set``), not defaults."""
    searcher = space.searcher
    grid, fifo = searcher.type == "grid", space.scheduler.type == "fifo"
    rules = [  # (section, key, ignored when, why, fix)
        ("searcher", "sampler", grid, "with 'searcher: {type: grid}' (a grid runs every "
         "combination; only Optuna samples)", "remove it, or use type: optuna"),
        ("searcher", "n_startup_trials", grid, "with 'searcher: {type: grid}' (a grid runs "
         "every combination; only Optuna samples)", "remove it, or use type: optuna"),
        ("searcher", "n_startup_trials", searcher.sampler != "tpe", f"with sampler "
         f"{searcher.sampler} (only the tpe sampler takes it)", "remove it, or use sampler: tpe"),
        ("scheduler", "grace_period", fifo, "with 'scheduler: {type: fifo}' (FIFO stops no "
         "trial early; only ASHA reads it)", "remove it, or use type: asha"),
        ("scheduler", "reduction_factor", fifo, "with 'scheduler: {type: fifo}' (FIFO stops no "
         "trial early; only ASHA reads it)", "remove it, or use type: asha"),
        ("budget", "allow_large_grid", not grid, "without 'searcher: {type: grid}' (only "
         "a grid's size is limited)", "remove it"),
    ]  # fmt: skip
    for section, key, ignored, why, fix in rules:
        if ignored and key in getattr(space, section).model_fields_set:
            raise SpaceError(f"{source}: field '{section}.{key}' has no effect {why}; {fix}")


def _check_derived(space: SearchSpace, source: str) -> None:
    """``derived`` may chain (nhid: emsize, emsize: bptt) but not loop back on itself."""
    for start in space.derived:
        path = [start]
        while path[-1] in space.derived:
            following = space.derived[path[-1]]
            if following in path:
                cycle = " -> ".join([*path[path.index(following) :], following])
                raise SpaceError(
                    f"{source}: field 'derived' has a cycle, {cycle}: each takes its value from "
                    "the next, so none has one. End the chain at an option set in 'fixed' or "
                    "'parameters' (or left at its default), e.g. 'derived: {nhid: emsize}'"
                )
            path.append(following)


def _check_grid_size(space: SearchSpace, source: str) -> None:
    if space.searcher.type != "grid" or space.total_trials <= GRID_MAX_TRIALS:
        return
    if not space.budget.allow_large_grid:
        raise SpaceError(
            f"{source}: the grid runs {space.total_trials:,} trials (budget.num_samples "
            f"{space.budget.num_samples} x {_grid_shape(space)}), more than {GRID_MAX_TRIALS:,}. "
            "Shorten the grid lists, use 'searcher: {type: optuna}' with 'choice' to sample "
            "it, or set 'budget: {allow_large_grid: true}' if you mean it"
        )


def grid_warning(space: SearchSpace) -> str | None:
    """A line for the user when a grid search is big (the CLI logs it once), else None."""
    if space.searcher.type != "grid" or space.total_trials <= GRID_WARN_TRIALS:
        return None
    return (
        f"the grid runs {space.total_trials:,} trials (budget.num_samples "
        f"{space.budget.num_samples} x {_grid_shape(space)}) of up to {space.epochs} epochs "
        "each (fixed.epochs)"
    )


def _grid_shape(space: SearchSpace) -> str:
    return " x ".join(f"{len(spec['grid'])} {name}" for name, spec in space.parameters.items()
                      if "grid" in spec)  # fmt: skip


def _option_type(name: str) -> type | None:
    """int or float for a numeric training option (``int | None`` counts as int), else None."""
    annotation = TrainConfig.model_fields[name].annotation
    types = {arg for arg in typing.get_args(annotation) or (annotation,) if arg is not type(None)}
    return next(iter(types)) if types in ({int}, {float}) else None


def _check_epochs(space: SearchSpace, source: str) -> None:
    """Last: ``space.epochs`` reads fixed.epochs, which the checks before validate."""
    if space.scheduler.type == "asha" and space.scheduler.grace_period > space.epochs:
        raise SpaceError(
            f"{source}: field 'scheduler.grace_period' is {space.scheduler.grace_period:g}, "
            f"more than the {space.epochs} epochs a trial runs (fixed.epochs); lower it"
        )
    for epoch in space.test_at_epochs:
        if not 1 <= epoch <= space.epochs:
            raise SpaceError(
                f"{source}: field 'test_at_epochs' has {epoch}, outside 1..{space.epochs} "
                "(fixed.epochs)"
            )


def _check_something_searched(space: SearchSpace, source: str) -> None:
    """Last, so that a more specific mistake is named first."""
    if not space.parameters:
        raise SpaceError(
            f"{source}: field 'parameters' is missing or empty, so nothing is searched and "
            "every trial would train the same configuration. Add the options to search, e.g. "
            "'parameters: {lr: {loguniform: [1.0, 40.0]}}' (or train one model with "
            "python -m tune_lm.train)"
        )


def _check_parameters(space: SearchSpace, source: str) -> None:
    for name, spec in space.parameters.items():
        where = f"{source}: field 'parameters.{name}'"
        if len(spec) != 1 or next(iter(spec)) not in PARAMETER_KINDS:
            kinds = "; ".join(f"{k}: {v}" for k, v in PARAMETER_KINDS.items())
            raise SpaceError(f"{where} must have exactly one of these keys — {kinds}")
        kind, values = next(iter(spec.items()))
        if not isinstance(values, list) or not values:
            raise SpaceError(f"{where}: {kind} needs a non-empty list, got {short_repr(values)}")
        if kind in ("choice", "grid"):
            continue
        expected = 3 if kind.startswith("q") else 2
        if len(values) != expected or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        ):
            shape = "[low, high, q]" if expected == 3 else "[low, high]"
            raise SpaceError(
                f"{where}: {kind} needs {shape} finite numbers, got {short_repr(values)}"
            )
        low, high = values[0], values[1]
        if kind in ("int", "logint", "qint") and not all(isinstance(v, int) for v in values):
            raise SpaceError(f"{where}: {kind} needs whole numbers (16, not 16.0), got {values!r}")
        _check_kind_fits_option(name, kind, values, where)
        if low >= high:
            raise SpaceError(f"{where}: low must be below high, got {values!r}")
        if kind.startswith("log") and low <= 0:
            raise SpaceError(f"{where}: {kind} needs low > 0 (a log scale), got {values!r}")
        if expected == 3 and values[2] <= 0:
            raise SpaceError(f"{where}: q must be positive, got {values!r}")


def _check_kind_fits_option(name: str, kind: str, values: list, where: str) -> None:
    """A numeric range must sample numbers of its option's type: uniform over nhid would
    give 137.4 hidden units, and every trial would fail when it starts."""
    option_type = _option_type(name)
    if option_type is None:
        field = TrainConfig.model_fields[name]
        choices = typing.get_args(field.annotation) if typing.get_origin(
            field.annotation) is typing.Literal else ()  # fmt: skip
        example = f"{{choice: [{', '.join(map(str, choices))}]}}" if choices else "{choice: [...]}"
        raise SpaceError(
            f"{where}: {name} is not a number, so a {kind} range cannot sample it; "
            f"list its values instead, e.g. {example}"
        )
    if option_type is int and kind in _FLOAT_KINDS:
        int_kind = _FLOAT_KINDS[kind]
        bounds = [math.ceil(values[0]), math.floor(values[1])]
        if kind == "quniform":
            bounds.append(max(1, round(values[2])))
        raise SpaceError(
            f"{where}: {name} is a whole number, but {kind} samples floats (e.g. "
            f"{(values[0] + values[1]) / 2:g}); use {int_kind}, e.g. "
            f"{{{int_kind}: [{', '.join(map(str, bounds))}]}}, or list values with choice"
        )


def _check_searcher(space: SearchSpace, source: str) -> None:
    kinds = {name: next(iter(spec)) for name, spec in space.parameters.items()}
    objectives = space.objectives
    if not objectives or objectives[0] != "val_ppl" or len(set(objectives)) != len(objectives):
        raise SpaceError(
            f"{source}: field 'objectives' must start with val_ppl (ASHA stops trials on "
            f"it) and name each objective once, e.g. [val_ppl, epoch_time_s]; got "
            f"{space.objectives}"
        )
    if len(space.objectives) > 1 and space.searcher.type != "optuna":
        raise SpaceError(
            f"{source}: field 'objectives' lists several objectives, which needs "
            "'searcher: {type: optuna}' (tpe or nsga2)"
        )
    if len(space.objectives) > 1 and space.searcher.sampler in ("cmaes", "gp"):
        raise SpaceError(
            f"{source}: field 'searcher.sampler' {space.searcher.sampler} optimises one "
            "objective; use tpe or nsga2 with several objectives"
        )
    if space.searcher.type == "optuna":
        grid = [name for name, kind in kinds.items() if kind == "grid"]
        if grid:
            raise SpaceError(
                f"{source}: field 'parameters.{grid[0]}' is a grid, which Optuna does not "
                "sample; use 'choice' for Optuna, or set 'searcher: {type: grid}'"
            )
        needs = {"cmaes": "cmaes", "gp": "scipy"}.get(space.searcher.sampler)
        if needs and importlib.util.find_spec(needs) is None:
            raise SpaceError(
                f"{source}: field 'searcher.sampler' is {space.searcher.sampler}, which needs "
                f"the '{needs}' package: pip install {needs}"
            )
        if space.test_at_epochs:
            raise SpaceError(
                f"{source}: field 'test_at_epochs' is for grid studies, where every "
                "configuration is reported; a search scores only its winner on test"
            )
    else:
        other = [name for name, kind in kinds.items() if kind != "grid"]
        if other:
            raise SpaceError(
                f"{source}: with 'searcher: {{type: grid}}' every parameter must be a grid; "
                f"field 'parameters.{other[0]}' is {kinds[other[0]]}"
            )


def _corner_values(spec: dict[str, Any]) -> list[Any]:
    kind, values = next(iter(spec.items()))
    if kind in ("choice", "grid"):
        return list(values)
    return [values[0], values[1]]


def _check_combinations(space: SearchSpace, source: str) -> None:
    """Every listed value and range end, and their combinations, make a valid config."""
    names = list(space.parameters)
    options = [_corner_values(space.parameters[name]) for name in names]
    combos: list[tuple] = []
    total = 1
    for values in options:
        total *= len(values)
    if total <= _MAX_COMBINATIONS_CHECKED:
        combos = list(itertools.product(*options))
    else:  # too many: every value once, plus a random sample of combinations
        rng = random.Random(0)
        combos = [tuple(rng.choice(values) for values in options)
                  for _ in range(_MAX_COMBINATIONS_CHECKED)]  # fmt: skip
    for combo in combos or [()]:
        sampled = dict(zip(names, combo, strict=True))
        try:
            space.trial_config(sampled)
        except ConfigError as error:
            message = str(error).split(": ", 1)[-1]
            fields = ", ".join(f"{k}={v!r}" for k, v in sampled.items()) or "the fixed values"
            hint = ""
            if "tied" in message:
                hint = (" To search tied weights, make nhid follow emsize: "
                        "'derived: {nhid: emsize}'.")  # fmt: skip
            raise SpaceError(
                f"{source}: the trial config with {fields} is invalid: {message}{hint}"
            ) from None

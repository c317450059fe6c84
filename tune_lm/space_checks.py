"""The checks every search space passes before anything starts: unknown keys (with the
closest valid one suggested), wrong types, empty or inverted ranges, searcher and
objective combinations, and the training configs at the corners of the space, which
:class:`~tune_lm.config.TrainConfig` must accept.
"""

from __future__ import annotations

import difflib
import importlib.util
import itertools
import math
import random
from typing import Any

from pydantic import ValidationError

from tune_lm.config import TrainConfig, describe_validation_error
from tune_lm.errors import ConfigError
from tune_lm.space import (
    PARAMETER_KINDS,
    BudgetSpec,
    ResourcesSpec,
    SchedulerSpec,
    SearcherSpec,
    SearchSpace,
    SpaceError,
)

_MAX_COMBINATIONS_CHECKED = 4096


def validate(raw: dict[str, Any], source: str) -> SearchSpace:
    try:
        space = SearchSpace(**raw)
    except ValidationError as error:
        raise SpaceError(f"{source}: {_explain(error)}") from None
    except TypeError as error:
        raise SpaceError(f"{source}: {error}") from None
    for check in (_check_fields, _check_parameters, _check_searcher, _check_combinations,
                  _check_epochs):  # fmt: skip
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


def _check_parameters(space: SearchSpace, source: str) -> None:
    for name, spec in space.parameters.items():
        where = f"{source}: field 'parameters.{name}'"
        if len(spec) != 1 or next(iter(spec)) not in PARAMETER_KINDS:
            kinds = "; ".join(f"{k}: {v}" for k, v in PARAMETER_KINDS.items())
            raise SpaceError(f"{where} must have exactly one of these keys — {kinds}")
        kind, values = next(iter(spec.items()))
        if not isinstance(values, list) or not values:
            raise SpaceError(f"{where}: {kind} needs a non-empty list, got {values!r}")
        if kind in ("choice", "grid"):
            continue
        expected = 3 if kind.startswith("q") else 2
        if len(values) != expected or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        ):
            shape = "[low, high, q]" if expected == 3 else "[low, high]"
            raise SpaceError(f"{where}: {kind} needs {shape} finite numbers, got {values!r}")
        low, high = values[0], values[1]
        if kind in ("int", "logint", "qint") and not all(isinstance(v, int) for v in values):
            raise SpaceError(f"{where}: {kind} needs whole numbers, got {values!r}")
        if low >= high:
            raise SpaceError(f"{where}: low must be below high, got {values!r}")
        if kind.startswith("log") and low <= 0:
            raise SpaceError(f"{where}: {kind} needs low > 0 (a log scale), got {values!r}")
        if expected == 3 and values[2] <= 0:
            raise SpaceError(f"{where}: q must be positive, got {values!r}")


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

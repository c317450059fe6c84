"""The parts of a search space, each a type that checks itself when it is built.

- the run settings: :class:`SearcherSpec`, :class:`SchedulerSpec`, :class:`BudgetSpec`,
  :class:`ResourcesSpec`, with the limits a command-line override obeys too
  (:func:`check_override`);
- :class:`TrainingSpace`, what every trial trains: the fixed, searched
  (:mod:`tune_lm.tuning.params`) and derived training options. Names must be training
  options (the closest one suggested), a range must sample numbers of its option's type,
  ``derived`` must not loop, and the training configs at the corners of the space must be
  ones :class:`~tune_lm.lm.config.TrainConfig` accepts.

A problem found across fields is a :data:`SPACE_ERROR` whose message names the field
itself; :meth:`tune_lm.tuning.space.SearchSpace.from_raw` prefixes the file.
"""

from __future__ import annotations

import itertools
import random
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from tune_lm.lm.config import TrainConfig, numbers_only
from tune_lm.lm.errors import ConfigError, short_repr
from tune_lm.tuning.layout import experiment_name_problem
from tune_lm.tuning.params import (
    Parameter,
    kinds_fit_options,
    option_type,
    range_fits_option,
    space_error,
)
from tune_lm.tuning.space_options import derived_known_and_acyclic, known_options

MIN_REDUCTION_FACTOR = 2.0
_MAX_COMBINATIONS_CHECKED = 4096


class Section(BaseModel):
    """A part of a space file: frozen, unknown keys and non-finite numbers refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    _numbers_only = field_validator("*", mode="before")(classmethod(numbers_only))


class SearcherSpec(Section):
    type: Literal["optuna", "grid"] = "optuna"
    sampler: Literal["tpe", "random", "cmaes", "gp", "nsga2"] = "tpe"
    n_startup_trials: int | None = Field(None, ge=0)  # TPE's random warm-up trials
    # TPE fitted on the highest ASHA rung with enough trials, each valued there (BOHB-like;
    # tuning/rung_sampler.py); off: Optuna's PRUNED ordering (deepest first, then value).
    rung_aware: bool = False


def _sane_reduction(value: float) -> float:
    if not value >= MIN_REDUCTION_FACTOR:
        raise ValueError(
            f"must be at least {MIN_REDUCTION_FACTOR:g}. ASHA keeps 1 in reduction_factor "
            "trials at each rung, and rungs sit at grace_period x reduction_factor**k "
            "epochs: near 1 it stops almost nothing and makes thousands of rungs "
            "(log(max_t) / log(reduction_factor); Ray allocates them all up front). "
            "Use 2 to 4 (default 3)"
        )
    return value


class SchedulerSpec(Section):
    # hyperband: ASHA in several brackets, bracket k's first rung at grace_period x
    # reduction_factor**k (Ray's AsyncHyperBandScheduler), hedging against a grace
    # period too short to judge trials by.
    # mo_asha: ASHA promoting by non-dominated sorting on the objectives (several of them;
    # tuning/mo_asha.py).
    # pbt: population-based training (Ray's PBT; tuning/pbt.py): every perturbation_interval
    # epochs the worst quantile_fraction of trials continue the best's weights with their
    # lr / dropout perturbed (x0.8 or x1.2, or resampled with resample_probability).
    type: Literal["asha", "hyperband", "mo_asha", "fifo", "pbt"] = "asha"
    grace_period: float = Field(1.0, gt=0)  # epochs every trial gets before a stop
    reduction_factor: Annotated[float, AfterValidator(_sane_reduction)] = 3.0
    brackets: int = Field(3, ge=2, le=8)  # hyperband only
    perturbation_interval: float = Field(2.0, gt=0)  # pbt only: epochs between perturbations
    mutate: list[str] | None = None  # pbt only: what it perturbs (default: lr, dropout searched)
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)  # pbt only
    resample_probability: float = Field(0.25, ge=0, le=1)  # pbt only
    # pbt only: perturb only when every trial has reached the interval (Ray's synch=True;
    # the population pauses there), not each trial on its own as it arrives
    synchronous: bool = False


def parse_duration(text: str | float | int) -> float:
    """'90s', '30m', '2h', '1h30m', '1h 30m 10s' or a bare number of seconds -> seconds (> 0).

    After an h or m part every number needs its unit: '2h30' could mean 2 h 30 min or
    2 h 30 s, so it is refused rather than guessed. Zero is refused too: Ray reads a zero
    budget as no budget at all; leave the budget out for that."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        number = r"(\d+(?:\.\d+)?)"
        stripped = text.strip()
        # Spaces only after a unit letter: runs of optional \s* side by side backtrack for
        # minutes on a long run of spaces.
        match = re.fullmatch(rf"(?:{number}h\s*)?(?:{number}m\s*)?(?:{number}s)?", stripped)
        bare = re.fullmatch(number, stripped)
        if bare:
            seconds = float(bare.group(1))
        elif match and any(match.groups()):
            hours, minutes, secs = (float(part) if part else 0.0 for part in match.groups())
            seconds = hours * 3600 + minutes * 60 + secs
        elif re.fullmatch(rf"(?:{number}h\s*)?(?:{number}m\s*)?{number}", stripped):
            raise ValueError(
                f"time budget {text!r} is ambiguous: give every number its unit "
                "(e.g. 2h30m or 2h30s)"
            )
        else:
            raise ValueError(f"time budget {text!r} is not a duration like 90s, 30m, 2h or 1h30m")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(
            f"time budget {text!r} must be more than 0 seconds (Ray would read 0 as no limit); "
            "leave the budget out to run without one"
        )
    if seconds < MIN_TIME_BUDGET_S:
        raise ValueError(
            f"time budget {text!r} is shorter than a search's start ({MIN_TIME_BUDGET_S:g} s: "
            "Ray, the MLflow run and the first trials' processes start before any trial can "
            f"report, so it would end with no result); give at least {MIN_TIME_BUDGET_S:g}s, "
            "or leave the budget out"
        )
    return seconds


MIN_TIME_BUDGET_S = 30.0


def _a_duration(text: str | None) -> str | None:
    if text is not None:
        parse_duration(text)
    return text


def _seconds_as_text(value: Any) -> Any:
    """``time_budget: 90`` is 90 seconds, as ``--time-budget 90`` is (a number, not
    true/false: those stay for the type check to refuse)."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class ConfirmSpec(Section):
    """After the search, its ``top_k`` best configurations (a multi-objective search: its
    Pareto set, best validation perplexity first, at most ``top_k``) train again to the
    full budget with ``seeds`` fresh seeds each (tuning/confirm.py)."""

    top_k: int = Field(..., ge=1, le=50)
    seeds: int = Field(..., ge=2, le=50)  # one seed would show no spread


class BudgetSpec(Section):
    num_samples: int = Field(10, ge=1)  # trials (with a grid: repeats of the whole grid)
    max_concurrent: int | None = Field(None, ge=1)
    time_budget: Annotated[str | None, BeforeValidator(_seconds_as_text),
                           AfterValidator(_a_duration)] = None  # "90s", "1h30m", 90  # fmt: skip
    max_failures: int = Field(2, ge=0)  # retries of a trial that raised, from its checkpoint
    allow_large_grid: bool = False  # a grid of more than GRID_MAX_TRIALS trials, on purpose


def _gpu_share(gpus: float) -> float:
    if 0 < gpus < 0.01:
        raise ValueError(
            f"gpus_per_trial {gpus:g} would put over 100 trials on one GPU; use 0 (no GPU) "
            "or at least 0.01"
        )
    return gpus


class ResourcesSpec(Section):
    # Below a tenth of a core (or a hundredth of a GPU) per trial, Ray would pack hundreds
    # of trials onto one core or GPU; Ray itself counts only to 1/10000.
    cpus_per_trial: float = Field(1.0, ge=0.1)
    gpus_per_trial: Annotated[float, Field(ge=0), AfterValidator(_gpu_share)] = 0.0


Seed = Annotated[int, Field(ge=0, lt=2**32)]
FixedValues = Annotated[dict[str, Any], known_options("fixed")]
Parameters = Annotated[
    dict[str, Parameter], known_options("parameters"), AfterValidator(kinds_fit_options)
]
Derived = Annotated[  # field: the other field whose value it takes
    dict[str, str], known_options("derived"), AfterValidator(derived_known_and_acyclic)
]


class TrainingSpace(Section):
    """What every trial trains: fixed values, then sampled ones, then derived ones, as a
    :class:`~tune_lm.lm.config.TrainConfig` (:meth:`trial_config`). Every listed value and
    range end, and their combinations, make a valid config."""

    name: str | None = None
    data: str | None = None  # corpus; default: the config default (wikitext-2)
    seed: Seed = 0  # the sampler's and (unless set) every trial's
    fixed: FixedValues = {}
    parameters: Parameters = {}
    derived: Derived = {}  # field: other field whose value it takes

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        problem = experiment_name_problem(name) if name is not None else None
        if problem:
            raise space_error(f"field 'name' {short_repr(name)} {problem}")
        return name

    @model_validator(mode="after")
    def _each_option_in_one_place(self) -> TrainingSpace:
        for name in self.derived:
            if name in self.parameters or name in self.fixed:
                raise space_error(
                    f"field 'derived.{name}' is also in "
                    f"{'parameters' if name in self.parameters else 'fixed'}; keep it in one place"
                )
        both = set(self.fixed) & set(self.parameters)
        if both:
            raise space_error(f"{sorted(both)} are both fixed and searched; keep one")
        if "data" in self.fixed or "data" in self.parameters:
            raise space_error("set the corpus with the top-level 'data:' key")
        return self

    @model_validator(mode="after")
    def _derived_fit_their_options(self) -> TrainingSpace:
        """A derived option takes a range's sampled values: whole numbers for a whole
        option (the corners, a range's ends, can be whole where the samples are not)."""
        for name in self.derived:
            source = self._source_of(name)
            if (option_type(name) is None) != (option_type(source) is None):
                what = {True: "text or a choice", False: "a number"}
                raise space_error(
                    f"field 'derived.{name}': {name} is {what[option_type(name) is None]}, "
                    f"but {source}, which it takes its value from, is "
                    f"{what[option_type(source) is None]}; derive it from an option of its "
                    f"kind, or search it in parameters")  # fmt: skip
            if source in self.parameters:
                range_fits_option(name, self.parameters[source], source=source)
        return self

    def _source_of(self, name: str) -> str:
        """Where derived option ``name`` takes its value: the end of its chain."""
        source = self.derived[name]
        for _ in self.derived:  # a chain (a: b, b: c) ends at c; a cycle is refused earlier
            if source not in self.derived:
                break
            source = self.derived[source]
        return source

    def corners(self) -> list[dict[str, Any]]:
        """The sampled values checked before a search starts: every combination of the
        parameters' corners (a random sample of them when there are too many)."""
        names = list(self.parameters)
        options = [self.parameters[name].corners() for name in names]
        total = 1
        for values in options:
            total *= len(values)
        if total <= _MAX_COMBINATIONS_CHECKED:
            combos = list(itertools.product(*options))
        else:  # too many to try them all: a random sample of them
            rng = random.Random(0)
            combos = [tuple(rng.choice(values) for values in options)
                      for _ in range(_MAX_COMBINATIONS_CHECKED)]  # fmt: skip
        return [dict(zip(names, combo, strict=True)) for combo in combos or [()]]

    @model_validator(mode="after")
    def _corners_are_valid_configs(self) -> TrainingSpace:
        for sampled in self.corners():
            try:
                self.trial_config(sampled)
            except ConfigError as error:
                message = str(error).split(": ", 1)[-1]
                fields = ", ".join(f"{k}={v!r}" for k, v in sampled.items()) or "the fixed values"
                hint = ""
                if "tied" in message:
                    hint = (" To search tied weights, make nhid follow emsize: "
                            "'derived: {nhid: emsize}'.")  # fmt: skip
                raise space_error(
                    f"the trial config with {fields} is invalid: {message}{hint}"
                ) from None
        return self

    @property
    def epochs(self) -> int:
        return int(self.fixed.get("epochs", TrainConfig.model_fields["epochs"].default))

    def largest(self, option: str) -> Any:
        """The largest value ``option`` can take in this space (fixed, searched, or the
        config default)."""
        if option in self.parameters:
            return self.parameters[option].largest()
        return self.fixed.get(option, TrainConfig.model_fields[option].default)

    def _on_step(self, name: str, value: Any) -> Any:
        parameter = self.parameters.get(name)
        return value if parameter is None else parameter.on_step(value)

    def trial_config(self, sampled: dict[str, Any]) -> TrainConfig:
        """The TrainConfig of one trial: fixed values, then sampled, then derived."""
        sampled = {name: self._on_step(name, value) for name, value in sampled.items()}
        values = {"seed": self.seed, **self.fixed, **sampled}
        if self.data is not None:
            values["data"] = self.data
        for name in self.derived:
            source = self._source_of(name)
            values[name] = values.get(source, TrainConfig.model_fields[source].default)
        return TrainConfig.from_dict(values, source=f"search space {self.name!r}")


OVERRIDES = {  # command-line override (a search flag): the field of the space it sets
    "data": "data", "seed": "seed", "max_epochs": "fixed.epochs",
    "num_samples": "budget.num_samples", "max_concurrent": "budget.max_concurrent",
    "time_budget": "budget.time_budget", "max_failures": "budget.max_failures",
    "cpus_per_trial": "resources.cpus_per_trial", "gpus_per_trial": "resources.gpus_per_trial",
}  # fmt: skip
_LIMITS = {  # pydantic's error type -> the limit, in words
    "greater_than_equal": ("must be at least", "ge"),
    "greater_than": ("must be more than", "gt"),
    "less_than": ("must be less than", "lt"),
    "less_than_equal": ("must be at most", "le"),
}


def check_override(key: str, value: Any, flag: str | None = None) -> None:
    """Checks one command-line override (``num_samples``, ``max_epochs``, ...) against the
    limits of the space field it sets, so that a bad flag fails before any space is read;
    raises :class:`~tune_lm.lm.errors.ConfigError` naming ``flag`` (default: ``--num-samples``
    for ``num_samples``)."""
    flag = flag or f"--{key.replace('_', '-')}"
    where = OVERRIDES[key]
    section, _, name = where.rpartition(".")
    models = {"": TrainingSpace, "fixed": TrainConfig, "budget": BudgetSpec,
              "resources": ResourcesSpec}  # fmt: skip
    field = models[section].model_fields[name]
    limited = field.annotation  # with its limits (ge=1, a validator), if any:
    if field.metadata:
        limited = Annotated[(field.annotation, *field.metadata)]
    try:
        TypeAdapter(limited, config=ConfigDict(allow_inf_nan=False)).validate_python(value)
    except ValidationError as error:
        problem = error.errors()[0]
        if problem["type"] == "value_error":  # its message says the fix
            said = f": {problem['msg'].removeprefix('Value error, ')}"
        elif problem["type"] in _LIMITS:
            words, bound = _LIMITS[problem["type"]]
            limit = problem["ctx"][bound]
            said = f" {words} {limit if isinstance(limit, int) else f'{limit:g}'}"
            said += f", got {short_repr(value)}"
        else:  # "Input should be a valid integer" and the like
            said = f" {problem['msg'].replace('Input should be', 'must be')}"
            said += f" (got {short_repr(value)})"
        raise ConfigError(
            f"{flag}{said} (it sets the space's {where}; leave the flag out to keep the "
            "space's value)"
        ) from None

"""Search spaces as data: the YAML format, its validation, and its conversion for Tune.

A space file names the parameters to search, the fixed values, the searcher, the
scheduler, the budget, the per-trial resources, the corpus and a seed (see the README
for a complete example). Everything is checked before anything starts: unknown keys
(with the closest valid one suggested), wrong types, empty or inverted ranges, values
and combinations that :class:`~tune_lm.config.TrainConfig` rejects.
"""

from __future__ import annotations

import difflib
import importlib.util
import itertools
import math
import random
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tune_lm.config import TrainConfig, describe_validation_error
from tune_lm.errors import ConfigError

SHIPPED_SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
PARAMETER_KINDS = {
    # kind: (meaning, number of values in its list)
    "choice": "one of the listed values, e.g. {choice: [LSTM, GRU]}",
    "grid": "every listed value, one trial each (searcher type: grid), e.g. {grid: [35, 50]}",
    "uniform": "a float in [low, high], e.g. {uniform: [0.0, 0.5]}",
    "loguniform": "a float in [low, high] on a log scale, low > 0, e.g. {loguniform: [1, 40]}",
    "int": "an integer in [low, high], both included, e.g. {int: [1, 3]}",
    "logint": "an integer in [low, high] on a log scale, e.g. {logint: [64, 1024]}",
    "quniform": "a float in [low, high] in steps of q, e.g. {quniform: [0.0, 0.5, 0.1]}",
    "qint": "an integer in [low, high] in steps of q, e.g. {qint: [100, 800, 100]}",
}
_MAX_COMBINATIONS_CHECKED = 4096


class SpaceError(ConfigError):
    """A search space that cannot be run; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SearcherSpec(_Strict):
    type: Literal["optuna", "grid"] = "optuna"
    sampler: Literal["tpe", "random", "cmaes", "gp", "nsga2"] = "tpe"
    n_startup_trials: int | None = Field(None, ge=0)  # TPE's random warm-up trials


class SchedulerSpec(_Strict):
    type: Literal["asha", "fifo"] = "asha"
    grace_period: float = Field(1.0, gt=0)  # epochs every trial gets before a stop
    reduction_factor: float = Field(3.0, gt=1)


class BudgetSpec(_Strict):
    num_samples: int = Field(10, ge=1)  # trials (with a grid: repeats of the whole grid)
    max_concurrent: int | None = Field(None, ge=1)
    time_budget: str | None = None  # "90s", "30m", "2h", "1h30m"
    max_failures: int = Field(2, ge=0)  # retries of a trial that raised, from its checkpoint

    @model_validator(mode="after")
    def _parse_budget(self) -> BudgetSpec:
        if self.time_budget is not None:
            parse_duration(self.time_budget)
        return self


class ResourcesSpec(_Strict):
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)


class SearchSpace(_Strict):
    """A validated search space (use :func:`load_space`)."""

    name: str | None = None
    data: str | None = None  # corpus; default: the config default (wikitext-2)
    seed: int = 0  # seeds the sampler and, unless fixed or searched, every trial
    searcher: SearcherSpec = SearcherSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    budget: BudgetSpec = BudgetSpec()
    resources: ResourcesSpec = ResourcesSpec()
    fixed: dict[str, Any] = {}
    parameters: dict[str, dict[str, Any]] = {}
    derived: dict[str, str] = {}  # field: other field whose value it takes
    test_at_epochs: list[int] = []  # grid studies: test perplexity at these epochs
    # What Optuna optimises: val_ppl first (ASHA stops on it), optionally a cost too.
    objectives: list[Literal["val_ppl", "epoch_time_s", "tokens_per_s"]] = ["val_ppl"]

    @property
    def objective_modes(self) -> list[str]:
        return ["max" if name == "tokens_per_s" else "min" for name in self.objectives]

    @property
    def epochs(self) -> int:
        return int(self.fixed.get("epochs", TrainConfig.model_fields["epochs"].default))

    @property
    def asha_rungs(self) -> list[float]:
        """The epochs at which ASHA compares trials (ascending); none with FIFO."""
        if self.scheduler.type != "asha":
            return []
        rungs, epoch = [], self.scheduler.grace_period
        while epoch < self.epochs:
            rungs.append(epoch)
            epoch *= self.scheduler.reduction_factor
        return rungs

    def searched(self, tune_config: dict[str, Any]) -> dict[str, Any]:
        """The searched parameters' values out of a trial's Tune config."""
        return {name: tune_config[name] for name in self.parameters if name in tune_config}

    def trial_config(self, sampled: dict[str, Any]) -> TrainConfig:
        """The TrainConfig of one trial: fixed values, then sampled, then derived."""
        values = {"seed": self.seed, **self.fixed, **sampled}
        if self.data is not None:
            values["data"] = self.data
        for name, source in self.derived.items():
            values[name] = values.get(source, TrainConfig.model_fields[source].default)
        return TrainConfig.from_dict(values, source=f"search space {self.name!r}")

    def with_overrides(self, **overrides: Any) -> SearchSpace:
        """A copy with command-line overrides applied (``None`` = not given), revalidated."""
        raw = self.model_dump()
        sections = {"num_samples": "budget", "max_concurrent": "budget",
                    "time_budget": "budget", "max_failures": "budget",
                    "cpus_per_trial": "resources", "gpus_per_trial": "resources"}  # fmt: skip
        for key, value in overrides.items():
            if value is None:
                continue
            if key in sections:
                raw[sections[key]][key] = value
            elif key == "max_epochs":
                raw["fixed"]["epochs"] = value
            else:
                raw[key] = value
        return _validate(raw, source=f"{self.name} (with command-line overrides)")


def parse_duration(text: str | float | int) -> float:
    """'90s', '30m', '2h', '1h30m' or a number of seconds -> seconds."""
    if isinstance(text, int | float):
        return float(text)
    number = r"(\d+(?:\.\d+)?)"
    # Spaces only after a unit letter: runs of optional \s* side by side backtrack for
    # minutes on a long run of spaces.
    match = re.fullmatch(rf"(?:{number}h\s*)?(?:{number}m\s*)?(?:{number}s?)?", text.strip())
    if not match or not any(match.groups()):
        raise ValueError(f"time budget {text!r} is not a duration like 90s, 30m, 2h or 1h30m")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def resolve_space_path(name_or_path: str) -> Path:
    """A path as given, else a shipped space by bare name (``cells`` or ``cells.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    shipped = SHIPPED_SPACES / f"{stem}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    available = ", ".join(sorted(p.name for p in SHIPPED_SPACES.glob("*.yaml")))
    raise SpaceError(
        f"search space {name_or_path!r} not found: it is neither a file nor a shipped "
        f"space. Shipped spaces: {available or 'none'}; or give a path to a YAML file"
    )


def load_space(name_or_path: str) -> SearchSpace:
    """Read, parse (safely) and validate a search-space YAML file."""
    path = resolve_space_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SpaceError(f"{path}: cannot be read ({error})") from None
    try:
        raw = yaml.safe_load(text)  # safe: no tag runs code or builds an arbitrary object
    except yaml.YAMLError as error:
        raise SpaceError(f"{path}: {_describe_yaml_error(error)}") from None
    except RecursionError:
        raise SpaceError(f"{path}: nested too deeply to be a search space") from None
    except Exception as error:  # some bad scalars escape PyYAML raw: !!int 12a, 2020-13-45
        raise SpaceError(
            f"{path}: not valid YAML ({type(error).__name__}: {error}). Fix the value there"
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: the top level must be a mapping of keys (name, parameters, ...)")
    raw.setdefault("name", path.stem)
    return _validate(raw, source=str(path))


def _describe_yaml_error(error: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one sentence: where, what, and the fix."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or not problem:
        return f"not valid YAML ({' '.join(str(error).split())}). Fix the syntax there"
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(error, yaml.constructor.ConstructorError) and "tag" in problem:
        tag = problem.replace("tag:yaml.org,2002:", "!!")
        return (
            f"not valid YAML for a search space at {where}: {tag}. A search space is plain "
            "data (mappings, lists, strings, numbers); remove the tag"
        )
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        context += f" that starts at line {context_mark.line + 1}, column {context_mark.column + 1}"
    return f"not valid YAML at {where}: {problem}{f' ({context})' if context else ''}. Fix it there"


def _validate(raw: dict[str, Any], source: str) -> SearchSpace:
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


def to_tune_space(space: SearchSpace) -> dict[str, Any]:
    """Tune's ``param_space``: one Tune domain per searched parameter."""
    from ray import tune  # Ray is imported only where a search needs it

    makers = {
        "choice": lambda v: tune.choice(v),
        "grid": lambda v: tune.grid_search(v),
        "uniform": lambda v: tune.uniform(v[0], v[1]),
        "loguniform": lambda v: tune.loguniform(v[0], v[1]),
        "int": lambda v: tune.randint(v[0], v[1] + 1),  # Tune's upper bound is exclusive
        "logint": lambda v: tune.lograndint(v[0], v[1] + 1),
        "quniform": lambda v: tune.quniform(v[0], v[1], v[2]),
        "qint": lambda v: tune.qrandint(v[0], v[1], v[2]),  # inclusive upper bound
    }
    return {
        name: makers[next(iter(spec))](next(iter(spec.values())))
        for name, spec in space.parameters.items()
    }

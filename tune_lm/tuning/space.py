"""Search spaces as data: the YAML format and its conversion for Tune (the checks that
run on every space are in :mod:`tune_lm.tuning.space_checks`).

A space file names the parameters to search, the fixed values, the searcher, the
scheduler, the budget, the per-trial resources, the corpus and a seed (see the README
for a complete example). Everything is checked before anything starts: unknown keys
(with the closest valid one suggested), wrong types, empty or inverted ranges, values
and combinations that :class:`~tune_lm.lm.config.TrainConfig` rejects.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tune_lm.lm.config import TrainConfig
from tune_lm.lm.errors import ConfigError
from tune_lm.tuning.space_yaml import (
    SpaceFileError,
    describe_yaml_error,
    parse_space_yaml,
    read_space_text,
)

SHIPPED_SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
MIN_REDUCTION_FACTOR = 2.0
GRID_WARN_TRIALS = 100  # a grid this big gets a warning with its count
GRID_MAX_TRIALS = 1000  # and one bigger is refused unless budget.allow_large_grid is true
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
    reduction_factor: float = 3.0

    @field_validator("reduction_factor")
    @classmethod
    def _sane_reduction(cls, value: float) -> float:
        if not value >= MIN_REDUCTION_FACTOR:
            raise ValueError(
                f"must be at least {MIN_REDUCTION_FACTOR:g}. ASHA keeps 1 in reduction_factor "
                "trials at each rung, and rungs sit at grace_period x reduction_factor**k "
                "epochs: near 1 it stops almost nothing and makes thousands of rungs "
                "(log(max_t) / log(reduction_factor); Ray allocates them all up front). "
                "Use 2 to 4 (default 3)"
            )
        return value


class BudgetSpec(_Strict):
    num_samples: int = Field(10, ge=1)  # trials (with a grid: repeats of the whole grid)
    max_concurrent: int | None = Field(None, ge=1)
    time_budget: str | None = None  # "90s", "30m", "2h", "1h30m"
    max_failures: int = Field(2, ge=0)  # retries of a trial that raised, from its checkpoint
    allow_large_grid: bool = False  # a grid of more than GRID_MAX_TRIALS trials, on purpose

    @model_validator(mode="after")
    def _parse_budget(self) -> BudgetSpec:
        if self.time_budget is not None:
            parse_duration(self.time_budget)
        return self


class ResourcesSpec(_Strict):
    # Below a tenth of a core (or a hundredth of a GPU) per trial, Ray would pack hundreds
    # of trials onto one core or GPU; Ray itself counts only to 1/10000.
    cpus_per_trial: float = Field(1.0, ge=0.1)
    gpus_per_trial: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _gpu_share(self) -> ResourcesSpec:
        if 0 < self.gpus_per_trial < 0.01:
            raise ValueError(
                f"gpus_per_trial {self.gpus_per_trial:g} would put over 100 trials on one "
                "GPU; use 0 (no GPU) or at least 0.01"
            )
        return self


class SearchSpace(_Strict):
    """A validated search space (use :func:`load_space`)."""

    name: str | None = None
    data: str | None = None  # corpus; default: the config default (wikitext-2)
    seed: int = Field(0, ge=0, lt=2**32)  # the sampler's and (unless set) every trial's

    @model_validator(mode="before")
    @classmethod
    def _one_pass_of_a_grid(cls, raw: Any) -> Any:
        """A grid runs once unless budget.num_samples asks for repeats (the default of 10
        is a number of sampled trials, which means nothing for a grid)."""
        if isinstance(raw, dict) and isinstance(raw.get("searcher"), dict | SearcherSpec):
            searcher = raw["searcher"]
            kind = searcher.get("type") if isinstance(searcher, dict) else searcher.type
            budget = raw.get("budget")
            if kind == "grid" and (budget is None or isinstance(budget, dict)):
                raw = {**raw, "budget": {"num_samples": 1, **(budget or {})}}
        return raw
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

    def largest(self, option: str) -> Any:
        """The largest value ``option`` can take in this space (fixed, searched, or the
        config default)."""
        if option in self.parameters:
            (kind, values), = self.parameters[option].items()
            return max(values[:2] if kind not in ("choice", "grid") else values)
        return self.fixed.get(option, TrainConfig.model_fields[option].default)

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

    @property
    def repeat_seeds(self) -> list[int]:
        """A grid run ``num_samples`` times repeats each configuration with these seeds
        (one each; the same seed would only repeat the same run). Empty when the grid runs
        once, or when the seed is fixed or searched."""
        repeats = self.budget.num_samples
        if self.searcher.type != "grid" or repeats < 2 or "seed" in self.fixed:
            return []
        if "seed" in self.parameters:
            return []
        return [self.seed + index for index in range(repeats)]

    @property
    def total_trials(self) -> int:
        """Trials the search will run: num_samples, times the grid's size for a grid."""
        grid = 1
        for spec in self.parameters.values():
            if "grid" in spec:
                grid *= len(spec["grid"])
        return self.budget.num_samples * grid

    def searched(self, tune_config: dict[str, Any]) -> dict[str, Any]:
        """The searched parameters' values (and a grid repeat's seed) out of a trial's
        Tune config."""
        names = [*self.parameters, *(["seed"] if self.repeat_seeds else [])]
        return {name: self._on_step(name, tune_config[name])
                for name in names if name in tune_config}  # fmt: skip

    def _on_step(self, name: str, value: Any) -> Any:
        """A quantised value as its step writes it: 0.3, not the sampler's
        0.30000000000000004 (which would show in configs, MLflow params and tables)."""
        spec = self.parameters.get(name, {})
        if "quniform" not in spec or not isinstance(value, float):
            return value
        step = Decimal(repr(float(spec["quniform"][2])))
        return round(value, max(-int(step.as_tuple().exponent), 0))

    def trial_config(self, sampled: dict[str, Any]) -> TrainConfig:
        """The TrainConfig of one trial: fixed values, then sampled, then derived."""
        sampled = {name: self._on_step(name, value) for name, value in sampled.items()}
        values = {"seed": self.seed, **self.fixed, **sampled}
        if self.data is not None:
            values["data"] = self.data
        for name, source in self.derived.items():
            for _ in self.derived:  # a chain (a: b, b: c) ends at c; a cycle is refused earlier
                if source not in self.derived:
                    break
                source = self.derived[source]
            values[name] = values.get(source, TrainConfig.model_fields[source].default)
        return TrainConfig.from_dict(values, source=f"search space {self.name!r}")

    def with_overrides(self, **overrides: Any) -> SearchSpace:
        """A copy with command-line overrides applied (``None`` = not given), revalidated."""
        raw = self.model_dump(exclude_unset=True)  # what the file set: see _check_ignored_keys
        sections = {"num_samples": "budget", "max_concurrent": "budget",
                    "time_budget": "budget", "max_failures": "budget",
                    "cpus_per_trial": "resources", "gpus_per_trial": "resources"}  # fmt: skip
        for key, value in overrides.items():
            if value is None:
                continue
            if key in sections:
                raw.setdefault(sections[key], {})[key] = value
            elif key == "max_epochs":
                raw.setdefault("fixed", {})["epochs"] = value
            else:
                raw[key] = value
        from tune_lm.tuning.space_checks import validate

        given = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in overrides.items()
                         if value is not None)  # fmt: skip
        return validate(raw, source=f"space {self.name!r} with {given or 'no overrides'}")


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
    return seconds


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
    """Read, parse (safely, within bounds) and validate a search-space YAML file."""
    path = resolve_space_path(name_or_path)
    try:
        raw = parse_space_yaml(read_space_text(path))
    except SpaceFileError as error:
        raise SpaceError(f"{path}: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpaceError(f"{path}: cannot be read ({error})") from None
    except yaml.YAMLError as error:
        raise SpaceError(f"{path}: {describe_yaml_error(error)}") from None
    except RecursionError:
        raise SpaceError(f"{path}: nested too deeply to be a search space") from None
    except Exception as error:  # some bad scalars escape PyYAML raw: !!int 12a, 2020-13-45
        raise SpaceError(
            f"{path}: not valid YAML ({type(error).__name__}: {error}). Fix the value there"
        ) from None
    if raw is None or raw == {}:
        raise SpaceError(
            f"{path}: the search space is empty, so there is nothing to search. Give at "
            "least 'parameters:' (see the README's 'Search spaces', or a shipped space "
            "such as quick.yaml)"
        )
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: the top level must be a mapping of keys (name, parameters, ...)")
    raw.setdefault("name", path.stem)
    from tune_lm.tuning.space_checks import validate  # it imports this module's classes

    return validate(raw, source=str(path))


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

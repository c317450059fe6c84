"""Search spaces as data: the YAML format and the validated :class:`SearchSpace` it becomes.

A space file names the parameters to search, the fixed values, the searcher, the
scheduler, the budget, the per-trial resources, the corpus and a seed (see the README
for a complete example). A :class:`SearchSpace` cannot hold an invalid one: each part
checks itself when it is built (:mod:`tune_lm.tuning.params`,
:mod:`tune_lm.tuning.space_parts`), and the space checks what spans the parts: keys the
chosen searcher or scheduler would ignore, searcher and objective combinations, grids too
big to mean it, epochs, something searched. :meth:`SearchSpace.from_raw` turns pydantic's
error into a :class:`SpaceError` naming the file and the field, with the fix
(:mod:`tune_lm.tuning.space_errors`). Tune's form
of a space is made in :mod:`tune_lm.tuning.tune_space`, where Ray comes in.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import ValidationError, ValidationInfo, model_serializer, model_validator

from tune_lm.lm.config import PERTURBABLE
from tune_lm.lm.errors import ConfigError
from tune_lm.tuning.params import (
    PARAMETER_KINDS,
    space_error,
)
from tune_lm.tuning.space_errors import explain
from tune_lm.tuning.space_parts import (
    MIN_REDUCTION_FACTOR,
    OVERRIDES,
    BudgetSpec,
    ConfirmSpec,
    ResourcesSpec,
    SchedulerSpec,
    SearcherSpec,
    TrainingSpace,
    check_override,
    parse_duration,
)
from tune_lm.tuning.space_pbt import check_pbt
from tune_lm.tuning.space_size import check_trials_differ, grid_shape, grid_warning

__all__ = [  # and, from the modules it is built of, what users of a space need
    "GRID_MAX_TRIALS", "MIN_REDUCTION_FACTOR", "PARAMETER_KINDS",
    "BudgetSpec", "ConfirmSpec", "ResourcesSpec", "SchedulerSpec", "SearchSpace",
    "SearcherSpec", "SpaceError", "check_override", "grid_warning",
    "parse_duration",
]  # fmt: skip

GRID_MAX_TRIALS = 1000  # and one bigger is refused unless budget.allow_large_grid is true
_GRID_ONLY = "without 'searcher: {type: grid}' (only a grid's size is limited)"
_OPTUNA_ONLY = "with 'searcher: {type: grid}' (a grid runs every combination; only Optuna samples)"
_PBT_ONLY = "unless 'scheduler: {type: pbt}'"
_NOT_PBT = ("with 'scheduler: {type: pbt}' (PBT stops no trial; it moves the worst onto "
            "the best's weights every perturbation_interval epochs)")
_ASHA_ONLY = ("with 'scheduler: {type: fifo}' (FIFO stops no trial early; only ASHA and "
              "Hyperband read it)")


class SpaceError(ConfigError):
    """A search space that cannot be run; the message names the file and field."""


class SearchSpace(TrainingSpace):
    """A validated search space: what every trial trains (:class:`TrainingSpace`) and how
    the trials are searched. Build one with :func:`load_space` or :meth:`from_raw`."""

    searcher: SearcherSpec = SearcherSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    budget: BudgetSpec = BudgetSpec()
    resources: ResourcesSpec = ResourcesSpec()
    test_at_epochs: list[int] = []  # grid studies: test perplexity at these epochs
    # Known-good configurations (a value for every searched parameter), evaluated first.
    baselines: list[dict[str, Any]] = []
    # What Optuna optimises: val_ppl first (ASHA stops on it), optionally a cost too.
    objectives: list[Literal["val_ppl", "epoch_time_s", "tokens_per_s"]] = ["val_ppl"]
    # The finalists, trained again with fresh seeds after the search (None: not done).
    confirm: ConfirmSpec | None = None

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

    def _without_effect(self) -> list[tuple[str, str, str, str]]:
        """(section, key, why, fix) of each key the chosen searcher or scheduler never reads."""
        grid, fifo = self.searcher.type == "grid", self.scheduler.type == "fifo"
        pbt = self.scheduler.type == "pbt"
        sampler = self.searcher.sampler
        rules = [  # (section, key, has no effect when, why, fix)
            ("searcher", "sampler", grid, _OPTUNA_ONLY, "remove it, or use type: optuna"),
            ("searcher", "n_startup_trials", grid, _OPTUNA_ONLY, "remove it, or use type: optuna"),
            ("searcher", "n_startup_trials", sampler != "tpe", f"with sampler {sampler} (only "
             "the tpe sampler takes it)", "remove it, or use sampler: tpe"),
            ("searcher", "rung_aware", grid or sampler != "tpe", "unless 'searcher: {type: "
             "optuna, sampler: tpe}'", "remove it, or use the tpe sampler"),
            ("searcher", "rung_aware", fifo, "with 'scheduler: {type: fifo}' (no rungs)",
             "remove it, or use type: asha"),
            ("searcher", "rung_aware", len(self.objectives) > 1, "with several objectives",
             "remove it"),
            ("scheduler", "grace_period", fifo, _ASHA_ONLY, "remove it, or use type: asha"),
            ("scheduler", "reduction_factor", fifo, _ASHA_ONLY, "remove it, or use type: asha"),
            ("scheduler", "grace_period", pbt, _NOT_PBT, "remove it"),
            ("scheduler", "reduction_factor", pbt, _NOT_PBT, "remove it"),
            *(("scheduler", key, not pbt, _PBT_ONLY, "remove it, or use type: pbt")
              for key in ("perturbation_interval", "mutate", "quantile_fraction",
                          "resample_probability", "synchronous")),
            ("scheduler", "brackets", self.scheduler.type != "hyperband", "unless 'scheduler: "
             "{type: hyperband}' (ASHA runs one bracket)", "remove it, or use type: hyperband"),
            ("budget", "allow_large_grid", not grid, _GRID_ONLY, "remove it"),
        ]  # fmt: skip
        return [(section, key, why, fix) for section, key, ignored, why, fix in rules if ignored]

    @model_validator(mode="after")
    def _every_key_takes_effect(self, info: ValidationInfo) -> SearchSpace:
        """A key given that the chosen searcher or scheduler never reads is refused: the
        user believes it acts. Only keys given count (``model_fields_set``), not defaults.
        A space tune_lm saved itself (context ``saved``: an experiment's space.json, which
        versions before 0.2 wrote with every key) is read as it was written."""
        if (info.context or {}).get("saved"):
            return self
        for section, key, why, fix in self._without_effect():
            if key in getattr(self, section).model_fields_set:
                raise space_error(f"field '{section}.{key}' has no effect {why}; {fix}")
        return self

    @model_serializer(mode="wrap")
    def _dump_only_keys_that_take_effect(self, handler: Any) -> Any:
        """So that a dumped space (space.json, a smoke copy) builds the same space again."""
        data = handler(self)
        for section, key, _, _ in self._without_effect():
            if isinstance(data, dict) and isinstance(data.get(section), dict):
                data[section].pop(key, None)
        return data

    @model_validator(mode="after")
    def _searcher_fits(self) -> SearchSpace:
        objectives, searcher = self.objectives, self.searcher
        if not objectives or objectives[0] != "val_ppl" or len(set(objectives)) != len(objectives):
            raise space_error(
                "field 'objectives' must start with val_ppl (ASHA stops trials on it) and name "
                f"each objective once, e.g. [val_ppl, epoch_time_s]; got {objectives}"
            )
        if len(objectives) > 1 and searcher.type != "optuna":
            raise space_error("field 'objectives' lists several objectives, which needs "
                              "'searcher: {type: optuna}' (tpe or nsga2)")  # fmt: skip
        if len(objectives) > 1 and searcher.sampler in ("cmaes", "gp"):
            raise space_error(f"field 'searcher.sampler' {searcher.sampler} optimises one "
                              "objective; use tpe or nsga2 with several objectives")  # fmt: skip
        kinds = {name: parameter.kind for name, parameter in self.parameters.items()}
        if searcher.type == "grid":
            other = [name for name, kind in kinds.items() if kind != "grid"]
            if other:
                raise space_error(
                    "with 'searcher: {type: grid}' every parameter must be a grid; "
                    f"field 'parameters.{other[0]}' is {kinds[other[0]]}"
                )
            return self
        grid = [name for name, kind in kinds.items() if kind == "grid"]
        if grid:
            raise space_error(
                f"field 'parameters.{grid[0]}' is a grid, which Optuna does not "
                "sample; use 'choice' for Optuna, or set 'searcher: {type: grid}'"
            )
        needs = {"cmaes": "cmaes", "gp": "scipy"}.get(searcher.sampler)
        if needs and importlib.util.find_spec(needs) is None:
            raise space_error(f"field 'searcher.sampler' is {searcher.sampler}, which needs the "
                              f"'{needs}' package: pip install {needs}")  # fmt: skip
        if self.test_at_epochs:
            raise space_error(
                "field 'test_at_epochs' is for grid studies, where every "
                "configuration is reported; a search scores only its winner on test"
            )
        return self

    @model_validator(mode="after")
    def _grid_meant(self) -> SearchSpace:
        grid, trials = self.searcher.type == "grid", self.total_trials
        if grid and trials > GRID_MAX_TRIALS and not self.budget.allow_large_grid:
            raise space_error(
                f"the grid runs {trials:,} trials (budget.num_samples {self.budget.num_samples} "
                f"x {grid_shape(self)}), more than {GRID_MAX_TRIALS:,}. Shorten the grid "
                "lists, use 'searcher: {type: optuna}' with 'choice' to sample it, or set "
                "'budget: {allow_large_grid: true}' if you mean it"
            )
        return self

    @model_validator(mode="after")
    def _mo_asha_has_objectives(self) -> SearchSpace:
        if self.scheduler.type == "mo_asha" and len(self.objectives) < 2:
            raise space_error("'scheduler: {type: mo_asha}' ranks trials on several "
                              "objectives, and the space has one; add one (objectives: "
                              "[val_ppl, epoch_time_s]) or use type: asha")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _pbt_fits(self) -> SearchSpace:
        """PBT's own rules (tuning/space_pbt.py)."""
        check_pbt(self)
        return self

    @property
    def pbt_mutations(self) -> list[str]:
        """What PBT perturbs: scheduler.mutate, or lr and dropout where searched."""
        if self.scheduler.mutate is not None:
            return list(self.scheduler.mutate)
        return [name for name in PERTURBABLE if name in self.parameters]

    @model_validator(mode="after")
    def _baselines_fit(self) -> SearchSpace:
        """Each baseline gives every searched parameter a value it can take."""
        if self.baselines and self.searcher.type == "grid":
            raise space_error("field 'baselines' has no effect with 'searcher: {type: grid}' "
                              "(a grid runs only its own cells); add the baseline's values "
                              "to the grid, or use type: optuna")  # fmt: skip
        searched = sorted(self.parameters)
        for number, baseline in enumerate(self.baselines, start=1):
            where = f"field 'baselines', entry {number}"
            unknown = sorted(set(baseline) - set(searched))
            if unknown:
                raise space_error(f"{where} names {unknown}, which the space does not search "
                                  f"(it searches {searched}); a baseline gives a value to "
                                  "each searched parameter, nothing else")  # fmt: skip
            missing = [name for name in searched if name not in baseline]
            if missing:
                raise space_error(f"{where} has no value for {missing}; give every searched "
                                  f"parameter a value ({searched})")  # fmt: skip
            for name in searched:
                why = self.parameters[name].refuses(baseline[name])
                if why:
                    raise space_error(f"{where}, {name}: {why}; give a value the parameter "
                                      "can take")  # fmt: skip
            if baseline in self.baselines[: number - 1]:
                first = self.baselines.index(baseline) + 1
                raise space_error(f"{where} repeats entry {first}: it would train the same "
                                  "configuration twice; list each baseline once")  # fmt: skip
        if len(self.baselines) > self.budget.num_samples:
            raise space_error(
                f"field 'baselines' lists {len(self.baselines)} configurations but the search "
                f"runs {self.budget.num_samples} trial(s) (budget.num_samples, or "
                "--num-samples): each baseline is one of its trials, so some would never run. "
                "Raise num_samples, or list fewer baselines")
        return self

    @model_validator(mode="after")
    def _epochs_fit(self) -> SearchSpace:
        """After the corners: ``self.epochs`` reads fixed.epochs, which they validate."""
        grace = self.scheduler.grace_period
        if self.scheduler.type != "fifo" and grace > self.epochs:
            raise space_error(
                f"field 'scheduler.grace_period' is {grace:g}, more than the {self.epochs} "
                "epochs a trial runs (fixed.epochs); lower it"
            )
        if self.scheduler.type == "hyperband":  # bracket b's first rung: grace x rf**b
            rf, brackets = self.scheduler.reduction_factor, self.scheduler.brackets
            useful = sum(1 for b in range(brackets) if grace * rf**b < self.epochs)
            if useful < brackets:
                raise space_error(
                    f"field 'scheduler.brackets' is {brackets}, but with grace_period {grace:g} "
                    f"and reduction_factor {rf:g} only {useful} bracket(s) have a rung below "
                    f"the {self.epochs} epochs a trial runs (fixed.epochs): the others would "
                    f"never stop a trial. Use brackets: {max(useful, 1)} or fewer, or more epochs"
                )
        for epoch in self.test_at_epochs:
            if not 1 <= epoch <= self.epochs:
                raise space_error(f"field 'test_at_epochs' has {epoch}, outside "
                                  f"1..{self.epochs} (fixed.epochs)")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _something_searched(self) -> SearchSpace:
        """Last, so that a more specific mistake is named first."""
        if not self.parameters:
            raise space_error(
                "field 'parameters' is missing or empty, so nothing is searched and every "
                "trial would train the same configuration. Add the options to search, e.g. "
                "'parameters: {lr: {loguniform: [1.0, 40.0]}}' (or train one model with "
                "python -m tune_lm.train)"
            )
        return self

    @model_validator(mode="after")
    def _trials_can_differ(self, info: ValidationInfo) -> SearchSpace:
        """Not one configuration tried many times (an experiment saved before this check
        is read as it was written)."""
        if not (info.context or {}).get("saved"):
            check_trials_differ(self)
        return self

    @classmethod
    def from_raw(cls, raw: dict[str, Any], source: str) -> SearchSpace:
        """The space ``raw`` (plain data, e.g. a parsed YAML file) describes, or a
        :class:`SpaceError` naming ``source``, the field and the fix."""
        try:
            return cls(**raw)
        except ValidationError as error:
            raise SpaceError(f"{source}: {explain(error, cls.known_keys())}") from None
        except TypeError as error:  # a key that is not a string
            raise SpaceError(f"{source}: {error}") from None

    @classmethod
    def known_keys(cls) -> dict[str, set[str]]:
        """The keys a space file may hold: at the top (``""``) and in each section of
        settings."""
        sections = {"searcher": SearcherSpec, "scheduler": SchedulerSpec,
                    "budget": BudgetSpec, "resources": ResourcesSpec}  # fmt: skip
        return {"": set(cls.model_fields),
                **{name: set(model.model_fields) for name, model in sections.items()}}

    @property
    def objective_modes(self) -> list[str]:
        return ["max" if name == "tokens_per_s" else "min" for name in self.objectives]

    @property
    def asha_rungs(self) -> list[float]:
        """The epochs at which ASHA compares trials (ascending; with Hyperband, its first
        bracket's, which hold every other bracket's); none with FIFO."""
        if self.scheduler.type in ("fifo", "pbt"):
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
        for parameter in self.parameters.values():
            grid *= parameter.grid_size
        return self.budget.num_samples * grid

    def searched(self, tune_config: dict[str, Any]) -> dict[str, Any]:
        """The searched parameters' values (and a grid repeat's seed) out of a trial's
        Tune config."""
        names = [*self.parameters, *(["seed"] if self.repeat_seeds else [])]
        return {name: self._on_step(name, tune_config[name])
                for name in names if name in tune_config}  # fmt: skip

    def with_overrides(self, **overrides: Any) -> SearchSpace:
        """A copy with command-line overrides applied (``None`` = not given), revalidated."""
        raw = self.model_dump(exclude_unset=True)  # what the file set: see _every_key_takes_effect
        for key, value in overrides.items():
            if value is not None:
                section, _, name = OVERRIDES.get(key, key).rpartition(".")
                (raw.setdefault(section, {}) if section else raw)[name] = value
        given = " ".join(f"--{key.replace('_', '-')} {_as_typed(value)}"
                         for key, value in overrides.items() if value is not None)  # fmt: skip
        source = f"space {self.name!r} with {given or 'no overrides'}"
        return SearchSpace.from_raw(raw, source=source)


def _as_typed(value: Any) -> str:
    """A flag's value as the user typed it (--confirm 3,2 arrives as a mapping)."""
    return ",".join(map(str, value.values())) if isinstance(value, dict) else str(value)

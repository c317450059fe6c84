"""One searched parameter: a small validated model per kind, in the YAML's own form.

A space file writes a parameter as a one-key mapping, ``lr: {loguniform: [1, 40]}``;
each kind here is a model whose single field is named after its kind, so the mapping
validates into it (picked by :data:`Parameter`'s discriminator on that key) and
``model_dump()`` gives the same mapping back, ints still ints. Each kind checks its own
list (shape, finite numbers, whole numbers, low < high, low > 0 on a log scale, q > 0)
and knows its Tune domain, its corners, its grid size, its largest value and how its
steps print; :func:`kinds_fit_options` checks a range samples its option's type. Nothing
here imports Ray: :meth:`~_Kind.to_tune` is handed the ``ray.tune`` module.
"""

from __future__ import annotations

import math
import typing
from decimal import Decimal
from types import ModuleType
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, field_validator
from pydantic_core import PydanticCustomError

from tune_lm.lm.config import TrainConfig
from tune_lm.lm.errors import short_repr

# The problems a space's checks find, as pydantic error types that SearchSpace.from_raw
# (tune_lm.tuning.space) turns into a message for the user:
SPACE_ERROR = "space"  # names its own field: "field 'derived' has a cycle, ..."
PARAMETER_ERROR = "space_parameter"  # one parameter's: "field 'parameters.NAME': MESSAGE"
PARAMETER_KIND_ERROR = "space_parameter_kind"  # "field 'parameters.NAME' MESSAGE"


def space_error(message: str) -> PydanticCustomError:
    return PydanticCustomError(SPACE_ERROR, message)  # no context: braces stay as written


def parameter_error(message: str) -> PydanticCustomError:
    return PydanticCustomError(PARAMETER_ERROR, message)


class _Kind(BaseModel):
    """A parameter of one kind; its single field, named after the kind, holds the list."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ClassVar[str]
    meaning: ClassVar[str]  # what it samples, with an example

    @property
    def values(self) -> list[Any]:
        return getattr(self, self.kind)

    @field_validator("*", mode="before")
    @classmethod
    def _checked(cls, values: Any) -> Any:
        """Checked before pydantic reads the list, which would turn 16.0 into 16."""
        cls._check(values)
        return values

    @classmethod
    def _check(cls, values: Any) -> None:
        if not isinstance(values, list) or not values:
            raise parameter_error(f"{cls.kind} needs a non-empty list, got {short_repr(values)}")

    def to_tune(self, tune: ModuleType) -> Any:
        """Tune's domain for this parameter; ``tune`` is the ``ray.tune`` module."""
        raise NotImplementedError

    def corners(self) -> list[Any]:
        """The values checked against TrainConfig before a search starts: every listed
        value, or both ends of a range."""
        return list(self.values)

    @property
    def grid_size(self) -> int:
        """Trials this parameter multiplies a grid search by."""
        return 1

    def largest(self) -> Any:
        return max(self.corners())

    def on_step(self, value: Any) -> Any:
        """A sampled value as the space writes it (see :class:`QUniform`)."""
        return value

    def refuses(self, value: Any) -> str | None:
        """Why ``value`` is not one this parameter can take (None: it is)."""
        if value not in self.values:
            return f"{short_repr(value)} is not one of {short_repr(self.values)}"
        return None


class _Listed(_Kind):
    """A kind that lists its values: each once (a repeat is a typo, or a silent weight:
    TPE would draw it twice as often, and a grid would train it twice)."""

    @classmethod
    def _check(cls, values: Any) -> None:
        super()._check(values)
        for index, value in enumerate(values):
            if any(type(value) is type(earlier) and value == earlier
                   for earlier in values[:index]):  # fmt: skip
                raise parameter_error(f"{cls.kind} lists {short_repr(value)} twice, in "
                                      f"{short_repr(values)}; list each value once")  # fmt: skip


class Choice(_Listed):
    kind = "choice"
    meaning = "one of the listed values, e.g. {choice: [LSTM, GRU]}"
    choice: list[Any]

    def to_tune(self, tune: ModuleType) -> Any:
        return tune.choice(self.choice)


class Grid(_Listed):
    kind = "grid"
    meaning = "every listed value, one trial each (searcher type: grid), e.g. {grid: [35, 50]}"
    grid: list[Any]

    def to_tune(self, tune: ModuleType) -> Any:
        return tune.grid_search(self.grid)

    @property
    def grid_size(self) -> int:
        return len(self.grid)


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _multiples_within(low: float, high: float, step: float) -> int:
    """How many multiples of ``step`` lie in [low, high] (a little slack for float steps)."""
    slack = 1e-9
    return max(0, math.floor(high / step + slack) - math.ceil(low / step - slack) + 1)


class _Range(_Kind):
    """[low, high] (or [low, high, q] with a step), finite numbers, low < high."""

    stepped: ClassVar[bool] = False  # a third number, q
    whole: ClassVar[bool] = False  # whole numbers only (16, not 16.0)
    log: ClassVar[bool] = False  # a log scale: low > 0
    whole_kind: ClassVar[str | None] = None  # the kind that samples whole numbers instead

    @classmethod
    def _check(cls, values: Any) -> None:
        super()._check(values)
        kind = cls.kind
        if len(values) != (3 if cls.stepped else 2) or not all(map(_finite_number, values)):
            shape = "[low, high, q]" if cls.stepped else "[low, high]"
            raise parameter_error(f"{kind} needs {shape} finite numbers, got {short_repr(values)}")
        if cls.whole and not all(isinstance(v, int) for v in values):
            raise parameter_error(f"{kind} needs whole numbers (16, not 16.0), got {values!r}")
        if values[0] >= values[1]:
            raise parameter_error(f"low must be below high, got {values!r}")
        if cls.log and values[0] <= 0:
            raise parameter_error(f"{kind} needs low > 0 (a log scale), got {values!r}")
        if cls.stepped and values[2] <= 0:
            raise parameter_error(f"q must be positive, got {values!r}")
        if cls.stepped and _multiples_within(*values) < 2:
            raise parameter_error(
                f"{kind} {values!r} can give at most one value: Tune rounds to multiples of "
                f"q ({values[2]!r}), and [{values[0]!r}, {values[1]!r}] holds fewer than two "
                "of them. Use a smaller q, a wider range, or a fixed value")


    @property
    def low(self) -> int | float:
        return self.values[0]

    @property
    def high(self) -> int | float:
        return self.values[1]

    def corners(self) -> list[Any]:
        return [self.low, self.high]

    def refuses(self, value: Any) -> str | None:
        if not _finite_number(value) or (self.whole and not isinstance(value, int)):
            return f"{short_repr(value)} is not a {'whole ' if self.whole else ''}number"
        if not self.low <= value <= self.high:
            return f"{value:g} is outside [{self.low:g}, {self.high:g}]"
        return None

    def as_whole(self) -> str:
        """The same range for a whole-number option, e.g. ``{int: [5, 32]}`` for
        ``{uniform: [4.5, 32.5]}`` (for a float kind only)."""
        bounds = [math.ceil(self.low), math.floor(self.high)]
        if self.stepped:
            bounds.append(max(1, round(self.values[2])))
        return f"{{{self.whole_kind}: [{', '.join(map(str, bounds))}]}}"


class Uniform(_Range):
    kind = "uniform"
    meaning = "a float in [low, high], e.g. {uniform: [0.0, 0.5]}"
    whole_kind = "int"
    uniform: list[int | float]

    def to_tune(self, tune: ModuleType) -> Any:
        return tune.uniform(self.low, self.high)


class LogUniform(_Range):
    kind = "loguniform"
    meaning = "a float in [low, high] on a log scale, low > 0, e.g. {loguniform: [1, 40]}"
    log = True
    whole_kind = "logint"
    loguniform: list[int | float]

    def to_tune(self, tune: ModuleType) -> Any:
        return tune.loguniform(self.low, self.high)


class Int(_Range):
    kind = "int"
    meaning = "an integer in [low, high], both included, e.g. {int: [1, 3]}"
    whole = True
    int: list[int]

    def to_tune(self, tune: ModuleType) -> Any:
        return tune.randint(self.low, self.high + 1)  # Tune's upper bound is exclusive


class LogInt(_Range):
    kind = "logint"
    meaning = "an integer in [low, high] on a log scale, e.g. {logint: [64, 1024]}"
    whole = True
    log = True
    logint: list[int]

    def to_tune(self, tune: ModuleType) -> Any:
        return tune.lograndint(self.low, self.high + 1)  # exclusive, as randint


class QUniform(_Range):
    kind = "quniform"
    meaning = "a float in [low, high] in steps of q, e.g. {quniform: [0.0, 0.5, 0.1]}"
    stepped = True
    whole_kind = "qint"
    quniform: list[int | float]

    def to_tune(self, tune: ModuleType) -> Any:
        return tune.quniform(self.low, self.high, self.quniform[2])

    def on_step(self, value: Any) -> Any:
        """0.3 as its step writes it, not the sampler's 0.30000000000000004 (which would
        show in configs, MLflow params and tables)."""
        if not isinstance(value, float):
            return value
        step = Decimal(repr(float(self.quniform[2])))
        return round(value, max(-int(step.as_tuple().exponent), 0))


class QInt(_Range):
    kind = "qint"
    meaning = "an integer in [low, high] in steps of q, e.g. {qint: [100, 800, 100]}"
    whole = True
    stepped = True
    qint: list[int]

    def to_tune(self, tune: ModuleType) -> Any:
        return tune.qrandint(self.low, self.high, self.qint[2])  # inclusive upper bound


KINDS: dict[str, type[_Kind]] = {
    model.kind: model for model in (Choice, Grid, Uniform, LogUniform, Int, LogInt, QUniform, QInt)
}
PARAMETER_KINDS = {kind: model.meaning for kind, model in KINDS.items()}  # kind: what it samples


def _kind_of(raw: Any) -> str | None:
    """The kind a parameter names: its mapping's single key (None: not exactly one kind)."""
    if isinstance(raw, _Kind):
        return raw.kind
    if isinstance(raw, dict) and len(raw) == 1:
        key = next(iter(raw))
        return key if key in KINDS else None
    return None


_ONE_KIND = "must have exactly one of these keys — " + "; ".join(
    f"{kind}: {meaning}" for kind, meaning in PARAMETER_KINDS.items()
)
Parameter = Annotated[
    Annotated[Choice, Tag("choice")]
    | Annotated[Grid, Tag("grid")]
    | Annotated[Uniform, Tag("uniform")]
    | Annotated[LogUniform, Tag("loguniform")]
    | Annotated[Int, Tag("int")]
    | Annotated[LogInt, Tag("logint")]
    | Annotated[QUniform, Tag("quniform")]
    | Annotated[QInt, Tag("qint")],
    Discriminator(_kind_of, custom_error_type=PARAMETER_KIND_ERROR, custom_error_message=_ONE_KIND),
]


def option_type(name: str) -> type | None:
    """int or float for a numeric training option (``int | None`` counts as int), else None."""
    annotation = TrainConfig.model_fields[name].annotation
    types = {arg for arg in typing.get_args(annotation) or (annotation,) if arg is not type(None)}
    return next(iter(types)) if types in ({int}, {float}) else None


def kinds_fit_options(parameters: dict[str, _Kind]) -> dict[str, _Kind]:
    """A numeric range must sample numbers of its option's type: uniform over nhid would
    give 137.4 hidden units, and every trial would fail when it starts."""
    for name, parameter in parameters.items():
        range_fits_option(name, parameter)
    return parameters


def range_fits_option(name: str, parameter: _Kind, source: str | None = None) -> None:
    """``parameter``'s values can be option ``name``'s (a range of the right kind of
    number); ``source``: the parameter's name when ``name`` takes its values through
    ``derived`` (every trial would fail when it starts, after Ray and MLflow had)."""
    if parameter.kind in ("choice", "grid"):
        return  # each listed value is checked against the option (the space's corners)
    field = f"derived.{name}" if source else f"parameters.{name}"
    through = f" (it takes the values of parameters.{source})" if source else ""
    kind = option_type(name)
    if kind is None:
        annotation = TrainConfig.model_fields[name].annotation
        listed = typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()
        example = f"{{choice: [{', '.join(map(str, listed))}]}}" if listed else (
            "{choice: [...]}")  # fmt: skip
        fix = "search it in parameters with its values listed" if source else (
            "list its values instead")  # fmt: skip
        raise space_error(
            f"field '{field}': {name} is not a number, so a {parameter.kind} range cannot "
            f"sample it{through}; {fix}, e.g. {example}"
        )
    if kind is int and parameter.whole_kind is not None:
        low, high = parameter.low, parameter.high
        fix = (f"derive {name} from a whole-number parameter, or make {source} "
               f"{parameter.as_whole()}" if source else
               f"use {parameter.whole_kind}, e.g. {parameter.as_whole()}, or list values "
               "with choice")  # fmt: skip
        raise space_error(
            f"field '{field}': {name} is a whole number, but {parameter.kind} samples floats "
            f"(e.g. {(low + high) / 2:g}){through}; {fix}"
        )

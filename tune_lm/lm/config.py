"""The one validated configuration of a training run.

Every way of starting a run — the `python -m tune_lm.train` flags, a YAML search space,
Tune's `config` dict — passes through :class:`TrainConfig`. Unknown keys, wrong types
and impossible combinations fail here, with the field named and the fix suggested.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tune_lm.lm.errors import ConfigError, short_repr

CellType = Literal["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]
OptimizerName = Literal["sgd", "adamw"]
DecoderName = Literal["full", "adaptive"]
Precision = Literal["fp32", "bf16"]

_MAX_PROBLEMS_DESCRIBED = 5
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


# Fields a population-based schedule (PBT) may change when a trial continues another's
# training state (tune_lm.lm.train_state.adopt): neither changes the weights' shapes.
PERTURBABLE = ("lr", "dropout")

def numbers_only(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """A field that holds a number takes no true/false and no text: pydantic would read
    ``true`` as 1 and ``"2"`` as 2, so that ``epochs: true`` ran one epoch. Used as a
    ``field_validator("*", mode="before")`` by every validated model."""
    annotation = model.model_fields[info.field_name].annotation
    kinds = {annotation, *typing.get_args(annotation)}
    if isinstance(value, bool | str) and kinds & {int, float} and not kinds & {bool, str}:
        raise ValueError("should be a number, not true/false" if isinstance(value, bool)
                         else "should be a number, not text: write it without quotes")
    return value


MAX_RATE = 1e18  # lr and weight_decay: their product stays within float32

class TrainConfig(BaseModel):
    """Hyper-parameters of one training run (defaults: the PyTorch word-LM example)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    _numbers_only = field_validator("*", mode="before")(classmethod(numbers_only))

    # Corpus
    data: str = Field("wikitext-2", min_length=1,
                      description="corpus: wikitext-2, ptb, synthetic, or a folder")  # fmt: skip
    # Model
    model: CellType = Field("LSTM", description="recurrent cell")
    emsize: int = Field(200, ge=1, description="size of word embeddings")
    nhid: int = Field(200, ge=1, description="number of hidden units per layer")
    nlayers: int = Field(2, ge=1, description="number of recurrent layers")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="dropout (0 = none)")
    tied: bool = Field(False, description="tie embedding and decoder weights (nhid == emsize)")
    decoder: DecoderName = Field(
        "full", description="full softmax, or adaptive softmax (much faster on big vocabularies)"
    )
    adaptive_cutoffs: list[int] | None = Field(
        None, description="adaptive softmax cluster cutoffs by frequency rank (None = automatic)"
    )
    # Optimisation
    optimizer: OptimizerName = Field("sgd", description="optimizer")
    # torch applies lr (and lr x weight_decay) in float32, which overflows beyond ~3.4e38
    lr: float = Field(20.0, gt=0.0, le=MAX_RATE, description="initial learning rate")
    lr_decay: float = Field(
        4.0, ge=1.0, description="divide lr by this when validation loss does not improve"
    )
    weight_decay: float = Field(0.0, ge=0.0, le=MAX_RATE, description="weight decay (adamw)")
    clip: float = Field(0.25, ge=0.0, description="gradient-norm clipping (0 = off)")
    epochs: int = Field(40, ge=1, description="upper epoch limit")
    batch_size: int = Field(20, ge=1, description="training batch size")
    bptt: int = Field(35, ge=1, description="truncated-BPTT window length")
    eval_batch_size: int = Field(10, ge=1, description="evaluation batch size")
    max_tokens_per_epoch: int | None = Field(
        None, ge=1, description="cap on training tokens per epoch (quick runs)"
    )
    eval_every_tokens: int | None = Field(
        None, ge=1, description="also evaluate every N training tokens within an epoch"
    )
    # Run
    seed: int = Field(1111, ge=0, lt=2**63, description="random seed")  # torch takes < 2**64
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's)")
    precision: Precision = Field(
        "fp32", description="bf16: training matmuls autocast to bfloat16 (the RNNs too on "
        "CPUs with AVX512-BF16 or AMX; on CUDA they stay fp32, as torch's autocast would make "
        "cuDNN's fp16), weights and evaluation stay fp32",
    )  # fmt: skip
    cuda_graph: bool = Field(
        False, description="on CUDA, replay each training step (forward, backward, clipping, "
        "update) as one captured CUDA graph: no per-kernel launch cost (full softmax only; "
        "a CPU runs the same step without a graph)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        if self.tied and self.nhid != self.emsize:
            raise ValueError(
                f"tied=True needs nhid == emsize (got emsize={self.emsize}, nhid={self.nhid}): "
                f"the decoder reuses the embedding matrix. Set nhid to {self.emsize} "
                "or turn tied off"
            )
        if self.tied and self.decoder == "adaptive":
            raise ValueError(
                "tied=True needs decoder='full': the adaptive softmax has no single "
                "output matrix to share with the embedding. Use one or the other"
            )
        if self.cuda_graph and self.decoder == "adaptive":
            raise ValueError(
                "cuda_graph=True needs decoder='full': the adaptive softmax picks each "
                "cluster's words with data-dependent shapes, which a CUDA graph cannot replay. "
                "Turn cuda_graph off or use the full softmax"
            )
        cutoffs = self.adaptive_cutoffs
        if cutoffs is not None and (
            not cutoffs
            or cutoffs[0] < 1
            or any(a >= b for a, b in zip(cutoffs, cutoffs[1:], strict=False))
        ):
            raise ValueError(
                f"adaptive_cutoffs={cutoffs} must be increasing positive frequency ranks, "
                "e.g. [1000, 5000, 20000]"
            )
        return self

    @field_validator("device")
    @classmethod
    def _check_device(cls, device: str) -> str:  # a field's own check names its flag
        if not _DEVICE_PATTERN.match(device):
            raise ValueError("must be auto, cpu, cuda, cuda:N (N a GPU's index) or mps")
        return device

    @classmethod
    def from_dict(
        cls,
        values: Mapping[str, Any],
        *,
        source: str = "config",
        label: Callable[[str], str] | None = None,
    ) -> TrainConfig:
        """Validate ``values`` into a config; errors name ``source`` and the field
        (as ``label(field)`` when given, e.g. the command-line flag)."""
        unknown = [key for key in values if key not in cls.model_fields]
        if unknown:
            raise ConfigError(
                f"{source}: unknown field(s) {', '.join(map(repr, unknown))}. "
                + " ".join(_suggestion(key) for key in unknown)
                + f" Valid fields: {', '.join(cls.model_fields)}."
            )
        try:
            return cls(**values)
        except ValidationError as error:
            raise ConfigError(f"{source}: {describe_validation_error(error, label)}") from None

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes`` applied."""
        return TrainConfig.from_dict({**self.model_dump(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{field: value}`` of JSON/`weights_only`-safe primitives."""
        return self.model_dump()


def closest_name(key: str, names: Iterable[str]) -> str | None:
    """The name a mistyped ``key`` most likely meant: the same name in another case or
    with dashes ('LR', 'Grace-Period'), else the closest spelling; None if none is close."""
    by_folded = {name.lower(): name for name in names}
    folded = key.strip().lower().replace("-", "_")
    if folded in by_folded:
        return by_folded[folded]
    close = difflib.get_close_matches(folded, list(by_folded), n=1, cutoff=0.6)
    return by_folded[close[0]] if close else None


def _suggestion(key: str) -> str:
    close = closest_name(key, TrainConfig.model_fields)
    return f"Did you mean {close!r} instead of {key!r}?" if close else ""


def describe_validation_error(
    error: ValidationError, label: Callable[[str], str] | None = None
) -> str:
    """One readable sentence per problem: ``field 'x': message (got value)``, or
    ``LABEL: message (got value)`` with ``label`` (e.g. ``--x`` for a flag)."""
    parts = []
    problems = error.errors()
    for problem in problems[:_MAX_PROBLEMS_DESCRIBED]:
        location = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        where = f"field {location!r}: " if location else ""
        if location and label is not None:
            where = f"{label(str(problem['loc'][0]))}: "
        got = f" (got {short_repr(problem['input'])})" if location and "input" in problem else ""
        parts.append(f"{where}{message}{got}.")
    if len(problems) > _MAX_PROBLEMS_DESCRIBED:  # e.g. a list of 10,000 wrong values
        parts.append(f"({len(problems) - _MAX_PROBLEMS_DESCRIBED} more problems like these.)")
    return " ".join(parts)

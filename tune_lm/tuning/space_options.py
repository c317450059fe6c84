"""Which training options a space's sections may name: ``fixed``, ``parameters`` and
``derived`` take TrainConfig's fields (a misspelt one gets the closest), except those a
trial takes elsewhere (``epochs``, every trial's length, only in ``fixed``; ``device`` and
``threads`` from its Ray resources), and ``derived`` chains end somewhere."""

from __future__ import annotations

from typing import Any

from pydantic import BeforeValidator

from tune_lm.lm.config import TrainConfig, closest_name
from tune_lm.tuning.params import space_error


def _unknown_option(section: str, name: str) -> Exception:
    close = closest_name(name, TrainConfig.model_fields)
    hint = f" Did you mean {close!r}?" if close else ""
    return space_error(
        f"field '{section}.{name}' is not a training option.{hint} "
        f"Training options: {', '.join(TrainConfig.model_fields)}"
    )


def known_options(section: str) -> BeforeValidator:
    """Names first (before their values are read): a misspelt name is the likelier mistake."""

    def check(values: Any) -> Any:
        for name in values if isinstance(values, dict) else ():
            if isinstance(name, str) and name not in TrainConfig.model_fields:
                raise _unknown_option(section, name)
            if name == "epochs" and section != "fixed":
                raise space_error(
                    f"field '{section}.epochs': epochs is every trial's length, which ASHA, "
                    "the searcher's rungs and the compute budget share, so it is set once, in "
                    "'fixed: {epochs: N}'. Each trial's validation perplexity is recorded at "
                    "every epoch; to compare epoch counts, read those curves, or have a grid "
                    "score test at earlier epochs too ('test_at_epochs: [20]')")
            if name in SET_BY_RESOURCES:
                raise space_error(
                    f"field '{section}.{name}': a trial's {name} is what Ray gives it "
                    f"(a value here would be ignored); set {SET_BY_RESOURCES[name]} instead")
        return values

    return BeforeValidator(check)


# Training options each trial takes from its Ray resources (tuning/trainable.py).
SET_BY_RESOURCES = {"device": "resources.gpus_per_trial (a trial with a GPU trains on it)",
                    "threads": "resources.cpus_per_trial (torch uses that many threads)"}


def derived_known_and_acyclic(derived: dict[str, str]) -> dict[str, str]:
    """``derived`` may chain (nhid: emsize, emsize: bptt) but not loop back on itself."""
    for name, other in derived.items():
        if other not in TrainConfig.model_fields:
            raise _unknown_option(f"derived.{name}", other)
    for start in derived:
        path = [start]
        while path[-1] in derived:
            following = derived[path[-1]]
            if following in path:
                cycle = " -> ".join([*path[path.index(following) :], following])
                raise space_error(
                    f"field 'derived' has a cycle, {cycle}: each takes its value from the "
                    "next, so none has one. End the chain at an option set in 'fixed' or "
                    "'parameters' (or left at its default), e.g. 'derived: {nhid: emsize}'"
                )
            path.append(following)
    return derived

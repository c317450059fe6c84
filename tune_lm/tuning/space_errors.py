"""A space file's mistake as one paragraph: pydantic's errors turned into the field, what
is wrong with it and the fix (a section that is not a mapping gets an example of one, a
misspelled key the closest known key)."""

from __future__ import annotations

import difflib

from pydantic import ValidationError

from tune_lm.lm.config import closest_name, describe_validation_error
from tune_lm.lm.errors import short_repr
from tune_lm.tuning.params import (
    PARAMETER_ERROR,
    PARAMETER_KIND_ERROR,
    PARAMETER_KINDS,
    SPACE_ERROR,
)

SECTION_EXAMPLES = {  # a space's sections that hold settings, each as a one-line example
    "searcher": "{type: optuna, sampler: tpe}", "scheduler": "{type: asha, grace_period: 1}",
    "budget": "{num_samples: 16, max_concurrent: 2}", "resources": "{cpus_per_trial: 1}",
    "fixed": "{epochs: 4, nlayers: 2}", "parameters": "{lr: {loguniform: [1.0, 40.0]}}",
    "derived": "{nhid: emsize}", "confirm": "{top_k: 3, seeds: 2}",
}


def explain(error: ValidationError, known: dict[str, set[str]]) -> str:
    """pydantic's error as one paragraph: a type or limit error first (with the closest
    key of the same section in ``known`` to a misspelled one), else the first problem a
    check of the space found."""
    problems = error.errors()
    ours = {SPACE_ERROR, PARAMETER_ERROR, PARAMETER_KIND_ERROR}
    plain = [problem for problem in problems if problem["type"] not in ours]
    if not plain:
        problem = problems[0]
        if problem["type"] == SPACE_ERROR:
            return problem["msg"]
        where = f"field 'parameters.{problem['loc'][1]}'"  # loc: parameters, NAME, ...
        if problem["type"] == PARAMETER_KIND_ERROR:
            return f"{where} {_unknown_kind(problem.get('input')) or problem['msg']}"
        return f"{where}: {problem['msg']}"
    if len(plain) < len(problems):  # describe only the plain ones, as before the checks ran
        keys = ("type", "loc", "input", "ctx")
        details = [{key: p[key] for key in keys if key in p} for p in plain]
        error = ValidationError.from_exception_data(error.title, details)  # type: ignore[arg-type]
    for problem in plain:  # a section that is not a mapping: what one looks like
        field = str(problem["loc"][0]) if len(problem["loc"]) == 1 else ""
        if field in SECTION_EXAMPLES and problem["type"] in ("model_type", "dict_type"):
            empty = (f"; an empty '{field}:' line is null, not an empty section: leave it out "
                     "to keep the defaults") if problem.get("input") is None else ""  # fmt: skip
            return (f"field '{field}' must be a mapping of its settings, e.g. '{field}: "
                    f"{SECTION_EXAMPLES[field]}' (got {short_repr(problem.get('input'))})"
                    f"{empty}")  # fmt: skip
    hints = []
    for problem in plain:
        read_as = _YAML_READ_AS.get(type(problem.get("input")).__name__)
        if problem["type"] == "string_type" and read_as:
            hints.append(f"YAML read the value as {read_as}: to mean the text, put it in "
                         f"quotes (e.g. {problem['loc'][-1]}: '{_as_written(problem['input'])}').")
        if problem["type"] == "extra_forbidden":
            key = str(problem["loc"][-1])
            section = str(problem["loc"][0]) if len(problem["loc"]) > 1 else ""
            candidates = known.get(section, set().union(*known.values()))
            close = _closest(key, candidates)
            if close:
                hints.append(f"Did you mean {close[0]!r} instead of {key!r}?")
    return " ".join([describe_validation_error(error), *hints])


SYNONYMS = {"trials": "num_samples", "n_trials": "num_samples", "samples": "num_samples",
            "concurrency": "max_concurrent", "gpus": "gpus_per_trial",
            "cpus": "cpus_per_trial"}  # fmt: skip


def _closest(key: str, candidates: set[str]) -> list[str]:
    """The known key a misspelled one most likely meant: a synonym (trials: num_samples),
    a key it begins or is a word of (grace: grace_period), else the closest spelling."""
    lowered = key.lower()
    if SYNONYMS.get(lowered) in candidates:
        return [SYNONYMS[lowered]]
    words = sorted(c for c in candidates
                   if c.startswith(lowered) or lowered in c.split("_"))  # fmt: skip
    if words:
        return words[:1]
    close = closest_name(key, sorted(candidates))
    return [close] if close else []


_YAML_READ_AS = {"bool": "true/false (yes, no, on and off are too)", "int": "a number",
                 "float": "a number", "date": "a date", "datetime": "a date and time"}  # fmt: skip


def _as_written(value: object) -> str:
    return "no" if isinstance(value, bool) else str(value)  # yes/no/on/off: as written


KIND_SYNONYMS = {"randint": "int", "log_uniform": "loguniform", "lograndint": "logint",
                 "log_int": "logint", "qrandint": "qint", "categorical": "choice",
                 "choices": "choice", "grid_search": "grid", "randn": "uniform"}  # fmt: skip


def _unknown_kind(raw: object) -> str | None:
    """A parameter written with one key that is no kind (``{log_uniform: [1, 40]}``): that
    key named, with the kind it most likely meant (None: not that mistake)."""
    if not isinstance(raw, dict) or len(raw) != 1:
        return None
    key = str(next(iter(raw)))
    meant = KIND_SYNONYMS.get(key.lower()) or next(
        iter(difflib.get_close_matches(key.lower(), list(PARAMETER_KINDS), n=1, cutoff=0.6)),
        None)  # fmt: skip
    hint = f" Did you mean {meant!r}: {PARAMETER_KINDS[meant]}?" if meant else ""
    return (f"has {key!r}, which is not a parameter kind.{hint} The kinds: "
            f"{', '.join(PARAMETER_KINDS)}")

"""A space file's mistake as one paragraph: pydantic's errors turned into the field, what
is wrong with it and the fix (a section that is not a mapping gets an example of one, a
misspelled key the closest known key)."""

from __future__ import annotations

import difflib

from pydantic import ValidationError

from tune_lm.lm.config import describe_validation_error
from tune_lm.lm.errors import short_repr
from tune_lm.tuning.params import PARAMETER_ERROR, PARAMETER_KIND_ERROR, SPACE_ERROR

SECTION_EXAMPLES = {  # a space's sections that hold settings, each as a one-line example
    "searcher": "{type: optuna, sampler: tpe}", "scheduler": "{type: asha, grace_period: 1}",
    "budget": "{num_samples: 16, max_concurrent: 2}", "resources": "{cpus_per_trial: 1}",
    "fixed": "{epochs: 4, nlayers: 2}", "parameters": "{lr: {loguniform: [1.0, 40.0]}}",
    "derived": "{nhid: emsize}", "confirm": "{top_k: 3, seeds: 2}",
}


def explain(error: ValidationError, known: set[str]) -> str:
    """pydantic's error as one paragraph: a type or limit error first (with the closest
    of the ``known`` keys to a misspelled one), else the first problem a check of the
    space found."""
    problems = error.errors()
    ours = {SPACE_ERROR, PARAMETER_ERROR, PARAMETER_KIND_ERROR}
    plain = [problem for problem in problems if problem["type"] not in ours]
    if not plain:
        problem = problems[0]
        if problem["type"] == SPACE_ERROR:
            return problem["msg"]
        where = f"field 'parameters.{problem['loc'][1]}'"  # loc: parameters, NAME, ...
        separator = " " if problem["type"] == PARAMETER_KIND_ERROR else ": "
        return f"{where}{separator}{problem['msg']}"
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
        if problem["type"] == "extra_forbidden":
            key = str(problem["loc"][-1])
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            if close:
                hints.append(f"Did you mean {close[0]!r} instead of {key!r}?")
    return " ".join([describe_validation_error(error), *hints])

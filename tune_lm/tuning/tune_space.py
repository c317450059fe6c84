"""Tune's form of a search space: the one place the space format meets Ray.

Each parameter kind (:mod:`tune_lm.tuning.params`) makes its own domain from the
``ray.tune`` module handed to it, so the space itself never imports Ray.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from tune_lm.tuning.space import SearchSpace


def to_tune_space(space: SearchSpace) -> dict[str, Any]:
    """Tune's ``param_space``: one Tune domain per searched parameter."""
    return {name: parameter.to_tune(tune) for name, parameter in space.parameters.items()}

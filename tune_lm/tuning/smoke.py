"""``search --smoke``: the same space shrunk to seconds, under a name of its own, and the
flags it replaces (so that one given with it is refused, not dropped)."""

from __future__ import annotations

from tune_lm.tuning.space import SearchSpace

SMOKE_SETS = {"--data": "data", "--num-samples": "num_samples", "--max-epochs": "max_epochs",
              "--time-budget": "time_budget"}  # fmt: skip


def smoke_space(space: SearchSpace, *, gpus: bool = True) -> SearchSpace:
    """The same space shrunk to seconds: synthetic corpus, 2 short epochs, 2 samples of
    one CPU each (and no GPU unless ``gpus``), under its own name (``NAME-smoke``), so it
    never takes the real search's experiment, MLflow experiment or registered model."""
    raw = space.model_dump()
    name = space.name or "search"
    raw["name"] = name if name.endswith("-smoke") else f"{name}-smoke"
    raw["data"] = "synthetic"
    raw["resources"].update(cpus_per_trial=1)
    if not gpus:
        raw["resources"].update(gpus_per_trial=0)
    raw["fixed"].update(epochs=2, max_tokens_per_epoch=2000)
    raw["budget"].update(num_samples=min(2, raw["budget"]["num_samples"]), time_budget=None)
    if raw["scheduler"]["type"] != "fifo":
        raw["scheduler"]["grace_period"] = 1
    raw["test_at_epochs"] = [1] if raw["test_at_epochs"] else []
    return SearchSpace(**raw)

"""How many trials the connected Ray has room for, and the plan line that says so, on a
real local Ray of 2 CPUs."""

import pytest

from tune_lm.tuning.space import SearchSpace


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def space(**overrides):
    raw = {"name": "planned", "seed": 3, "fixed": {"epochs": 9, "nlayers": 1},
           "budget": {"num_samples": 12, "max_concurrent": 2},
           "resources": {"cpus_per_trial": 0.5},
           "parameters": {"lr": {"loguniform": [1, 40]}}}  # fmt: skip
    raw.update(overrides)
    return SearchSpace.from_raw(raw, "test")


def test_the_plan_says_how_many_trials_this_ray_has_room_for(local_ray):
    """Whole trials per node (2 CPUs here): 1.5 CPUs a trial leaves room for one, and the
    plan line says so rather than repeating max_concurrent."""
    from tune_lm.tuning.capacity import trials_at_once
    from tune_lm.tuning.summary import describe_plan

    def sized(cpus, gpus=0.0, concurrent=2):
        return space(resources={"cpus_per_trial": cpus, "gpus_per_trial": gpus},
                     budget={"num_samples": 4, "max_concurrent": concurrent})  # fmt: skip

    assert [trials_at_once(sized(c)) for c in (0.5, 1, 1.5, 2, 3)] == [4, 2, 1, 1, 0]
    assert trials_at_once(sized(1, gpus=1)) == 0  # no GPU on this Ray
    assert describe_plan(sized(1.5), fits=1).endswith(
        "1 at a time, not 2: this Ray has room for 1 trial of 1.5 CPU at once "
        "(max_concurrent 2)")
    assert describe_plan(sized(1), fits=2).endswith(", 2 at a time")
    assert describe_plan(sized(1, concurrent=None), fits=2).endswith(
        ", 2 at a time (this Ray has room for 2 trials of 1 CPU at once)")
    assert describe_plan(sized(0.5, concurrent=None), fits=4).endswith(", all 4 at once")
    assert "at a time" not in describe_plan(sized(1, concurrent=None))  # not known
    one = space(budget={"num_samples": 1, "max_concurrent": 8})  # fewer trials than slots
    assert describe_plan(one, fits=2).startswith("1 trial of 9 epochs")
    assert "at a time" not in describe_plan(one, fits=2)
    assert describe_plan(sized(1, concurrent=8), fits=4).endswith(", all 4 at once")

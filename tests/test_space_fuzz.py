"""The space loader on arbitrary input: a SearchSpace or a TuneLMError, never a crash;
what loads is a space its own dump rebuilds.

Three sources of input: random text, random nested data dumped as YAML, and random
mutations (dropped, renamed and retyped keys) of the shipped quick.yaml.
"""

from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tune_lm.lm.config import TrainConfig
from tune_lm.lm.errors import TuneLMError
from tune_lm.tuning.space import PARAMETER_KINDS, SearchSpace
from tune_lm.tuning.space_yaml import SHIPPED_SPACES, load_space

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUICK = yaml.safe_load((SHIPPED_SPACES / "quick.yaml").read_text())

# Keys the loader knows, so that random data reaches past the first unknown-key check.
KNOWN_KEYS = sorted(
    set(SearchSpace.model_fields)
    | set(TrainConfig.model_fields)
    | set(PARAMETER_KINDS)
    | {"type", "sampler", "grace_period", "reduction_factor", "num_samples", "time_budget",
       "max_concurrent", "cpus_per_trial", "gpus_per_trial", "n_startup_trials"}
)  # fmt: skip
YAML_CHARS = "abcdefxyz019.-_ :,[]{}!&*?|>'\"#%@`\n\t\\/"

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["LSTM", "tpe", "grid", "asha", "90s", "val_ppl", "emsize", "1h30m"])
)
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=8) | st.integers(-3, 3)
data = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "space.yaml"


def load(space_file, text: str | bytes) -> None:
    """Loads ``text`` as a space file: anything but a SearchSpace or our error fails, and a
    space that loads is a valid one, which its dump builds again."""
    if isinstance(text, bytes):
        space_file.write_bytes(text)
    else:
        space_file.write_text(text, encoding="utf-8")
    try:
        space = load_space(str(space_file))
    except TuneLMError:
        return
    assert isinstance(space, SearchSpace)
    assert SearchSpace(**space.model_dump()) == space


@FUZZ
@given(text=st.text(alphabet=YAML_CHARS, max_size=80) | st.text(max_size=80))
def test_random_text(space_file, text):
    load(space_file, text)


@FUZZ
@given(raw=st.binary(max_size=60))
def test_random_bytes(space_file, raw):
    load(space_file, raw)


@FUZZ
@given(value=data)
def test_random_data(space_file, value):
    load(space_file, yaml.safe_dump(value, allow_unicode=True))


def _paths(node, prefix=()):
    """Every (path to a value) in nested dicts and lists."""
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _paths(child, (*prefix, index))


@st.composite
def mutated_quick(draw):
    """quick.yaml with 1-4 keys dropped, renamed, or given a random value."""
    space = copy.deepcopy(QUICK)
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(space) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = space
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        action = draw(st.sampled_from(["drop", "rename", "replace"]))
        if action == "drop":
            del parent[last]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(keys.filter(lambda k, p=parent: k not in p))] = parent.pop(last)
        else:
            parent[last] = draw(data)
    return space


@FUZZ
@given(space=mutated_quick())
def test_mutated_shipped_space(space_file, space):
    load(space_file, yaml.safe_dump(space, allow_unicode=True, sort_keys=False))


@pytest.mark.parametrize(
    "text",
    [
        "[" * 3000 + "]" * 3000,  # deeper than PyYAML's recursion
        "name: 2020-13-45\n",  # PyYAML raises ValueError building this date
        "seed: !!int 12a\n",
        "name: !!bool maybe\n",
        "objectives: []\n",  # once an IndexError
        "fixed: {epochs: null}\n",  # once a TypeError in the grace-period check
        "fixed: {lr: .inf}\n",
        "parameters: {lr: {uniform: [.nan, 1.0]}}\n",
        "budget: {time_budget: '" + " " * 3000 + "x'}\n",  # once minutes of backtracking
    ],
)
def test_hard_cases_fail_cleanly(space_file, text):
    with pytest.raises(TuneLMError):
        load_space(str(_write(space_file, text)))


def _write(path, text):
    path.write_text(text)
    return path

"""Reading a space file's YAML (tuning/space_yaml.py): bounded against alias bombs,
repeated keys refused at any depth, merge keys and aliases kept, YAML 1.2's numbers."""

import textwrap
import time

import pytest

from tune_lm.tuning.space import SpaceError, parse_duration
from tune_lm.tuning.space_yaml import load_space


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_an_alias_bomb_fails_fast_without_echoing(tmp_path):
    levels = ["a: &a [" + ", ".join(["lol"] * 9) + "]"]
    for old, new in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{new}: &{new} [{', '.join([f'*{old}'] * 9)}]")  # 9**9 once expanded
    path = write(tmp_path, "\n".join(levels) + "\n")
    started = time.perf_counter()
    with pytest.raises(SpaceError, match="aliases") as error:
        load_space(str(path))
    # expanded, 9**9 strings would take minutes and gigabytes; the bound only has to tell
    # that apart from a refusal, on a loaded 2-core CI machine (0.54 s was seen there)
    assert time.perf_counter() - started < 10
    assert "lol" not in str(error.value) and len(str(error.value)) < 500


def test_merge_keys_and_plain_aliases_are_not_duplicates(tmp_path):
    text = """\
        fixed: &base {epochs: 2, nlayers: 1}
        parameters:
          lr: {loguniform: [1.0, 20.0]}
          emsize: {choice: &sizes [16, 32]}
          nhid: {choice: *sizes}
        derived: {}
        budget: {<<: {num_samples: 3}, max_concurrent: 1}
    """
    space = load_space(str(write(tmp_path, text)))
    assert space.parameters["nhid"].model_dump() == {"choice": [16, 32]}
    assert space.budget.num_samples == 3


def test_numbers_read_as_yaml_1_2_writes_them(tmp_path):
    """PyYAML reads YAML 1.1: 1e-3 was text ("should be a number, not text: write it
    without quotes", though nothing was quoted), 1:30 was 90 and 035 was 29."""
    text = """\
        fixed: {epochs: 035, max_tokens_per_epoch: 2e3, nlayers: 1}
        parameters:
          lr: {loguniform: [1e-3, 1E1]}
          dropout: {choice: [0, .5]}
        budget: {time_budget: 90}
    """
    space = load_space(str(write(tmp_path, text)))
    assert space.fixed["epochs"] == 35 and space.fixed["max_tokens_per_epoch"] == 2000
    assert space.parameters["lr"].values == [0.001, 10.0]
    assert space.parameters["dropout"].values == [0, 0.5]
    assert parse_duration(space.budget.time_budget) == 90  # seconds, as --time-budget 90
    with pytest.raises(SpaceError, match="1:30"):  # text now, refused as a duration
        load_space(str(write(tmp_path, "parameters: {lr: {uniform: [1, 2]}}\n"
                                       "budget: {time_budget: 1:30}\n")))  # fmt: skip


@pytest.mark.parametrize("text,key", [
    ("seed: 1\nseed: 2\nparameters: {lr: {uniform: [1, 2]}}\n", "'seed'"),
    ("parameters: {lr: {uniform: [1, 2]}, lr: {uniform: [2, 3]}}\n", "'parameters.lr'"),
    ("fixed: {1: a, 0x1: b}\n", "'fixed.1'"),  # the same integer key, spelled twice
    ("objectives: [{a: 1, a: 2}]\n", "'objectives[0].a'"),
    ("fixed: {~: 1, null: 2}\n", "'fixed.None'"),
    ("fixed: {yes: 1, true: 2}\n", "'fixed.True'"),
    ("fixed: {lr: 1, 'lr': 2}\n", "'fixed.lr'"),
])  # fmt: skip
def test_duplicate_keys_are_refused_at_any_depth(tmp_path, text, key):
    with pytest.raises(SpaceError, match="appears twice") as error:
        load_space(str(write(tmp_path, text)))
    assert key in str(error.value)


@pytest.mark.parametrize("text", ["", "# a comment\n", "{}\n", "null\n", "---\n...\n"])
def test_an_empty_space_is_refused(tmp_path, text):
    with pytest.raises(SpaceError, match="empty"):
        load_space(str(write(tmp_path, text)))



"""Search spaces: every shipped YAML validates; every bad space fails naming the field."""

import textwrap
import time

import pytest

from tune_lm.space import SHIPPED_SPACES, SpaceError, load_space, parse_duration, to_tune_space

SHIPPED = sorted(p.name for p in SHIPPED_SPACES.glob("*.yaml"))


def test_the_shipped_spaces_are_there():
    assert {"cells.yaml", "seed_grid.yaml", "wide.yaml", "quick.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_validates_and_converts(name):
    space = load_space(name)  # found by bare name
    assert space.name == name.removesuffix(".yaml")
    domains = to_tune_space(space)
    assert set(domains) == set(space.parameters)
    # Any corner of the space is a valid training config.
    first = {n: next(iter(s.values()))[0] for n, s in space.parameters.items()}
    assert space.trial_config(first).epochs == space.epochs


def test_seed_grid_is_the_classic_study():
    space = load_space("seed_grid")
    assert space.searcher.type == "grid" and space.scheduler.type == "fifo"
    assert space.epochs == 40 and space.test_at_epochs == [20]
    assert space.parameters["model"] == {"grid": ["LSTM", "GRU"]}
    assert set(space.parameters["bptt"]["grid"]) == {35, 50}
    assert set(space.parameters["emsize"]["grid"]) == {100, 200}


def test_derived_parameter_follows_its_source():
    space = load_space("wide")
    config = space.trial_config({"emsize": 400, "tied": True})
    assert config.nhid == 400 and config.tied


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


BAD_SPACES = [
    ("parameters: [", "not valid YAML"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("shceduler: {type: asha}\n", "Did you mean 'scheduler'"),
    ("scheduler: {type: hyperband}\n", "scheduler.type"),
    ("scheduler: {grace_period: 0}\n", "scheduler.grace_period"),
    ("scheduler: {reduction_factor: 1}\n", "scheduler.reduction_factor"),
    ("fixed: {epochs: 2}\nscheduler: {grace_period: 5}\n", "grace_period"),
    ("budget: {num_samples: 0}\n", "budget.num_samples"),
    ("budget: {num_samples: many}\n", "budget.num_samples"),
    ("budget: {time_budget: soon}\n", "time budget"),
    ("resources: {cpus_per_trial: -1}\n", "resources.cpus_per_trial"),
    ("searcher: {sampler: bayes}\n", "searcher.sampler"),
    ("parameters: {emsiz: {choice: [1, 2]}}\n", "Did you mean 'emsize'"),
    ("fixed: {hidden: 3}\n", "fixed.hidden"),
    ("parameters: {emsize: {choice: []}}\n", "parameters.emsize"),
    ("parameters: {emsize: {between: [1, 2]}}\n", "parameters.emsize"),
    ("parameters: {lr: {uniform: [5, 1]}}\n", "low must be below high"),
    ("parameters: {lr: {loguniform: [0, 1]}}\n", "low > 0"),
    ("parameters: {nlayers: {int: [1.5, 3]}}\n", "whole numbers"),
    ("parameters: {dropout: {quniform: [0, 0.5]}}\n", "[low, high, q]"),
    ("parameters: {dropout: {uniform: [0.5, 1.5]}}\n", "dropout"),
    ("parameters: {model: {choice: [LSTM, TRANSFORMER]}}\n", "model"),
    ("parameters: {bptt: {grid: [35, 50]}}\n", "grid"),
    (
        "searcher: {type: grid}\nparameters: {lr: {uniform: [1, 2]}}\n",
        "every parameter must be a grid",
    ),
    ("parameters: {tied: {choice: [true, false]}, emsize: {choice: [100, 200]}}\n", "derived"),
    ("fixed: {tied: true, emsize: 100, nhid: 200}\n", "nhid == emsize"),
    ("fixed: {emsize: 10}\nparameters: {emsize: {choice: [1, 2]}}\n", "both fixed and searched"),
    ("derived: {nhid: emsiz}\n", "derived.nhid"),
    ("test_at_epochs: [5]\n", "test_at_epochs"),
    ("fixed: {data: ptb}\n", "top-level 'data:'"),
    ("objectives: [epoch_time_s, val_ppl]\n", "must start with val_ppl"),
    ("objectives: [val_ppl, epoch_time_s]\nsearcher: {sampler: cmaes}\n", "one objective"),
]


@pytest.mark.parametrize("text,expected", BAD_SPACES, ids=[b[1][:30] for b in BAD_SPACES])
def test_bad_space_names_the_problem(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as error:
        load_space(str(path))
    assert expected in str(error.value)
    assert str(path) in str(error.value)


def test_missing_space_lists_the_shipped_ones():
    with pytest.raises(SpaceError, match="cells.yaml"):
        load_space("no_such_space.yaml")


@pytest.mark.parametrize(
    "text,seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("4m30s", 270)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_an_alias_bomb_fails_fast_without_echoing(tmp_path):
    levels = ["a: &a [" + ", ".join(["lol"] * 9) + "]"]
    for old, new in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{new}: &{new} [{', '.join([f'*{old}'] * 9)}]")  # 9**9 once expanded
    path = write(tmp_path, "\n".join(levels) + "\n")
    started = time.perf_counter()
    with pytest.raises(SpaceError, match="aliases") as error:
        load_space(str(path))
    assert time.perf_counter() - started < 0.5
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
    assert space.parameters["nhid"] == {"choice": [16, 32]} and space.budget.num_samples == 3


@pytest.mark.parametrize("text,key", [
    ("seed: 1\nseed: 2\nparameters: {lr: {uniform: [1, 2]}}\n", "'seed'"),
    ("parameters: {lr: {uniform: [1, 2]}, lr: {uniform: [2, 3]}}\n", "'parameters.lr'"),
    ("fixed: {1: a, 0x1: b}\n", "'fixed.1'"),  # the same integer key, spelled twice
    ("objectives: [{a: 1, a: 2}]\n", "'objectives[0].a'"),
])  # fmt: skip
def test_duplicate_keys_are_refused_at_any_depth(tmp_path, text, key):
    with pytest.raises(SpaceError, match="appears twice") as error:
        load_space(str(write(tmp_path, text)))
    assert key in str(error.value)


@pytest.mark.parametrize("text", ["", "# a comment\n", "{}\n", "null\n", "---\n...\n"])
def test_an_empty_space_is_refused(tmp_path, text):
    with pytest.raises(SpaceError, match="empty"):
        load_space(str(write(tmp_path, text)))

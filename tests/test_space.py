"""Search spaces: every shipped YAML validates; every bad space fails naming the field."""

import textwrap
import time

import pytest

from tune_lm.tuning.space import (
    SHIPPED_SPACES,
    SpaceError,
    load_space,
    parse_duration,
    to_tune_space,
)

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
    # A range whose numbers do not fit the option, with the kind to use instead.
    ("parameters: {nhid: {uniform: [16, 64]}}\n", "use int, e.g. {int: [16, 64]}"),
    ("parameters: {emsize: {loguniform: [16, 256]}}\n", "use logint, e.g. {logint: [16, 256]}"),
    ("parameters: {bptt: {quniform: [10, 40, 5]}}\n", "use qint, e.g. {qint: [10, 40, 5]}"),
    ("parameters: {batch_size: {uniform: [4.5, 32.5]}}\n", "{int: [5, 32]}"),
    ("parameters: {epochs: {uniform: [1, 3]}}\n", "epochs is a whole number"),
    ("parameters: {max_tokens_per_epoch: {loguniform: [1000, 9000]}}\n", "whole number"),
    ("parameters: {seed: {uniform: [0, 9]}}\n", "seed is a whole number"),
    ("parameters: {nhid: {int: [16.0, 64]}}\n", "whole numbers"),
    ("parameters: {nhid: {qint: [16, 64, 8.0]}}\n", "whole numbers"),
    ("parameters: {model: {uniform: [0, 1]}}\n", "choice: [LSTM, GRU, RNN_TANH, RNN_RELU]"),
    ("parameters: {tied: {int: [0, 1]}}\n", "tied is not a number"),
    ("parameters: {adaptive_cutoffs: {int: [10, 20]}}\n", "not a number"),
    # ASHA's reduction factor near 1: thousands of rungs, nothing stopped.
    ("scheduler: {reduction_factor: 1.0000001}\n", "must be at least 2"),
    ("scheduler: {reduction_factor: 1.5}\n", "scheduler.reduction_factor"),
    ("scheduler: {reduction_factor: -3}\n", "at least 2"),
    # derived in a loop
    ("derived: {nhid: emsize, emsize: nhid}\n", "cycle, nhid -> emsize -> nhid"),
    ("derived: {nhid: nhid}\n", "cycle, nhid -> nhid"),
    ("derived: {nhid: emsize, emsize: bptt, bptt: nhid}\n", "nhid -> emsize -> bptt -> nhid"),
    ("derived: {lr: clip, nhid: emsize, emsize: nhid}\n", "nhid -> emsize -> nhid"),
    # keys the chosen searcher/scheduler would ignore
    ("searcher: {type: grid, sampler: tpe}\n", "'searcher.sampler' has no effect"),
    ("searcher: {type: grid, n_startup_trials: 4}\n", "'searcher.n_startup_trials' has no"),
    ("searcher: {sampler: random, n_startup_trials: 4}\n", "with sampler random"),
    ("searcher: {sampler: nsga2, n_startup_trials: 4}\n", "with sampler nsga2"),
    ("scheduler: {type: fifo, grace_period: 2}\n", "'scheduler.grace_period' has no effect"),
    ("scheduler: {type: fifo, reduction_factor: 3}\n", "'scheduler.reduction_factor' has no"),
    ("budget: {allow_large_grid: true}\n", "'budget.allow_large_grid' has no effect"),
    # a grid far too big to be meant
    (
        "searcher: {type: grid}\nscheduler: {type: fifo}\nbudget: {num_samples: 1}\nparameters:\n"
        "  bptt: {grid: [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]}\n"
        "  emsize: {grid: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n"
        "  nhid: {grid: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n",
        "the grid runs 1,100 trials",
    ),
    (
        "searcher: {type: grid}\nbudget: {num_samples: 600}\n"
        "parameters: {model: {grid: [LSTM, GRU]}}\n",
        "allow_large_grid: true",
    ),
    # nothing searched
    ("name: only_a_name\n", "field 'parameters' is missing or empty"),
    ("fixed: {epochs: 2}\nparameters: {}\n", "nothing is searched"),
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


def test_a_large_grid_runs_when_asked_for_and_is_announced(tmp_path):
    from tune_lm.tuning.space_checks import grid_warning

    grid = "searcher: {type: grid}\nparameters: {model: {grid: [LSTM, GRU]}}\n"
    one = "budget: {num_samples: 1}\n"
    small = load_space(str(write(tmp_path, grid + one)))
    assert small.total_trials == 2 and grid_warning(small) is None
    big = load_space(
        str(write(tmp_path, grid + "budget: {num_samples: 700, allow_large_grid: true}\n"))
    )
    assert big.total_trials == 1400
    assert "1,400 trials" in grid_warning(big) and "2 model" in grid_warning(big)
    with pytest.raises(SpaceError, match="1,400 trials"):  # the flag can make a grid too big
        small.with_overrides(num_samples=700)


def test_derived_chains_end_at_their_source(tmp_path):
    path = write(
        tmp_path,
        """\
        parameters: {bptt: {choice: [12, 24]}}
        derived: {nhid: emsize, emsize: bptt}
    """,
    )
    config = load_space(str(path)).trial_config({"bptt": 24})
    assert config.nhid == config.emsize == 24


def test_overrides_do_not_count_defaults_as_ignored_keys(tmp_path):
    path = write(
        tmp_path,
        """\
        searcher: {type: grid}
        scheduler: {type: fifo}
        parameters: {model: {grid: [LSTM, GRU]}}
    """,
    )
    space = load_space(str(path)).with_overrides(max_epochs=3, num_samples=2, seed=4)
    assert space.epochs == 3 and space.budget.num_samples == 2 and space.seed == 4
    quick = load_space("quick").with_overrides(max_epochs=2, cpus_per_trial=2.0)
    assert quick.epochs == 2 and quick.scheduler.reduction_factor == 2


def test_many_wrong_values_make_a_short_message(tmp_path):
    with pytest.raises(SpaceError) as error:
        load_space(str(write(tmp_path, f"objectives: [{', '.join(['bad'] * 5000)}]\n")))
    assert "objectives" in str(error.value) and "more problems" in str(error.value)
    assert len(str(error.value)) < 2000


def test_a_long_list_is_not_echoed_whole(tmp_path):
    numbers = ", ".join(str(n) for n in range(5_000))
    with pytest.raises(SpaceError) as error:
        load_space(str(write(tmp_path, f"parameters: {{lr: {{uniform: [{numbers}]}}}}\n")))
    assert "parameters.lr" in str(error.value) and len(str(error.value)) < 600

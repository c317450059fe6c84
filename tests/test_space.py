"""Search spaces: every bad space fails naming the field (the shipped ones:
test_shipped_spaces.py; the YAML itself: test_space_yaml.py)."""

import subprocess
import sys
import textwrap

import pytest
from pydantic import ValidationError

from tune_lm.lm.errors import ConfigError
from tune_lm.tuning.params import KINDS
from tune_lm.tuning.space import (
    SearchSpace,
    SpaceError,
    check_override,
    parse_duration,
)
from tune_lm.tuning.space_yaml import load_space


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


BAD_SPACES = [
    ("parameters: [", "not valid YAML"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("shceduler: {type: asha}\n", "Did you mean 'scheduler'"),
    # a suggestion comes from the same section, synonyms and word prefixes first
    ("budget: {samples: 4}\n", "Did you mean 'num_samples' instead of 'samples'"),
    ("budget: {trials: 4}\n", "Did you mean 'num_samples' instead of 'trials'"),
    ("scheduler: {grace: 2}\n", "Did you mean 'grace_period' instead of 'grace'"),
    ("resources: {gpus: 1}\n", "Did you mean 'gpus_per_trial'"),
    ("name: 2024-01-01\n", "YAML read the value as a date: to mean the text, put it in quotes"),
    ("name: no\n", "YAML read the value as true/false"),
    ("parameters: {lr: {log_uniform: [1, 20]}}\n", "'log_uniform', which is not a parameter "
     "kind. Did you mean 'loguniform'"),
    ("parameters: {nhid: {randint: [1, 20]}}\n", "Did you mean 'int'"),
    ("parameters: {model: {choice: [LSTM, GRU]}}\nderived: {nhid: model}\n",
     "'derived.nhid': nhid is a number, but model, which it takes its value from, is text"),
    ("scheduler: {type: median_stopping}\n", "scheduler.type"),
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
    ("parameters: {epochs: {uniform: [1, 3]}}\n", "set once, in 'fixed: {epochs: N}'"),
    ("parameters: {lr: {uniform: [1, 3]}}\nderived: {epochs: bptt}\n", "derived.epochs': epochs"),
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
    # population-based training
    *((f"scheduler: {{type: pbt{extra}}}\nfixed: {{epochs: 6}}\n"
       f"parameters: {{lr: {{loguniform: [1, 40]}}, nhid: {{choice: [16, 32]}}{more}}}\n", says)
      for extra, more, says in [
          (", mutate: [nhid]", "", "'nhid', which training cannot change mid-run"),
          (", mutate: [dropout]", "", "'dropout', which the space does not search"),
          (", mutate: []", "", "needs something to perturb"),
          (", perturbation_interval: 6", "", "PBT would never act"),
          (", grace_period: 2", "", "'scheduler.grace_period' has no effect with"),
          ("", "}\nsearcher: {type: optuna", "field 'searcher' has no effect with"),
      ]),
    *(("scheduler: {type: pbt}\nfixed: {epochs: 6}\nparameters: {lr: {loguniform: [1, 40]}}\n"
       + extra, says) for extra, says in [
          ("objectives: [val_ppl, epoch_time_s]\n", "optimises val_ppl alone"),
          ("baselines: [{lr: 5}]\n", "field 'baselines' has no effect"),
      ]),  # fmt: skip
    ("scheduler: {type: asha, mutate: [lr]}\n", "'scheduler.mutate' has no effect unless"),
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


def test_a_large_grid_runs_when_asked_for_and_is_announced(tmp_path):
    from tune_lm.tuning.space_size import grid_warning

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


# --- The space's validity is a property of its type -------------------------------------

KIND_EXAMPLES = {  # kind: (its list, corners, grid size, largest)
    "choice": (["LSTM", "GRU"], ["LSTM", "GRU"], 1, "LSTM"),
    "grid": ([35, 50, 70], [35, 50, 70], 3, 70),
    "uniform": ([0.0, 0.5], [0.0, 0.5], 1, 0.5),
    "loguniform": ([1, 40], [1, 40], 1, 40),
    "int": ([1, 3], [1, 3], 1, 3),
    "logint": ([64, 1024], [64, 1024], 1, 1024),
    "quniform": ([0.0, 0.5, 0.1], [0.0, 0.5], 1, 0.5),
    "qint": ([100, 800, 100], [100, 800], 1, 800),
}


@pytest.mark.parametrize(
    "raw",
    [
        {"parameters": {"nhid": {"uniform": [64, 512]}}},  # floats for a whole number
        {"parameters": {"lr": {"uniform": [5.0, 1.0]}}},  # inverted
        {"parameters": {"lr": {"between": [1, 2]}}},  # no such kind
        {"parameters": {"lr": {"loguniform": [0, 1]}}},
        {"parameters": {"emsiz": {"choice": [1, 2]}}},
        {"parameters": {"lr": {"choice": [1, 2]}}, "derived": {"nhid": "emsize", "emsize": "nhid"}},
        {"parameters": {"lr": {"choice": [1, 2]}}, "searcher": {"type": "grid", "sampler": "tpe"}},
        {"parameters": {"lr": {"choice": [1, 2]}}, "fixed": {"tied": True, "nhid": 2}},
        {"fixed": {"epochs": 2}},  # nothing searched
    ],
)
def test_the_type_cannot_hold_an_invalid_space(raw):
    with pytest.raises(ValidationError):
        SearchSpace(**raw)


def test_from_raw_names_the_source_and_field_without_pydantics_wrapping():
    with pytest.raises(SpaceError) as error:
        SearchSpace.from_raw({"parameters": {"nhid": {"uniform": [64, 512]}}}, "my.yaml")
    assert str(error.value) == (
        "my.yaml: field 'parameters.nhid': nhid is a whole number, but uniform samples floats "
        "(e.g. 288); use int, e.g. {int: [64, 512]}, or list values with choice"
    )
    with pytest.raises(SpaceError) as error:
        SearchSpace.from_raw({"parameters": {"lr": {"uniform": [5, 1]}}}, "my.yaml")
    assert str(error.value) == "my.yaml: field 'parameters.lr': low must be below high, got [5, 1]"


@pytest.mark.parametrize("kind", list(KIND_EXAMPLES))
def test_each_kind_knows_its_corners_grid_size_and_largest(kind):
    values, corners, grid_size, largest = KIND_EXAMPLES[kind]
    parameter = KINDS[kind](**{kind: values})
    assert parameter.kind == kind and parameter.values == values
    assert parameter.corners() == corners and parameter.grid_size == grid_size
    assert parameter.largest() == largest
    assert parameter.model_dump() == {kind: values}


def test_each_kind_makes_its_tune_domain():
    from ray import tune
    from ray.tune.search import sample

    def domain(kind):
        return KINDS[kind](**{kind: KIND_EXAMPLES[kind][0]}).to_tune(tune)

    assert domain("choice").categories == ["LSTM", "GRU"]
    assert domain("grid") == {"grid_search": [35, 50, 70]}
    uniform, loguniform = domain("uniform"), domain("loguniform")
    assert isinstance(uniform, sample.Float) and (uniform.lower, uniform.upper) == (0.0, 0.5)
    assert isinstance(loguniform.sampler, sample.Float._LogUniform)
    assert (loguniform.lower, loguniform.upper) == (1, 40)
    whole, logint = domain("int"), domain("logint")
    assert isinstance(whole, sample.Integer)
    assert (whole.lower, whole.upper) == (1, 4)  # Tune's upper bound is exclusive
    assert isinstance(logint.sampler, sample.Integer._LogUniform)
    assert (logint.lower, logint.upper) == (64, 1025)
    quniform, qint = domain("quniform"), domain("qint")
    assert isinstance(quniform, sample.Float) and quniform.sampler.q == 0.1
    assert isinstance(qint, sample.Integer) and qint.sampler.q == 100
    assert (qint.lower, qint.upper) == (100, 800)  # qrandint's upper bound is inclusive


def test_a_quantised_value_prints_as_its_step_writes_it():
    parameter = KINDS["quniform"](quniform=[0.0, 0.5, 0.1])
    assert parameter.on_step(0.30000000000000004) == 0.3
    assert KINDS["uniform"](uniform=[0.0, 0.5]).on_step(0.30000000000000004) != 0.3


def test_a_dump_leaves_out_keys_the_searcher_or_scheduler_would_ignore():
    space = SearchSpace(
        searcher={"type": "grid"}, scheduler={"type": "fifo"},
        parameters={"model": {"grid": ["LSTM", "GRU"]}},
    )  # fmt: skip
    dumped = space.model_dump()
    assert dumped["searcher"] == {"type": "grid"} and dumped["scheduler"] == {"type": "fifo"}
    assert dumped["budget"]["allow_large_grid"] is False
    random = SearchSpace(searcher={"sampler": "random"}, parameters={"lr": {"uniform": [1, 2]}})
    assert "n_startup_trials" not in random.model_dump()["searcher"]
    assert "allow_large_grid" not in random.model_dump()["budget"]
    assert SearchSpace(**random.model_dump()) == random


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("num_samples", 0, "--num-samples must be at least 1, got 0"),
        ("max_epochs", 0, "--max-epochs must be at least 1, got 0"),
        ("max_concurrent", 0, "--max-concurrent must be at least 1, got 0"),
        ("max_failures", -1, "--max-failures must be at least 0, got -1"),
        ("cpus_per_trial", 0.0, "--cpus-per-trial must be at least 0.1, got 0.0"),
        ("cpus_per_trial", float("inf"), "--cpus-per-trial must be a finite number"),
        ("gpus_per_trial", 0.001, "--gpus-per-trial: gpus_per_trial 0.001 would put over 100"),
        ("time_budget", "soon", "--time-budget: time budget 'soon' is not a duration"),
        ("time_budget", "2h30", "ambiguous"),
        ("seed", -1, "--seed must be at least 0, got -1"),
        ("seed", 2**40, "--seed must be less than 4294967296"),
    ],
)
def test_a_flag_is_checked_against_the_limits_of_the_field_it_sets(key, value, expected):
    with pytest.raises(ConfigError) as error:
        check_override(key, value)
    assert expected in str(error.value) and "leave the flag out" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "key,value",
    [("num_samples", 1), ("max_epochs", 3), ("cpus_per_trial", 0.5), ("gpus_per_trial", 0.25),
     ("gpus_per_trial", 0.0), ("time_budget", "1h30m"), ("seed", 2**32 - 1), ("max_failures", 0)],
)  # fmt: skip
def test_a_flag_within_its_limits_passes(key, value):
    check_override(key, value)


def test_the_space_modules_do_not_import_ray():
    code = (
        "import sys; import tune_lm.tuning.space, tune_lm.tuning.params, "
        "tune_lm.tuning.space_parts, tune_lm.tuning.space_yaml; "
        "tune_lm.tuning.space_yaml.load_space('quick'); "
        "sys.exit(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


@pytest.mark.parametrize("sampler", ["cmaes", "gp"])
def test_every_sampler_the_readme_lists_is_installed_and_proposes(sampler):
    """cmaes needs its own package (a dependency now; it was refused as missing)."""
    import optuna

    from tune_lm.tuning.searchers import make_sampler

    space = SearchSpace.from_raw({"searcher": {"sampler": sampler}, "fixed": {"epochs": 2},
                                  "parameters": {"lr": {"loguniform": [1, 20]},
                                                 "dropout": {"uniform": [0.0, 0.5]}}},
                                 "test")  # fmt: skip
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=make_sampler(space))
    study.optimize(lambda t: t.suggest_float("lr", 1, 20, log=True)
                   + t.suggest_float("dropout", 0.0, 0.5), n_trials=4)  # fmt: skip
    assert len(study.trials) == 4 and all(1 <= t.params["lr"] <= 20 for t in study.trials)

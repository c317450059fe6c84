"""Every shipped space works. In-process, all of them: they validate, convert and dump
without change, their searcher and scheduler build, and their corners (each parameter
at its first, then at its last value) train through ``fit`` in the smoke's form. End to
end with ``--smoke`` (Ray, MLflow, the report) for the three whose machinery differs:
``quick`` (the README's first search), ``cells`` (baselines, fractional GPUs dropped on a
CPU) and ``cells_pareto`` (two objectives). The grids (``seed_grid``, ``seed_grid_cpu``:
repeats, test scores at an epoch) take the path of test_search's grid study, and ``wide``
the path of ``quick``; what is theirs alone (optimizer, tying, weight decay, large
batches, their resources) is the in-process part."""

import math
from pathlib import Path

import pytest
from cli_run import run_cli
from mlflow.tracking import MlflowClient

from tune_lm.lm.fit import fit
from tune_lm.lm.synthetic import make_synthetic_corpus
from tune_lm.tuning.searchers import make_scheduler, make_searcher
from tune_lm.tuning.smoke import smoke_space
from tune_lm.tuning.space import PARAMETER_KINDS, SearchSpace
from tune_lm.tuning.space_yaml import SHIPPED_SPACES, load_space
from tune_lm.tuning.tune_space import to_tune_space

SHIPPED = sorted(p.name for p in SHIPPED_SPACES.glob("*.yaml"))
END_TO_END = ["cells.yaml", "cells_pareto.yaml", "quick.yaml"]


def test_the_shipped_spaces_are_there():
    assert {"cells.yaml", "seed_grid.yaml", "wide.yaml", "quick.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_validates_and_converts(name):
    space = load_space(name)  # found by bare name
    assert space.name == name.removesuffix(".yaml")
    domains = to_tune_space(space)
    assert set(domains) == set(space.parameters)
    # Any corner of the space is a valid training config.
    first = {name: parameter.corners()[0] for name, parameter in space.parameters.items()}
    assert space.trial_config(first).epochs == space.epochs


def test_seed_grid_is_the_classic_study():
    space = load_space("seed_grid")
    assert space.searcher.type == "grid" and space.scheduler.type == "fifo"
    assert space.epochs == 40 and space.test_at_epochs == [20]
    assert space.parameters["model"].model_dump() == {"grid": ["LSTM", "GRU"]}
    assert set(space.parameters["bptt"].grid) == {35, 50}
    assert set(space.parameters["emsize"].values) == {100, 200}


def test_derived_parameter_follows_its_source():
    space = load_space("wide")
    config = space.trial_config({"emsize": 400, "tied": True})
    assert config.nhid == 400 and config.tied


@pytest.mark.parametrize("name", SHIPPED)
def test_a_dumped_space_builds_the_same_space_with_ints_still_ints(name):
    space = load_space(name)
    dumped = space.model_dump()
    assert SearchSpace(**dumped) == space
    assert SearchSpace.model_validate_json(space.model_dump_json()) == space
    for parameter in dumped["parameters"].values():
        ((kind, values),) = parameter.items()
        assert kind in PARAMETER_KINDS and isinstance(values, list)
    if name == "quick.yaml":
        assert dumped["parameters"]["bptt"] == {"choice": [20, 35]}
        assert dumped["parameters"]["lr"] == {"loguniform": [5.0, 40.0]}
        assert all(type(v) is int for v in dumped["parameters"]["bptt"]["choice"])


def test_the_end_to_end_smokes_are_shipped_spaces():
    assert set(END_TO_END) < set(SHIPPED)


@pytest.mark.parametrize("shipped", SHIPPED)
def test_every_shipped_space_builds_and_its_corners_train(shipped):
    space = smoke_space(load_space(shipped), gpus=False)
    assert make_scheduler(space) is not None
    searcher = make_searcher(space, None)
    assert (searcher is None) == (space.searcher.type == "grid")
    corpus = make_synthetic_corpus(train_tokens=4000, valid_tokens=800, test_tokens=800)
    for end in (0, -1):
        values = {name: p.corners()[end] for name, p in space.parameters.items()}
        config = space.trial_config(values).model_copy(update={"epochs": 1, "device": "cpu"})
        result = fit(config, corpus=corpus, evaluate_test=False)
        assert len(result.history) >= 1, (shipped, values)
        assert not math.isnan(result.metrics["best_val_ppl"]), (shipped, values)


@pytest.mark.slow
@pytest.mark.parametrize("shipped", END_TO_END)
def test_smoke_of_a_shipped_space_leaves_the_real_name_free(tmp_path, shipped):
    """On a CPU-only machine (CUDA hidden), the space's --smoke runs under NAME-smoke; the
    real search's folder, MLflow experiment and model stay free. It runs as the README's
    first search does, with the default store ./mlflow.db, from a folder whose name has a
    space and a non-ASCII letter (MLflow's default URI encodes them: it was refused, and
    MLflow made a stray folder named as encoded)."""
    here = tmp_path / "my runs ü"
    here.mkdir()
    name = load_space(Path(shipped).stem).name
    done = run_cli("search", "--space", shipped, "--smoke", cwd=here, timeout=600,
                   env={"MLFLOW_TRACKING_URI": "", "CUDA_VISIBLE_DEVICES": ""})  # fmt: skip
    assert done.returncode == 0, (shipped, done.stdout[-2000:] + done.stderr[-2000:])
    assert (here / "tune_lm_runs" / f"{name}-smoke" / "summary.csv").is_file()
    assert not (here / "tune_lm_runs" / name).exists(), name
    assert [p.name for p in tmp_path.iterdir()] == [here.name]  # no stray folder beside it
    client = MlflowClient(f"sqlite:///{here / 'mlflow.db'}")
    models = {m.name for m in client.search_registered_models()}
    assert client.get_experiment_by_name(name) is None, name
    assert f"tune_lm-{name}" not in models and f"tune_lm-{name}-smoke" in models, models

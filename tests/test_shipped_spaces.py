"""Every shipped space works. In-process, all of them: the searcher and scheduler build,
and the corners of the space (each parameter at its first, then at its last value) train
through ``fit`` in the smoke's shrunken form. End to end with ``--smoke`` (Ray, MLflow,
the report) for the four whose machinery differs: ``quick`` (the README's first search),
``cells`` (baselines, fractional GPUs dropped on a CPU), ``cells_pareto`` (two objectives)
and ``seed_grid`` (a grid with test scores at an epoch). ``wide`` and ``seed_grid_cpu``
take the same path as those through Ray; what is theirs alone (optimizer, tying,
weight decay, large batches, their resources) is the in-process part."""

import math
from pathlib import Path

import pytest
from cli_run import run_cli
from mlflow.tracking import MlflowClient

from tune_lm.lm.fit import fit
from tune_lm.lm.synthetic import make_synthetic_corpus
from tune_lm.tuning.request import smoke_space
from tune_lm.tuning.searchers import make_scheduler, make_searcher
from tune_lm.tuning.space_yaml import SHIPPED_SPACES, load_space

SHIPPED = sorted(p.name for p in SHIPPED_SPACES.glob("*.yaml"))
END_TO_END = ["cells.yaml", "cells_pareto.yaml", "quick.yaml", "seed_grid.yaml"]


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
    real search's folder, MLflow experiment and model stay free."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    name = load_space(Path(shipped).stem).name
    done = run_cli("search", "--space", shipped, "--smoke", cwd=tmp_path, timeout=600,
                   env={"MLFLOW_TRACKING_URI": tracking, "CUDA_VISIBLE_DEVICES": ""})  # fmt: skip
    assert done.returncode == 0, (shipped, done.stdout[-2000:] + done.stderr[-2000:])
    assert (tmp_path / "tune_lm_runs" / f"{name}-smoke" / "summary.csv").is_file()
    assert not (tmp_path / "tune_lm_runs" / name).exists(), name
    client = MlflowClient(tracking)
    models = {m.name for m in client.search_registered_models()}
    assert client.get_experiment_by_name(name) is None, name
    assert f"tune_lm-{name}" not in models and f"tune_lm-{name}-smoke" in models, models

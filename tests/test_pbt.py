"""Population-based training (issue 16): a real PBT search on a tiny corpus, its trials
continuing other trials' weights with perturbed lr / dropout, each change recorded."""

import json
import sqlite3

import pytest
import torch
import yaml
from cli_run import run_cli

from tune_lm.lm.checkpoint import STATE_FILE

PBT_SPACE = """
data: synthetic
seed: 5
scheduler: {type: pbt, perturbation_interval: 1, quantile_fraction: 0.5,
            resample_probability: 0.0, synchronous: true}
budget: {num_samples: 3}
resources: {cpus_per_trial: 0.5}
fixed: {epochs: 4, nlayers: 1, emsize: 16, nhid: 16, batch_size: 8, bptt: 10,
        max_tokens_per_epoch: 1600, lr_decay: 1.0}
parameters:
  lr: {loguniform: [0.1, 40.0]}
  dropout: {uniform: [0.0, 0.5]}
"""


@pytest.mark.slow
def test_a_pbt_search_moves_trials_onto_better_weights_with_perturbed_values(tmp_path):
    space = tmp_path / "pbt.yaml"
    space.write_text(PBT_SPACE)
    done = run_cli("search", "--space", space, "--storage", tmp_path / "runs", "--name", "p",
                   env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert done.returncode == 0, done.stderr[-3000:]
    # The plan names PBT (it said "Optuna TPE proposing; ASHA ...", neither of which runs).
    assert ("search: 3 trials of 4 epochs (random starting values; PBT every 1 epoch: the "
            "worst 50% continue the best 50%'s weights with lr and dropout perturbed)"
            in done.stdout), done.stdout
    experiment = tmp_path / "runs" / "p"
    perturbed, last_configs = [], {}
    for trial in sorted(p for p in experiment.iterdir() if p.is_dir()):
        latest = max(trial.glob("checkpoint_*"), default=None)
        if latest is None:
            continue
        state = torch.load(latest / STATE_FILE, weights_only=True)
        results = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in results][-1] == 4  # PBT stops no trial
        final = results[-1]["config"]
        last_configs[results[-1]["trial_id"]] = final
        # The training state trained under the trial's final values, within the space.
        assert state["config"]["lr"] == pytest.approx(final["lr"])
        assert state["config"]["dropout"] == pytest.approx(final["dropout"])
        assert 0.1 <= final["lr"] <= 40.0 and 0.0 <= final["dropout"] <= 0.5
        if state["perturbations"]:
            perturbed.append(state["perturbations"])
            change = state["perturbations"][-1]
            # Only the values that changed are recorded: a value already at its bound
            # (dropout 0.5 x 1.2, clipped to 0.5) may stay as it was.
            assert {"epoch", "window"} <= set(change) and {"lr", "dropout"} & set(change)
            for key in {"lr", "dropout"} & set(change):
                assert change[key][1] == pytest.approx(final[key]) != change[key][0]
            assert len(state["history"]) == 4  # the parent's epochs, then its own
    assert perturbed, "no trial was perturbed in 3 rounds of PBT"
    summary = json.loads((experiment / "summary.json").read_text())
    assert len(summary["trials"]) == 3 and summary["best_trial"]["test_ppl"] > 1
    # One row per trial, with the values it last trained with: no trial is perturbed at
    # its last epoch (Ray's PBT did: the row then named the trial it was to continue,
    # with values it never trained with).
    assert sorted(t["trial_id"] for t in summary["trials"]) == sorted(last_configs)
    for row in summary["trials"]:
        assert row["lr"] == pytest.approx(last_configs[row["trial_id"]]["lr"]), row
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        states = [s for (s,) in db.execute("SELECT status FROM runs")]
    assert states and "RUNNING" not in states


def test_the_space_seed_fixes_the_values_tune_draws_for_a_population():
    """Tune draws PBT's population from the driver's global numpy generator (its
    domains' ``sample()`` without a generator), which the search seeds from the space."""
    from tune_lm.tuning.space import SearchSpace
    from tune_lm.tuning.tune_space import to_tune_space
    from tune_lm.tuning.tuner import seed_driver

    domains = to_tune_space(SearchSpace.from_raw(yaml.safe_load(PBT_SPACE), "pbt.yaml"))

    def population(seed):
        seed_driver(seed)
        return [(domains["lr"].sample(), domains["dropout"].sample()) for _ in range(3)]

    assert population(5) == population(5) != population(6)

"""Fault injection with a real local Ray: a trial that diverges, one whose process is
killed mid-epoch (retried from its checkpoint, ending exactly like an unbroken run) and
one that keeps raising (failed after its retries) — and the search goes on."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tune_lm import metrics as M
from tune_lm.data import load_corpus
from tune_lm.fit import fit
from tune_lm.space import load_space

REPO_ROOT = Path(__file__).resolve().parents[1]

SPACE = """
name: faults
data: synthetic
seed: 5
searcher: {type: grid}
scheduler: {type: fifo}
budget: {num_samples: 1, max_concurrent: 2}
resources: {cpus_per_trial: 1}
fixed: {epochs: 3, nlayers: 1, emsize: 16, nhid: 16, batch_size: 8, bptt: 10, dropout: 0.0,
        lr: 5.0, max_tokens_per_epoch: 6000}
parameters:
  model: {grid: [LSTM, GRU, RNN_TANH]}
"""


def results_by_model(folder):
    found = {}
    for result in folder.glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line]
        if lines:
            found[lines[0]["config"]["model"]] = lines
    return found


@pytest.mark.slow
def test_diverging_killed_and_failing_trials(tmp_path):
    space_file = tmp_path / "faults.yaml"
    space_file.write_text(textwrap.dedent(SPACE))
    once = tmp_path / "fired"
    faults = [
        {"kind": "nan", "epoch": 1, "when": {"model": "GRU"}},  # epoch 2's loss is NaN
        {"kind": "kill", "epoch": 1, "when": {"model": "LSTM"}, "once_dir": str(once),
         "after_s": 0.05},
        {"kind": "raise", "epoch": 2, "when": {"model": "RNN_TANH"}},  # every attempt
    ]  # fmt: skip
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TUNE_LM_FAULTS": json.dumps(faults)}
    done = subprocess.run(
        [sys.executable, "-m", "tune_lm.search", "--space", str(space_file), "--storage",
         str(tmp_path / "runs"), "--tracking-uri", tracking, "--max-failures", "1"],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO_ROOT,
    )  # fmt: skip
    output = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 0, output
    folder = tmp_path / "runs" / "faults"
    summary = {row["model"]: row for row in json.loads((folder / "summary.json").read_text())
               ["trials"]}  # fmt: skip
    assert summary["GRU"]["status"] == "diverged", summary["GRU"]
    assert summary["LSTM"]["status"] == "completed", summary["LSTM"]
    assert summary["RNN_TANH"]["status"].startswith("failed"), summary["RNN_TANH"]
    assert "injected fault" in summary["RNN_TANH"]["status"]

    results = results_by_model(folder)
    # Diverged: the NaN epoch reports val_ppl = inf (ASHA and Optuna see the worst value).
    assert [r[M.EPOCH] for r in results["GRU"]] == [1, 2]
    assert math.isinf(results["GRU"][-1][M.VAL_PPL])
    # Killed mid-epoch 2, retried from the epoch-1 checkpoint: the same numbers as an
    # unbroken run of the same configuration (CPU, one thread: deterministic).
    assert (once / f"kill-{results['LSTM'][0]['trial_id']}").exists(), "the kill never fired"
    space = load_space(str(space_file))
    config = space.trial_config({"model": "LSTM"}).replace(threads=1, device="cpu")
    unbroken = fit(config, corpus=load_corpus("synthetic"), evaluate_test=False).history
    assert [r[M.EPOCH] for r in results["LSTM"]] == [1, 2, 3]
    assert [r[M.VAL_PPL] for r in results["LSTM"]] == [h[M.VAL_PPL] for h in unbroken]
    assert [r[M.TRAIN_LOSS] for r in results["LSTM"]] == [h[M.TRAIN_LOSS] for h in unbroken]

    # MLflow agrees: one run per trial, each with its status.
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("faults")
    runs = client.search_runs([experiment.experiment_id], "tags.`tune_lm.kind` = 'trial'")
    statuses = {run.data.params["model"]: run.data.tags["tune_lm.status"] for run in runs}
    assert statuses == {"GRU": "diverged", "LSTM": "completed", "RNN_TANH": "failed"}

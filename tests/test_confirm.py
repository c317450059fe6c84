"""Confirmation of finalists (issue 17): the best configurations trained again with fresh
seeds after the search, their scores as mean ± sd, and differences with their noise."""

import json
import math
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from cli_run import run_cli, start_cli
from conftest import stop_process  # noqa: E402  (tests/ is on sys.path)
from mlflow.tracking import MlflowClient

from tune_lm.tuning.noise import difference, mean_sd
from tune_lm.tuning.space import SearchSpace

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_a_difference_comes_with_welchs_interval_and_a_verdict():
    # Welch by hand: means 10 and 13, variances 1 and 4 over 3 values each ->
    # se = sqrt(1/3 + 4/3), df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 2.94..., t = 3.2 (df~2.94)
    d = difference([9.0, 10.0, 11.0], [11.0, 13.0, 15.0])
    assert d.diff == pytest.approx(3.0)
    se = math.sqrt(1 / 3 + 4 / 3)
    assert d.high - d.diff == pytest.approx(d.diff - d.low)
    assert 3.0 * se < d.high - d.diff < 3.3 * se  # t(0.975, 2.94) = 3.2
    assert d.within_noise and "within noise" in d.words()
    clear = difference([100.0, 100.5, 99.5], [110.0, 110.5, 109.5])
    assert not clear.within_noise and clear.low > 0 and "a real difference" in clear.words()
    one_seed = difference([100.0], [101.0])
    assert one_seed.diff == 1.0 and one_seed.low == -math.inf and "too few" in one_seed.words()
    assert mean_sd([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert math.isnan(mean_sd([1.0])[1])


BASE = {"parameters": {"lr": {"loguniform": [1, 40]}}}


@pytest.mark.parametrize(
    "raw, says",
    [
        ({**BASE, "confirm": {"top_k": 0, "seeds": 2}}, "field 'confirm.top_k'"),
        ({**BASE, "confirm": {"top_k": 2, "seeds": 1}}, "field 'confirm.seeds'"),
        ({**BASE, "confirm": {"top_k": 2}}, "field 'confirm.seeds'"),
        ({**BASE, "confirm": {"top_k": 2, "seeds": 2, "folds": 3}}, "folds"),
        ({**BASE, "scheduler": {"type": "pbt"}, "fixed": {"epochs": 4},
          "confirm": {"top_k": 2, "seeds": 2}}, "'confirm' cannot go with"),
    ],
)
def test_a_confirm_section_that_cannot_work_is_refused(raw, says):
    with pytest.raises(Exception) as refused:
        SearchSpace.from_raw(raw, "space.yaml")
    assert says in str(refused.value) and "space.yaml" in str(refused.value)


@pytest.mark.parametrize("value", ["2", "2,x", "2,2,2", "-1,2", ""])
def test_a_bad_confirm_flag_is_refused_with_exit_2_before_anything_starts(tmp_path, value):
    done = run_cli("search", "--space", "quick.yaml", "--confirm", value, "--storage",
                   tmp_path / "runs", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "--confirm" in done.stderr and "K,S" in done.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "m.db").exists()


SPACE = """
name: confirmed
data: synthetic
seed: 3
scheduler: {type: fifo}
budget: {num_samples: 3, max_concurrent: 2}
resources: {cpus_per_trial: 1}
confirm: {top_k: 2, seeds: 2}
fixed: {epochs: 3, nlayers: 1, emsize: 16, nhid: 16, batch_size: 8, bptt: 10, dropout: 0.0,
        max_tokens_per_epoch: 20000}
parameters:
  lr: {loguniform: [1.0, 20.0]}
"""


def launch(tmp_path, *extra):
    log = open(tmp_path / "search.log", "a")  # noqa: SIM115 (closed with the process)
    return start_cli("search", "--space", str(tmp_path / "confirmed.yaml"), "--storage",
                     str(tmp_path / "runs"), "--tracking-uri",
                     f"sqlite:///{tmp_path / 'mlflow.db'}", *extra, stdout=log,
                     stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True)  # fmt: skip


@pytest.mark.slow
def test_finalists_are_confirmed_with_fresh_seeds_and_an_interrupted_confirmation_resumes(
    tmp_path,
):
    """Ctrl-C while the finalists are confirmed: no MLflow run stays RUNNING (the
    confirmation runs were left open), and --resume finishes the confirmation."""
    (tmp_path / "confirmed.yaml").write_text(SPACE)
    folder = tmp_path / "runs" / "confirmed"
    search = launch(tmp_path)
    deadline = time.time() + 400
    while not list((folder / "confirm").glob("*/result.json")):  # confirmation under way
        assert search.poll() is None, (tmp_path / "search.log").read_text()[-3000:]
        assert time.time() < deadline, "confirmation did not start in time"
        time.sleep(0.5)
    os.killpg(search.pid, signal.SIGINT)  # Ctrl-C in the terminal
    assert search.wait(timeout=180) == 130, (tmp_path / "search.log").read_text()[-3000:]
    stop_process(search, signal.SIGKILL)  # anything it left
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        open_runs = db.execute("SELECT name FROM runs WHERE status = 'RUNNING'").fetchall()
    assert open_runs == [], open_runs
    resumed = launch(tmp_path, "--resume")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "search.log").read_text()[-3000:]
    output = (tmp_path / "search.log").read_text()
    assert "finalists, confirmed" in output and "winner" in output

    summary = json.loads((folder / "summary.json").read_text())
    plan = json.loads((folder / "confirm.json").read_text())
    searched = sorted(summary["trials"], key=lambda t: t["best_val_ppl"])
    confirmed = summary["confirmed"]
    assert [c["trial_id"] for c in confirmed] == [t["trial_id"] for t in searched[:2]]
    seeds = plan["seeds"]
    assert len(seeds) == 2 and 3 not in seeds  # fresh: not the search's seed
    for entry in confirmed:
        assert entry["seeds"] == seeds
        assert len(entry["val_ppl"]) == len(entry["test_ppl"]) == 2
        assert all(math.isfinite(v) and v > 1 for v in entry["val_ppl"] + entry["test_ppl"])
        assert entry["val_ppl"][0] != entry["val_ppl"][1]  # the seeds differ
        assert entry["val_ppl_mean"] == pytest.approx(sum(entry["val_ppl"]) / 2)
        assert entry["test_ppl_sd"] == pytest.approx(
            abs(entry["test_ppl"][0] - entry["test_ppl"][1]) / math.sqrt(2))
        assert entry["epoch_time_s_mean"] > 0
    winners = [e for e in confirmed if e["winner"]]
    assert len(winners) == 1
    assert winners[0]["val_ppl_mean"] == min(e["val_ppl_mean"] for e in confirmed)
    assert summary["confirmed_best"] == winners[0]["trial_id"]
    best = searched[0]["trial_id"]  # the registered model: the best single run, said so
    assert f", trial {best}'s: the best single run" + (
        ", also the confirmed winner" if best == winners[0]["trial_id"] else
        f"; the confirmed winner {winners[0]['trial_id']} is not registered") in output
    loser = next(e for e in confirmed if not e["winner"])
    assert loser["vs_winner"]["val_ppl"]["diff"] == pytest.approx(
        loser["val_ppl_mean"] - winners[0]["val_ppl_mean"])
    assert "Finalists, confirmed" in (folder / "summary.md").read_text()
    # The compute ledger: 3 trials x 3 epochs searched, 2 finalists x 2 seeds x 3 confirmed.
    compute = summary["compute"]
    assert compute["search"]["trial_epochs"] == 9 and compute["confirm"]["trial_epochs"] == 12
    for phase in ("search", "confirm"):
        assert compute[phase]["train_seconds"] > 0
        assert compute[phase]["cpu_seconds"] == pytest.approx(compute[phase]["train_seconds"])
        assert compute[phase]["gpu_seconds"] == 0
    assert compute["test"]["seconds"] > 0 and compute["total"]["trial_epochs"] == 21
    assert "compute: search 9 trial-epochs" in output

    # Ray: one confirmation trial per (finalist, seed), none run twice.
    trial_folders = [p for p in (folder / "confirm").iterdir() if p.is_dir()]
    assert len(trial_folders) == 4, trial_folders
    # MLflow: four confirmation runs under the search's run, each tested once; none RUNNING.
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("confirmed")
    parent = client.search_runs([experiment.experiment_id], "tags.`tune_lm.kind` = 'search'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert parent[0].data.metrics["compute.confirm.trial_epochs"] == 12
    runs = client.search_runs([experiment.experiment_id],
                              "tags.`tune_lm.kind` = 'confirmation'")  # fmt: skip
    pairs = sorted((r.data.tags["tune_lm.finalist"], r.data.tags["tune_lm.seed"]) for r in runs)
    assert pairs == sorted((c["trial_id"], str(s)) for c in confirmed for s in seeds)
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in runs)
    for run in runs:
        assert run.data.params["seed"] in {str(s) for s in seeds}
        tested = [k for k in run.data.metrics if k.startswith("test_ppl")]
        assert len(tested) == 1
        assert len(client.get_metric_history(run.info.run_id, tested[0])) == 1
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        states = [s for (s,) in db.execute("SELECT status FROM runs")]
    assert "RUNNING" not in states

"""The search end to end with a real local Ray, a real Optuna study and the synthetic corpus."""

import contextlib
import csv
import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from cli_run import run_cli, start_cli
from mlflow.tracking import MlflowClient

from tune_lm.tracking.tags import TAG_KIND, TAG_STATUS, TAG_TRIAL
from tune_lm.tuning.layout import STUDY_FILE, STUDY_NAME

REPO_ROOT = Path(__file__).resolve().parents[1]

TINY_FIXED = """
fixed:
  epochs: {epochs}
  nlayers: 1
  emsize: 16
  batch_size: 8
  bptt: 10
  dropout: 0.0
  max_tokens_per_epoch: {tokens}
"""


def write_space(tmp_path, body, epochs=3, tokens=1600, name="space.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body) + TINY_FIXED.format(epochs=epochs, tokens=tokens))
    return path


def run_search(*flags, timeout=600, tracking=None, **kwargs):
    env = {"RAY_DEDUP_LOGS": "0"}
    if tracking:  # else each test's MLFLOW_TRACKING_URI (see the fixture below)
        env["MLFLOW_TRACKING_URI"] = tracking
    return run_cli("search", *flags, timeout=timeout, env=env, **kwargs)


@pytest.fixture(autouse=True)
def local_tracking(monkeypatch, tmp_path):
    """Searches log to a throwaway SQLite store, never into the repository."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


def read_summary(folder):
    with open(folder / "summary.csv") as handle:
        return list(csv.DictReader(handle))


def load_study(folder):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / STUDY_FILE))
    )
    return optuna.load_study(study_name=STUDY_NAME, storage=storage)


@pytest.mark.slow
def test_asha_stops_trials_and_optuna_proposes(asha_search):
    done, folder = asha_search
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = read_summary(folder)
    assert len(rows) == 8
    statuses = [row["status"] for row in rows]
    assert any(s.startswith("stopped early by ASHA") for s in statuses), statuses
    assert any(s == "completed" for s in statuses), statuses
    # The winner is the lowest validation perplexity, and only it was scored on test.
    best = min(rows, key=lambda r: float(r["best_val_ppl"]))
    assert best["test_ppl"] and float(best["test_ppl"]) > 1
    assert sum(1 for r in rows if r["test_ppl"]) == 1
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["best_trial"]["trial_id"] == best["trial_id"]
    # The Optuna study, persisted in the experiment folder, saw every trial: early-stopped
    # ones as PRUNED with their per-epoch values, full ones as COMPLETE.
    study = load_study(folder)
    states = [t.state for t in study.trials]
    assert len(states) == 8
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(pruned) == sum(s.startswith("stopped early") for s in statuses)
    assert len(pruned) + len(complete) == 8
    assert all(t.intermediate_values for t in pruned)
    assert len({(t.params["model"], t.params["nhid"], t.params["lr"]) for t in study.trials}) == 8
    # Each Optuna trial names its Tune trial (so the study can be closed from ASHA's ledger)
    assert sorted(t.user_attrs.get("tune_trial_id") for t in study.trials) == sorted(
        row["trial_id"] for row in rows)
    assert "best trial" in done.stdout


@pytest.mark.slow
def test_trials_cut_by_the_time_budget_are_not_called_asha_stops(tmp_path):
    """Only ASHA's own record makes a trial "stopped early by ASHA" (and PRUNED in
    Optuna); a trial the time budget cut is labelled so, and is FAIL for TPE."""
    space = write_space(tmp_path, """
        data: synthetic
        seed: 2
        searcher: {type: optuna, sampler: random}
        scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
        budget: {num_samples: 12, max_concurrent: 2, time_budget: 40s}
        resources: {cpus_per_trial: 1}
        parameters:
          lr: {loguniform: [0.5, 40.0]}
    """, epochs=6, tokens=40000)  # fmt: skip
    done = run_search("--space", str(space), "--storage", str(tmp_path / "runs"), "--name", "b")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = tmp_path / "runs" / "b"
    rows = read_summary(folder)
    stops = folder / "asha_stops.jsonl"  # absent when ASHA stopped nothing
    lines = stops.read_text().splitlines() if stops.is_file() else []
    ledger = {json.loads(line)["trial_id"] for line in lines}
    by_asha = {r["trial_id"] for r in rows if r["status"].startswith("stopped early by ASHA")}
    assert by_asha == ledger & {r["trial_id"] for r in rows}
    cut = [r for r in rows if "by the time budget" in r["status"]]  # before any result too
    for row in rows:  # every trial is accounted for by what ended it
        assert (row["status"] == "completed" or row["trial_id"] in by_asha
                or row in cut), row  # fmt: skip
    states = [t.state.name for t in load_study(folder).trials]
    assert states.count("PRUNED") == len(by_asha), states
    assert states.count("FAIL") >= len(cut), states
    assert "RUNNING" not in states, states  # the budget's cuts are closed in the study
    # ... and in MLflow: every trial's run ends, tagged with the summary's status.
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("b").experiment_id])
    trial_runs = {r.data.tags[TAG_TRIAL]: r for r in runs if r.data.tags[TAG_KIND] == "trial"}
    for row in rows:
        run = trial_runs[row["trial_id"]]
        assert run.data.tags[TAG_STATUS] == row["status"].split(":")[0], row
        assert run.info.status == ("KILLED" if row in cut else "FINISHED"), row
    # --extend 1 runs one more trial under the space's time budget afresh (Tune restored
    # the spent one and ran nothing), and every earlier trial stays in the summary.
    done = run_search("--extend", "1", "--storage", str(tmp_path / "runs"), "--name", "b")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    after = read_summary(folder)
    new = [r for r in after if r["trial_id"] not in {r["trial_id"] for r in rows}]
    assert len(after) == len(rows) + 1 and len(new) == 1, (rows, after)
    assert "time budget" not in new[0]["status"] and new[0]["epochs_run"] != "0", new


@pytest.mark.slow
def test_grid_study_repeats_and_reports_every_configuration(tmp_path):
    """A grid with repeats: each configuration runs once per seed (seed, seed + 1), is
    scored on test at 1 and 2 epochs, and the table gives each cell's mean and spread."""
    space = write_space(tmp_path, """
        data: synthetic
        seed: 7
        searcher: {type: grid}
        scheduler: {type: fifo}
        budget: {num_samples: 2, max_concurrent: 2}
        parameters:
          model: {grid: [LSTM, GRU]}
          nhid: {grid: [8, 16]}
        test_at_epochs: [1]
    """, epochs=2)  # fmt: skip
    done = run_search("--space", str(space), "--storage", str(tmp_path / "runs"), "--name", "g")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = tmp_path / "runs" / "g"
    rows = read_summary(folder)
    assert sorted((r["model"], r["nhid"], r["seed"]) for r in rows) == [
        (model, nhid, seed) for model in ("GRU", "LSTM") for nhid in ("16", "8")
        for seed in ("7", "8")
    ]  # fmt: skip
    for row in rows:  # each run scored on its own best weights, at 1 and 2 epochs
        assert row["status"] == "completed"
        assert float(row["test_ppl"]) > 1 and float(row["test_ppl_epoch1"]) > 1
    for model in ("LSTM", "GRU"):  # other seeds, other runs
        assert len({r["best_val_ppl"] for r in rows if r["model"] == model}) == 4
    table = (folder / "grid_table.md").read_text()
    assert "| run | LSTM | GRU |" in table, table
    assert "nhid 8, 1 epoch" in table and "nhid 16, 2 epochs" in table, table
    assert "2 seeds" in table and "±" in table, table
    # The same name again, without --resume, is refused before anything is touched.
    files_before = sorted(p.name for p in folder.iterdir())
    again = run_search("--space", str(space), "--storage", str(tmp_path / "runs"), "--name", "g")
    assert again.returncode == 2 and "exists already" in again.stderr
    assert sorted(p.name for p in folder.iterdir()) == files_before


@pytest.mark.slow
def test_resume_without_experiment_and_bad_flags_exit_2(tmp_path):
    space = write_space(tmp_path, "data: synthetic\nparameters: {lr: {choice: [1.0, 2.0]}}\n")
    (tmp_path / "runs").mkdir()
    done = run_search("--space", str(space), "--num-samples", "0")
    assert done.returncode == 2 and "--num-samples" in done.stderr
    done = run_search("--space", str(space), "--storage", str(tmp_path / "runs"), "--resume")
    assert done.returncode == 2 and "no experiment to resume" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_search("--space", str(tmp_path / "missing.yaml"))
    assert done.returncode == 2 and "missing.yaml" in done.stderr
    storage = tmp_path / "fresh"
    done = run_search("--space", str(space), "--storage", str(storage),
                      "--tracking-uri", "http://127.0.0.1:9")  # fmt: skip
    assert done.returncode == 2 and "does not answer" in done.stderr
    assert not storage.exists()  # nothing written before the check


def checkpoints(folder):
    """{trial folder name: set of its checkpoint folders}, as the trials upload them."""
    return {
        trial.name: {c.name for c in trial.glob("checkpoint_*")}
        for trial in folder.glob("train_trial_*")
    }


def epochs_reported(folder):
    """{trial folder name: epochs of its results, in order} (written when a trial ends)."""
    reported = {}
    for result_file in folder.glob("train_trial_*/result.json"):
        lines = [json.loads(line) for line in result_file.read_text().splitlines() if line]
        reported[result_file.parent.name] = [line["epoch"] for line in lines]
    return reported


@pytest.mark.slow
def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path, mlflow_server):
    """SIGKILL of the driver and its local Ray once a trial has finished, then --resume:
    finished trials are not trained again, none restarts from scratch, and Optuna and the
    MLflow server hold each trial once (one run each, no evaluation logged twice)."""
    space = write_space(tmp_path, """
        data: synthetic
        seed: 5
        searcher: {type: optuna, sampler: random}
        scheduler: {type: fifo}
        budget: {num_samples: 4, max_concurrent: 2}
        resources: {cpus_per_trial: 1}
        parameters:
          lr: {loguniform: [1.0, 20.0]}
          nhid: {choice: [400]}      # slow enough (seconds per trial) to be killed mid-search
    """, epochs=4, tokens=16000)  # fmt: skip
    storage, folder = tmp_path / "runs", tmp_path / "runs" / "killed"
    flags = ["--space", str(space), "--storage", str(storage), "--name", "killed",
             "--tracking-uri", mlflow_server]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    driver = start_cli("search", *flags, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        final = "checkpoint_000003"  # a trial's 4th and last evaluation
        while time.monotonic() < deadline:
            assert driver.poll() is None, "the search ended before it could be killed"
            if any(final in names for names in checkpoints(folder).values()):
                break
            time.sleep(0.2)
        time.sleep(6.0)  # past the driver's next experiment snapshot (every 5 s)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the driver and the Ray it started
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    before = checkpoints(folder)
    finished_before = {trial for trial, names in before.items() if final in names}
    assert finished_before and len(finished_before) < 4, before

    pinned = {name: (folder / name).stat().st_mtime_ns for name in ("space.json", "search.json")}
    done = run_search(*flags, "--resume")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Tune's restore re-uploads every .json at the root at each snapshot, non-atomically
    # (a kill then left search.json empty): ours are left out, so never rewritten.
    assert {name: (folder / name).stat().st_mtime_ns for name in pinned} == pinned
    rows = read_summary(folder)
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows), rows
    after = checkpoints(folder)
    assert len(after) == 4  # no trial started twice, no folder of a lost attempt left
    for trial in finished_before:  # finished before the kill: not trained again
        assert after[trial] == before[trial]
    for trial, epochs in epochs_reported(folder).items():  # none restarted from scratch
        assert epochs.count(1.0) == 1 and epochs[-1] == 4.0, (trial, epochs)
    study = load_study(folder)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    assert [r.info.status for r in runs if r.data.tags[TAG_KIND] == "search"] == ["FINISHED"]
    children = [r for r in runs if r.data.tags[TAG_KIND] == "trial"]
    assert len({c.data.tags[TAG_TRIAL] for c in children}) == len(children) == 4  # one each
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_ppl")]
        assert steps == sorted(set(steps)) and child.info.status == "FINISHED", steps


@pytest.mark.slow
def test_multi_objective_search_returns_the_pareto_set(tmp_path):
    space = write_space(tmp_path, """
        data: synthetic
        seed: 4
        objectives: [val_ppl, epoch_time_s]
        searcher: {type: optuna, sampler: nsga2}
        scheduler: {type: asha, grace_period: 1, reduction_factor: 3}
        budget: {num_samples: 6, max_concurrent: 2}
        resources: {cpus_per_trial: 1}
        parameters:
          nhid: {choice: [8, 64, 256]}
          lr: {loguniform: [1.0, 20.0]}
    """, epochs=3)  # fmt: skip
    done = run_search("--space", str(space), "--storage", str(tmp_path / "runs"), "--name", "mo")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "mo" / "summary.json").read_text())
    trials, pareto = summary["trials"], summary["pareto_trials"]
    assert summary["objectives"] == ["val_ppl", "epoch_time_s"] and pareto
    points = {t["trial_id"]: (t["best_val_ppl"], t["epoch_time_s"]) for t in trials}
    for member in pareto:  # nobody is better on both objectives...
        mine = points[member["trial_id"]]
        assert not any(p[0] <= mine[0] and p[1] <= mine[1] and p != mine for p in points.values())
        assert member["test_ppl"] > 1  # ...and each Pareto trial was scored on test
    pareto_ids = {m["trial_id"] for m in pareto}
    for trial_id, point in points.items():  # everyone else is dominated by a Pareto trial
        if trial_id not in pareto_ids and all(v == v and v < float("inf") for v in point):
            assert any(points[p][0] <= point[0] and points[p][1] <= point[1] for p in pareto_ids)
    study = load_study(tmp_path / "runs" / "mo")
    assert len(study.directions) == 2
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(len(t.values) == 2 for t in complete)
    # The sampler learns from every trial ASHA stopped: COMPLETE with the values it was
    # judged on at its rung, every evaluation's values kept as user attributes.
    by_asha = [t for t in trials if t["status"].startswith("stopped early by ASHA")]
    stopped = [t for t in study.trials if "stopped_at_epoch" in t.user_attrs]
    assert by_asha and len(stopped) == len(by_asha), [t["status"] for t in trials]
    for trial in stopped:
        epoch = trial.user_attrs["stopped_at_epoch"]
        assert trial.state == optuna.trial.TrialState.COMPLETE and epoch < 3
        assert trial.values == trial.user_attrs[f"values_at_epoch_{epoch:g}"]
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all("values_at_epoch_1" in t.user_attrs for t in complete)

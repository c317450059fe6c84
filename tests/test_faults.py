"""Fault injection with a real local Ray: a trial that diverges, one whose process is
killed mid-epoch (retried from its checkpoint, ending exactly like an unbroken run) and
one that keeps raising (failed after its retries) — and the search goes on."""

import contextlib
import json
import math
import os
import random
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from cli_run import run_cli, start_cli
from conftest import stop_process  # noqa: E402  (tests/ is on sys.path)
from mlflow.tracking import MlflowClient

from tune_lm.lm import metrics as M
from tune_lm.lm.data import load_corpus
from tune_lm.lm.fit import fit
from tune_lm.tuning.layout import STUDY_FILE, STUDY_NAME
from tune_lm.tuning.space_yaml import load_space

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
    done = run_cli("search", "--space", space_file, "--storage", tmp_path / "runs",
                   "--tracking-uri", tracking, "--max-failures", "1",
                   env={"TUNE_LM_FAULTS": json.dumps(faults)})  # fmt: skip
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


KILL_SPACE = """
name: {name}
data: synthetic
seed: 1
searcher: {{type: optuna, sampler: tpe, n_startup_trials: 3}}
scheduler: {{type: fifo}}
budget: {{num_samples: 6, max_concurrent: 2}}
resources: {{cpus_per_trial: 1}}
fixed: {{epochs: 4, nlayers: 1, emsize: 16, nhid: 16, batch_size: 8, bptt: 10, dropout: 0.0,
        max_tokens_per_epoch: 30000}}
parameters:
  lr: {{loguniform: [1.0, 20.0]}}
"""


def test_a_trial_cut_between_retries_is_reported_with_its_error(tmp_path):
    """A time budget that stops a trial between two failed attempts leaves Tune no error of
    its own for it: its last attempt's error (Tune's error.txt) names what happened, not
    "stopped by the time budget"."""
    from types import SimpleNamespace

    from tune_lm.tuning.tuner import trial_outcomes

    (tmp_path / "cut.yaml").write_text(KILL_SPACE.format(name="cut"))
    space = load_space(str(tmp_path / "cut.yaml"))
    retried, untouched = tmp_path / "retried", tmp_path / "untouched"
    retried.mkdir()
    untouched.mkdir()
    (retried / "error.txt").write_text("Traceback ...\nRuntimeError: can't allocate memory\n")
    results = [SimpleNamespace(config={"lr": 2.0}, metrics={"trial_id": name}, path=str(path),
                               error=None, metrics_dataframe=None)
               for name, path in (("retried", retried), ("untouched", untouched))]  # fmt: skip
    errors = {o.trial_id: o.error for o in trial_outcomes(results, space)}
    assert errors["untouched"] is None
    assert errors["retried"].endswith("RuntimeError: can't allocate memory")


def launch(tmp_path, name, *extra):
    """The search as a terminal would run it: its own process group (Ctrl-C reaches the
    whole group), output in a file."""
    log = open(tmp_path / f"{name}.log", "a")  # noqa: SIM115 (closed with the process)
    return start_cli("search", "--space", str(tmp_path / f"{name}.yaml"), "--storage",
                     str(tmp_path / "runs"), "--tracking-uri",
                     f"sqlite:///{tmp_path / 'mlflow.db'}", *extra, stdout=log,
                     stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True)  # fmt: skip


def agree_on_trials(tmp_path, name, expected):
    """Ray's results, the Optuna study and MLflow hold the same ``expected`` trials, once."""
    folder = tmp_path / "runs" / name
    summary = json.loads((folder / "summary.json").read_text())["trials"]
    ids = [row["trial_id"] for row in summary]
    assert len(ids) == expected == len(set(ids)), ids
    assert all(row["status"] == "completed" for row in summary), summary
    study = optuna.load_study(study_name=STUDY_NAME, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / STUDY_FILE))))  # fmt: skip
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == expected, [t.state for t in study.trials]
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], "tags.`tune_lm.kind` = 'trial'")
    run_ids = sorted(run.data.tags["tune_lm.trial_id"] for run in runs)
    assert run_ids == sorted(ids)
    parents = client.search_runs([experiment.experiment_id], "tags.`tune_lm.kind` = 'search'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def wait_for_results(folder, timeout=300):
    deadline = time.time() + timeout
    while not list(folder.glob("*/result.json")):
        assert time.time() < deadline, "no trial reported in time"
        time.sleep(0.5)


@pytest.mark.slow
def test_ctrl_c_stops_gracefully_naming_the_resume_command(tmp_path):
    (tmp_path / "sigint.yaml").write_text(KILL_SPACE.format(name="sigint"))
    search = launch(tmp_path, "sigint")
    wait_for_results(tmp_path / "runs" / "sigint")
    time.sleep(2)
    os.killpg(search.pid, signal.SIGINT)  # Ctrl-C in the terminal
    assert search.wait(timeout=180) == 130
    output = (tmp_path / "sigint.log").read_text()
    assert "interrupted (Ctrl-C)" in output and "--resume" in output, output[-3000:]
    # tune_lm's resume command only: Ray's Python-API hint is not shown, nor logged.
    assert "Tuner.restore" not in output + (tmp_path / "runs" / "sigint" / "search.log").read_text()
    assert (tmp_path / "runs" / "sigint" / "summary.md").is_file()
    stop_process(search, signal.SIGKILL)  # the driver and the Ray it started
    # Ctrl-C, SIGTERM and SIGHUP take one graceful stop (private_api.fit_noting_interrupt):
    # the printed --resume after it is run to the end in test_resume.py (SIGTERM).
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sigint").experiment_id])
    assert runs and "RUNNING" not in {run.info.status for run in runs}


@pytest.mark.slow
def test_a_closed_terminal_stops_gracefully_and_leaves_no_running_mlflow_run(tmp_path):
    """SIGHUP to the group (the terminal closed, an ssh session dropped) after the console
    went away: the trials stop at their checkpoints, the MLflow runs end, the resume
    command goes to the experiment's log, exit 129. Before, SIGHUP ended the driver at
    once (its runs left RUNNING), and a console write would have failed the stop."""
    (tmp_path / "hangup.yaml").write_text(KILL_SPACE.format(name="hangup"))
    search = start_cli("search", "--space", str(tmp_path / "hangup.yaml"), "--storage",
                       str(tmp_path / "runs"), "--tracking-uri",
                       f"sqlite:///{tmp_path / 'mlflow.db'}", stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, cwd=REPO_ROOT, start_new_session=True)  # fmt: skip
    folder = tmp_path / "runs" / "hangup"
    wait_for_results(folder)
    search.stdout.close()  # the terminal is gone: every later console write fails
    search.stderr.close()
    os.killpg(search.pid, signal.SIGHUP)
    assert search.wait(timeout=180) == 129
    stop_process(search, signal.SIGKILL)  # anything it left
    log = (folder / "search.log").read_text()
    assert "interrupted (SIGHUP)" in log and "--resume" in log, log[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("hangup")
    runs = client.search_runs([experiment.experiment_id])
    statuses = {run.info.status for run in runs}
    assert "RUNNING" not in statuses and len(runs) >= 2, statuses
    [parent] = [r for r in runs if r.data.tags.get("tune_lm.kind") == "search"]
    assert parent.info.status == "KILLED"


@pytest.mark.slow
def test_driver_killed_at_random_moments_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    """SIGKILL (no chance to clean up) while the new MLflow store is being built (its
    schema: the cache's store template, empty here), then at random moments, each
    followed by --resume; the last run finishes. Start-up, trials and the end are all
    fair game. (A kill while the store was built once left a search.json pinning a store
    that was never made: every --resume was refused.)"""
    (tmp_path / "kills.yaml").write_text(KILL_SPACE.format(name="kills"))
    folder, cache = tmp_path / "runs" / "kills", tmp_path / "cache"
    monkeypatch.setenv("TUNE_LM_CACHE_DIR", str(cache))
    search = launch(tmp_path, "kills")
    deadline = time.time() + 120
    while not list(cache.glob("mlflow/.*.creating-*")):
        assert search.poll() is None and time.time() < deadline, "the store was never built"
        time.sleep(0.01)
    stop_process(search, signal.SIGKILL)
    assert not (tmp_path / "mlflow.db").exists()
    moments = random.Random(7).sample(range(4, 30), 2)
    completed = False
    for seconds in moments:
        search = launch(tmp_path, "kills", *(["--resume"] if folder.is_dir() else []))
        time.sleep(seconds)
        completed = search.poll() == 0
        stop_process(search, signal.SIGKILL)  # the driver and the Ray it started
        if completed:
            break
    if not completed:
        final = launch(tmp_path, "kills", *(["--resume"] if folder.is_dir() else []))
        assert final.wait(timeout=600) == 0, (tmp_path / "kills.log").read_text()[-3000:]
    agree_on_trials(tmp_path, "kills", expected=6)
    assert len(list((cache / "mlflow").iterdir())) == 1  # the template, whole, nothing else


def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    """Tune's checkpoint objects on a real trial folder: the newest is truncated (a crash
    mid-write on storage), so the trial resumes from the one before it."""
    import torch
    from ray import tune

    from tune_lm.tuning.trainable import STATE_FILE, load_latest_readable

    for index in range(3):
        folder = tmp_path / f"checkpoint_{index:06d}"
        folder.mkdir()
        torch.save({"epoch": index, "weights": torch.ones(3) * index}, folder / STATE_FILE)
    latest = tmp_path / "checkpoint_000002" / STATE_FILE
    latest.write_bytes(latest.read_bytes()[:40])  # truncated
    state = load_latest_readable(tune.Checkpoint.from_directory(str(latest.parent)))
    assert state["epoch"] == 1
    assert "cannot be read" in caplog.text and "instead of" in caplog.text
    for folder in tmp_path.glob("checkpoint_*"):  # nothing readable: start from scratch
        (folder / STATE_FILE).write_bytes(b"garbage")
    assert load_latest_readable(tune.Checkpoint.from_directory(str(latest.parent))) is None


def test_low_disk_space_is_refused_before_a_checkpoint_write(tmp_path, monkeypatch):
    from tune_lm.lm.errors import ConfigError, TuneLMError
    from tune_lm.tuning.disk_reserve import check_free_space, check_reserve_fits, reserve_bytes

    check_free_space(tmp_path, 10**6)  # the default reserve (200 MB) is there
    check_reserve_fits(tmp_path / "runs" / "new")
    monkeypatch.setenv("TUNE_LM_MIN_FREE_MB", str(10**12))  # more than any disk has
    with pytest.raises(TuneLMError, match="low disk space.*--resume"):
        check_free_space(tmp_path / "trial" / "not_yet_made", 10**6)  # its disk all the same
    # A search checks it before it starts (every trial failed at its first checkpoint).
    with pytest.raises(ConfigError, match="TUNE_LM_MIN_FREE_MB keeps .* every checkpoint"):
        check_reserve_fits(tmp_path / "runs" / "new")
    for bad in ("abc", "-1", "inf", "nan", ""):  # the search checks it before it starts
        monkeypatch.setenv("TUNE_LM_MIN_FREE_MB", bad)
        with pytest.raises(TuneLMError, match="TUNE_LM_MIN_FREE_MB=.*e.g. 200"):
            reserve_bytes()


def test_trial_folders_lost_with_a_killed_driver_are_removed(tmp_path):
    """A trial started after Tune's last snapshot is created again by --resume in a new
    folder; the lost attempt's folder goes, and nothing else in the experiment does."""
    from tune_lm.tuning.experiment import remove_lost_trial_folders

    kept = tmp_path / "train_trial_a_0_2026-11-28_10-00-00"
    lost = tmp_path / "train_trial_b_1_2026-11-28_10-00-01"
    again = tmp_path / "train_trial_b_1_2026-11-28_10-00-09"
    for folder in (kept, again):
        (folder / "checkpoint_000001").mkdir(parents=True)
        (folder / "params.json").write_text("{}")
    (lost / "checkpoint_000000").mkdir(parents=True)  # all the lost attempt wrote
    (tmp_path / "confirm" / "x").mkdir(parents=True)  # not a trial folder
    (tmp_path / "report").mkdir()
    (tmp_path / "space.json").write_text("{}")
    removed = remove_lost_trial_folders(str(tmp_path), [kept.name, again.name])
    assert removed == [lost.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [kept.name, again.name, "confirm", "report", "space.json"])
    assert remove_lost_trial_folders("s3://bucket/x", []) == []


def test_a_resume_of_an_experiment_killed_before_its_first_state_starts_it_again(tmp_path):
    """Killed after Tune's tuner.pkl but before any state: --resume starts it again, and
    the new start does not then refuse the folder as taken (seen in CI: exit 2)."""
    from tune_lm.tuning.tuner import check_experiment

    folder = tmp_path / "runs" / "early"
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(b"not a state")
    assert check_experiment(str(folder), resume=True) is False  # start it again
    assert check_experiment(str(folder), resume=False) is False  # and the start may proceed


def test_a_bad_fault_setting_is_refused_before_a_search_starts(monkeypatch):
    """TUNE_LM_FAULTS that is not a list of faults failed every trial after Ray started."""
    from tune_lm.lm.errors import ConfigError
    from tune_lm.tuning.faults import ENV, check_env

    check_env()  # unset
    monkeypatch.setenv(ENV, '[{"kind": "kill", "epoch": 1, "after_s": 0.5}]')
    check_env()
    for bad in ("garbage", '{"kind": "nan"}', '[{"kind": "boom", "epoch": 1}]',
                '[{"kind": "nan"}]'):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(ConfigError, match=f'{ENV}=.* is not a JSON list of faults, each '
                                              '{"kind": "nan" | "raise" | "kill"'):
            check_env()


@pytest.mark.slow
def test_ctrl_c_twice_while_the_results_are_recorded_ends_the_run_and_names_resume(tmp_path):
    """Two SIGINTs to the group as the search records its results (`timeout` passes its
    group's SIGINT on to the driver, which then gets it twice): the second one interrupted
    the clean-up, leaving the search's MLflow run RUNNING and no resume command."""
    (tmp_path / "twice.yaml").write_text(textwrap.dedent("""
        name: twice
        data: synthetic
        budget: {num_samples: 2, max_concurrent: 2}
        resources: {cpus_per_trial: 1}
        fixed: {epochs: 1, nlayers: 1, emsize: 16, nhid: 16, batch_size: 8, bptt: 10,
                max_tokens_per_epoch: 1600}
        parameters:
          lr: {loguniform: [1.0, 20.0]}
    """))
    search = launch(tmp_path, "twice")
    log, deadline = tmp_path / "twice.log", time.time() + 300
    while "writing the report" not in log.read_text():
        assert time.time() < deadline and search.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)
    for _ in range(2):  # as `timeout` in the group would: the group's, then its own
        with contextlib.suppress(ProcessLookupError):
            os.killpg(search.pid, signal.SIGINT)
        time.sleep(0.02)
    assert search.wait(timeout=180) == 130
    stop_process(search, signal.SIGKILL)  # the Ray it started
    output = log.read_text()
    assert "Continue with:" in output and "--resume" in output, output[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("twice").experiment_id])
    assert runs and "RUNNING" not in {run.info.status for run in runs}, output[-3000:]

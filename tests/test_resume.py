"""A stopped search resumes exactly as it started: the printed command is complete, the
corpus is the one it started with (a changed one is refused), and flags given anew that
disagree with the experiment are refused, never half applied. SIGTERM stops a search as
Ctrl-C does."""

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pytest
from cli_run import run_cli, start_cli
from conftest import stop_process  # noqa: E402  (tests/ is on sys.path)
from mlflow.tracking import MlflowClient

from tune_lm.lm.data import load_corpus, write_corpus_folder
from tune_lm.lm.synthetic import make_synthetic_corpus
from tune_lm.tuning.layout import STUDY_FILE, STUDY_NAME

SPACE = """
name: resumed
searcher: {type: optuna, sampler: random}
scheduler: {type: fifo}
budget: {num_samples: 4, max_concurrent: 2}
resources: {cpus_per_trial: 1}
fixed: {epochs: 8, nlayers: 1, emsize: 16, nhid: 16, batch_size: 8, bptt: 10, dropout: 0.0,
        max_tokens_per_epoch: 30000}
parameters:
  lr: {loguniform: [1.0, 20.0]}
"""


def run(command, cwd, timeout=300):
    """A printed ``python -m tune_lm.search ...`` command, run as printed."""
    assert command[:3] == [sys.executable, "-m", "tune_lm.search"], command
    return run_cli("search", *command[3:], cwd=cwd, timeout=timeout)


@pytest.mark.slow
def test_sigterm_then_the_printed_resume_command_keeps_corpus_and_settings(tmp_path):
    corpus_a, corpus_b = tmp_path / "corpus_a", tmp_path / "corpus_b"
    # Same vocabulary size: a resume on the wrong one would run without any error.
    write_corpus_folder(make_synthetic_corpus(train_tokens=40000, seed=1), corpus_a)
    write_corpus_folder(make_synthetic_corpus(train_tokens=40000, seed=2), corpus_b)
    (tmp_path / "space.yaml").write_text(textwrap.dedent(SPACE))
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log = open(tmp_path / "search.log", "w")  # noqa: SIM115 (closed with the process)
    search = start_cli("search", "--space", "space.yaml", "--data", "corpus_a", "--storage",
                       "runs", "--tracking-uri", tracking, stdout=log, stderr=subprocess.STDOUT,
                       cwd=tmp_path, start_new_session=True)  # fmt: skip
    folder = tmp_path / "runs" / "resumed"
    deadline = time.time() + 300
    while not list(folder.glob("*/result.json")):
        assert time.time() < deadline and search.poll() is None, (
            tmp_path / "search.log").read_text()[-3000:]
        time.sleep(0.5)
    # A second driver on the running experiment (a --resume typed too early) is refused.
    second = run_cli("search", "--resume", "--storage", "runs", "--name", "resumed",
                     cwd=tmp_path, timeout=120)  # fmt: skip
    assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
    assert "being run by another search now (pid " in " ".join(second.stderr.split())
    assert search.poll() is None  # the first one runs on, untouched
    # SIGTERM as `timeout` sends it: to the driver's whole process group (kill and
    # Kubernetes send it to the driver alone, a subset). It used to reach the local Ray's
    # processes too, whose death ended the driver (exit 1) before its graceful stop.
    os.killpg(search.pid, signal.SIGTERM)
    assert search.wait(timeout=180) == 143, (tmp_path / "search.log").read_text()[-3000:]
    stop_process(search, signal.SIGKILL)  # the Ray it started
    output = (tmp_path / "search.log").read_text()
    assert "interrupted (SIGTERM)" in output, output[-3000:]
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("resumed")
    parents = client.search_runs([experiment.experiment_id], "tags.`tune_lm.kind` = 'search'")
    assert [p.info.status for p in parents] == ["KILLED"]
    # Every trial's run has ended too, as the summary says (none left RUNNING).
    children = client.search_runs([experiment.experiment_id], "tags.`tune_lm.kind` = 'trial'")
    assert children and all(c.info.status in ("FINISHED", "KILLED") for c in children)
    statuses = [(c.data.tags["tune_lm.status"], c.info.status) for c in children]
    stopped = [c for c in children if c.data.tags["tune_lm.status"].startswith("stopped")]
    assert stopped and all("by SIGTERM" in c.data.tags["tune_lm.status"]
                           and c.info.status == "KILLED" for c in stopped), statuses  # fmt: skip

    resume_line = output.split("Continue with: ", 1)[1].splitlines()[0]
    command = shlex.split(resume_line)
    assert command[:3] == ["python", "-m", "tune_lm.search"] and "--resume" in command
    command[0] = sys.executable
    other_folder = tmp_path / "elsewhere"  # run from another folder: nothing relative
    other_folder.mkdir()

    refused = {
        "--data": run([*command, "--data", str(corpus_b)], other_folder),
        "--tracking-uri": run([*command, "--tracking-uri", f"sqlite:///{tmp_path / 'b.db'}"],
                              other_folder),  # fmt: skip
        "--log-checkpoints": run([*command, "--log-checkpoints", "all"], other_folder),
        "--num-samples": run([*command, "--num-samples", "9"], other_folder),
    }
    for flag, done in refused.items():
        assert done.returncode == 2, (flag, done.stderr[-2000:])
        assert flag in done.stderr and "Traceback" not in done.stderr, done.stderr
    train_file = corpus_a / "train.txt"
    original = train_file.read_bytes()
    train_file.write_bytes(original + b"w1 w2\n")  # the same corpus folder, other contents
    changed = run(command, other_folder)
    assert changed.returncode == 2 and "corpus" in changed.stderr, changed.stderr[-2000:]
    train_file.write_bytes(original)
    assert not (other_folder / "mlflow.db").exists()
    store = tmp_path / "mlflow.db"  # moved or deleted: no empty store is made in its place
    store.rename(tmp_path / "moved.db")
    gone = run(command, other_folder)
    assert gone.returncode == 2 and "not there any more" in gone.stderr, gone.stderr[-2000:]
    assert not store.exists()
    (tmp_path / "moved.db").rename(store)

    resumed = run(command, other_folder, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    summary = json.loads((folder / "summary.json").read_text())["trials"]
    assert len(summary) == 4 and all(row["status"] == "completed" for row in summary)
    pinned = json.loads((folder / "search.json").read_text())
    assert pinned["data"] == str(corpus_a)
    assert pinned["fingerprint"] == load_corpus(str(corpus_a)).fingerprint
    assert json.loads((folder / "space.json").read_text())["data"] == str(corpus_a)
    parent = client.search_runs([experiment.experiment_id], "tags.`tune_lm.kind` = 'search'")
    assert [p.info.status for p in parent] == ["FINISHED"]
    study = optuna.load_study(study_name=STUDY_NAME, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / STUDY_FILE))))  # fmt: skip
    states = [t.state for t in study.trials]  # the stopped trials told once, when complete
    assert states == [optuna.trial.TrialState.COMPLETE] * 4, states
    assert not list(other_folder.iterdir())  # the resume wrote nothing where it ran


def test_the_printed_resume_command_pastes_into_a_shell_as_it_is():
    import argparse

    from tune_lm.tuning.request import resume_command

    args = argparse.Namespace(address="ray://head node:10001")
    command = resume_command(args, "/data/my runs/it's")
    assert shlex.split(command) == [
        "python", "-m", "tune_lm.search", "--resume", "--storage", "/data/my runs",
        "--name", "it's", "--address", "ray://head node:10001"]  # fmt: skip

"""A real two-node Ray cluster on this machine: trials spread over both nodes, and a
search survives losing the worker node."""

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import free_port, stop_process  # noqa: E402  (tests/ is on sys.path)
from mlflow.tracking import MlflowClient

from tune_lm.lm import metrics as M
from tune_lm.tracking.tags import TAG_KIND

RAY = [sys.executable, "-m", "ray.scripts.scripts"]
# Ray 2.60 turns token authentication on; every process of the cluster must use it, with
# the same token. The test makes its own (a fresh machine has no ~/.ray/auth_token, and
# `ray start` does not create one).
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # fmt: skip

SPACE = """
    data: synthetic
    seed: 9
    searcher: {type: optuna, sampler: random}
    scheduler: {type: fifo}
    budget: {num_samples: 4, max_concurrent: 2}
    resources: {cpus_per_trial: 1}
    fixed: {epochs: 4, nlayers: 1, emsize: 16, nhid: 400, batch_size: 8, bptt: 10,
            max_tokens_per_epoch: 12000}
    parameters:
      lr: {loguniform: [1.0, 20.0]}
"""


@pytest.fixture
def two_nodes(tmp_path):
    """A Ray head and a second node, separate `ray start --block` processes with one CPU
    each and a temp dir of their own; yields (address, the worker node's process).
    Both are always stopped, even on failure, and no other Ray on the machine is touched
    (no global `ray stop`)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp_dir = f"/tmp/rtl{port}"  # short: Ray's socket paths must stay under ~107 bytes
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats", "--block"]
    nodes = []
    try:
        nodes.append(subprocess.Popen(
            [*RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
             f"--temp-dir={temp_dir}", *common],
            env=RAY_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # its GCS and raylet share its process group
        ))  # fmt: skip
        time.sleep(6)
        nodes.append(subprocess.Popen(
            [*RAY, "start", f"--address={address}", *common],
            env=RAY_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # its raylet shares its process group: killable as a node
        ))  # fmt: skip
        time.sleep(6)
        assert all(node.poll() is None for node in nodes), "a Ray node did not start"
        yield address, nodes[1]
    finally:
        for node in reversed(nodes):
            stop_process(node, signal.SIGKILL)
        # Anything of this cluster that left its process group (found by its temp dir).
        subprocess.run(["pkill", "-9", "-f", temp_dir], capture_output=True)
        shutil.rmtree(temp_dir, ignore_errors=True)


def search_cmd(tmp_path, address, uri, name):
    space = tmp_path / f"{name}.yaml"
    space.write_text(textwrap.dedent(SPACE))
    return [sys.executable, "-m", "tune_lm.search", "--space", str(space), "--address", address,
            "--storage", str(tmp_path / "shared_storage"), "--name", name,
            "--tracking-uri", uri]  # fmt: skip


def trial_runs(client, name):
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    return [r for r in runs if r.data.tags.get(TAG_KIND) == "trial"]


@pytest.mark.slow
def test_trials_run_on_both_nodes(tmp_path, two_nodes, mlflow_server):
    address, _ = two_nodes
    done = subprocess.run(
        search_cmd(tmp_path, address, mlflow_server, "spread"), env=RAY_ENV, cwd=tmp_path,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = trial_runs(MlflowClient(mlflow_server), "spread")
    assert len(runs) == 4
    nodes = {run.data.tags["tune_lm.node_id"] for run in runs}
    assert len(nodes) == 2, nodes  # recorded node ids: both nodes trained trials


@pytest.mark.slow
def test_search_survives_losing_the_worker_node(tmp_path, two_nodes, mlflow_server):
    address, worker = two_nodes
    client = MlflowClient(mlflow_server)
    driver = subprocess.Popen(
        search_cmd(tmp_path, address, mlflow_server, "lost"), env=RAY_ENV, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # both nodes busy with a trial that has reported
            runs = [r for r in trial_runs(client, "lost") if M.VAL_PPL in r.data.metrics]
            if len({r.data.tags.get("tune_lm.node_id") for r in runs}) == 2:
                break
            assert driver.poll() is None, "the search ended before the node could be lost"
            time.sleep(0.3)
        stop_process(worker, signal.SIGKILL)  # the worker node dies mid-search
        output, _ = driver.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, output[-4000:]
    runs = trial_runs(client, "lost")
    trial_ids = [r.data.tags["tune_lm.trial_id"] for r in runs]
    assert len(trial_ids) == 4 == len(set(trial_ids))  # every trial recorded once
    for run in runs:  # every trial completed, the lost ones retried on the head node
        assert run.data.tags["tune_lm.status"] == "completed", run.data.tags
        assert run.data.metrics["epochs_run"] == 4

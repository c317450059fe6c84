"""Shared fixtures: tiny corpora and tiny configs so tests run in seconds on a CPU."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cli_run import run_cli

from tune_lm.lm.config import TrainConfig

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n 2 on 2 cores: one thread per worker, and for the commands it starts, or
    # OpenMP's spinning threads slow both workers (a 2 s bf16 test took 38 s in CI)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

TINY = {
    "data": "synthetic",
    "emsize": 16,
    "nhid": 16,
    "nlayers": 1,
    "dropout": 0.1,
    "epochs": 3,
    "batch_size": 8,
    "bptt": 10,
    "lr": 5.0,
    "threads": 1,
}


def pytest_collection_modifyitems(config, items):
    """GPU-marked tests are collected everywhere and skipped, with the reason, without CUDA."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False here")
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture
def tiny_config() -> TrainConfig:
    return TrainConfig.from_dict(TINY)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "ptb" / "train.txt").exists():
        pytest.skip(f"real corpora not found under {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def store_template(tmp_path_factory):
    """The empty MLflow store a search copies a new SQLite store from, built once per
    test worker (2 s of migrations) for every test's own cache (see isolated_cache)."""
    from tune_lm.tracking.sqlite_store import store_template as build

    before = os.environ.get("TUNE_LM_CACHE_DIR")
    os.environ["TUNE_LM_CACHE_DIR"] = str(tmp_path_factory.mktemp("template_cache"))
    try:
        return build()
    finally:
        os.environ.pop("TUNE_LM_CACHE_DIR")
        if before is not None:
            os.environ["TUNE_LM_CACHE_DIR"] = before


@pytest.fixture(autouse=True)
def isolated_cache(monkeypatch, tmp_path_factory, store_template):
    """Keep every test (and the processes it starts) off the user's ~/.cache/tune_lm, and
    off any Ray cluster the environment names: a test joins only the clusters it starts.
    Each test's cache starts with a copy of the worker's store template, as a user's
    cache holds one after the first search."""
    cache = tmp_path_factory.mktemp("cache")
    if store_template is not None:
        (cache / "mlflow").mkdir()
        shutil.copyfile(store_template, cache / "mlflow" / store_template.name)
    monkeypatch.setenv("TUNE_LM_CACHE_DIR", str(cache))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mlflow_server(root):
    """A real tracking server (SQLite backend, proxied artifact store) on 127.0.0.1,
    answering /health; returns (process, uri)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'store.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{uri}/health", timeout=2):
            return server, uri
        if server.poll() is not None or time.monotonic() > deadline:
            stop_process(server)
            raise AssertionError("the mlflow server did not start")
        time.sleep(0.5)


def stop_process(process, sig=signal.SIGTERM):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    process.wait(timeout=30)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on loopback, shared by the tests that need one."""
    server, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow_server"))
    try:
        yield uri
    finally:
        stop_process(server)


@pytest.fixture
def private_mlflow_server(tmp_path_factory):
    """(process, uri) of a server this one test may stop."""
    server, uri = start_mlflow_server(tmp_path_factory.mktemp("private_mlflow_server"))
    try:
        yield server, uri
    finally:
        stop_process(server)


ASHA_SPACE = """
data: synthetic
seed: 3
searcher: {type: optuna, sampler: tpe, n_startup_trials: 3}
scheduler: {type: asha, grace_period: 1, reduction_factor: 3}
budget: {num_samples: 8, max_concurrent: 2}
resources: {cpus_per_trial: 1}
fixed: {epochs: 4, nlayers: 1, emsize: 16, batch_size: 8, bptt: 10, dropout: 0.0,
        max_tokens_per_epoch: 1600}
parameters:
  model: {choice: [LSTM, GRU]}
  nhid: {choice: [8, 32]}
  lr: {loguniform: [0.5, 40.0]}
"""


@pytest.fixture(scope="session")
def asha_search(tmp_path_factory):
    """One real ASHA + TPE search (8 trials, synthetic corpus, local Ray), run once and
    shared by the tests that inspect its results: (completed process, experiment folder)."""
    root = tmp_path_factory.mktemp("asha_search")
    space = root / "space.yaml"
    space.write_text(ASHA_SPACE)
    done = run_cli("search", "--space", space, "--storage", root / "runs", "--name", "t",
                   env={"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"})
    return done, root / "runs" / "t"

"""Shared fixtures: tiny corpora and tiny configs so tests run in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from tune_lm.config import TrainConfig

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


@pytest.fixture
def tiny_config() -> TrainConfig:
    return TrainConfig.from_dict(TINY)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "ptb" / "train.txt").exists():
        pytest.skip(f"real corpora not found under {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def isolated_cache(monkeypatch, tmp_path_factory):
    """Keep every test (and the processes it starts) off the user's ~/.cache/tune_lm."""
    monkeypatch.setenv("TUNE_LM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))

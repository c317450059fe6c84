"""A tiny corpus folder and an environment kept off ~/.cache, the real data folder and the
network, shared by the data tests (test_data.py, test_download.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = {
    # "the cat sat / (empty line) / the dog" with no final newline
    "train": "the cat sat\n\nthe dog",
    "valid": "the bird\n",  # "bird" is not in train -> <unk>
    "test": " cat \n",
}


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Keep every test off ~/.cache, the real data dir and the network."""
    for name in ("TUNE_LM_DATA_DIR", "TUNE_LM_DOWNLOAD_MIRROR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TUNE_LM_CACHE_DIR", str(tmp_path / "cache"))
    # Run from an empty folder so a name like "ptb" never matches a folder in the cwd.
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


def make_folder(folder: Path, splits: dict[str, str | bytes] = TINY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in splits.items():
        raw = text if isinstance(text, bytes) else text.encode("utf-8")
        (folder / f"{split}.txt").write_bytes(raw)
    return folder

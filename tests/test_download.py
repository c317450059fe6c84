"""Corpora downloaded from a mirror (a local HTTP server here): checksums, the cache, and
the offline message."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest
from corpus_kit import TINY, isolated_env, make_folder  # noqa: F401 (an autouse fixture)

from tune_lm.lm import data
from tune_lm.lm.data import load_corpus
from tune_lm.lm.errors import DataError


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server over tmp_path/mirror, serving the tiny corpus as ptb/*.txt."""
    root = tmp_path / "mirror"
    make_folder(root / "ptb")
    requests = []

    class Handler(_QuietHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    checksums = {
        split: hashlib.sha256((root / "ptb" / f"{split}.txt").read_bytes()).hexdigest()
        for split in data.SPLITS
    }
    yield base, checksums, requests
    server.shutdown()
    server.server_close()


def test_download_with_right_checksums(tmp_path, mirror):
    base, checksums, _ = mirror
    dest = tmp_path / "dl" / "ptb"
    sources = {split: f"{base}/ptb/{split}.txt" for split in data.SPLITS}
    data.download_corpus("ptb", dest, sources, expected_sha256=checksums)
    assert sorted(p.name for p in dest.iterdir()) == ["test.txt", "train.txt", "valid.txt"]
    assert (dest / "train.txt").read_text() == TINY["train"]


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, mirror):
    base, checksums, _ = mirror
    dest = tmp_path / "dl" / "ptb"
    sources = {split: f"{base}/ptb/{split}.txt" for split in data.SPLITS}
    wrong = {**checksums, "valid": "0" * 64}
    with pytest.raises(DataError) as info:
        data.download_corpus("ptb", dest, sources, expected_sha256=wrong)
    message = str(info.value)
    assert sources["valid"] in message and "0" * 64 in message and checksums["valid"] in message
    assert not dest.exists()


def test_mirror_env_downloads_into_cache_once(tmp_path, mirror, monkeypatch):
    base, checksums, requests = mirror
    monkeypatch.setenv("TUNE_LM_DOWNLOAD_MIRROR", base + "/")
    monkeypatch.setitem(data.CORPUS_SHA256, "ptb", checksums)
    corpus = load_corpus("ptb")
    assert corpus.name == "ptb" and corpus.train.numel() == 8
    assert (tmp_path / "cache" / "ptb" / "test.txt").is_file()
    assert len(requests) == 3
    load_corpus("ptb")
    assert len(requests) == 3  # the second load finds the cached folder


def test_unreachable_mirror_explains_offline_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNE_LM_DOWNLOAD_MIRROR", "http://127.0.0.1:9")  # closed port
    with pytest.raises(DataError) as info:
        load_corpus("ptb")
    message = str(info.value)
    expected = [str(tmp_path / "cache" / "ptb"), "train.txt", "valid.txt", "test.txt", "--data"]
    assert all(part in message for part in expected)
    assert "TUNE_LM_DATA_DIR" in message
    assert not (tmp_path / "cache" / "ptb").exists()

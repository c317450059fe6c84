"""Tests of tune_lm.lm.data: tokenising, vocabulary, errors, caching, where corpora are
found (downloads: test_download.py)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import torch
from corpus_kit import TINY, isolated_env, make_folder  # noqa: F401 (an autouse fixture)
from hypothesis import given
from hypothesis import strategies as st

from tune_lm.lm import data
from tune_lm.lm.corpus import Corpus, tokenize
from tune_lm.lm.data import load_corpus, write_corpus_folder
from tune_lm.lm.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

def words(corpus: Corpus, split: str) -> list[str]:
    return [corpus.vocab[index] for index in corpus.split(split).tolist()]


def reference_tokenize(text: str) -> list[str]:
    """The convention spelled out line by line, to check the real tokeniser against."""
    lines = text.split("\n")
    if lines[-1] == "":  # a trailing newline (or empty text) adds no line
        lines.pop()
    return [word for line in lines for word in [*line.split(), "<eos>"]]


def test_tokenize_examples():
    assert tokenize("") == []
    assert tokenize("\n") == ["<eos>"]
    assert tokenize("a b") == ["a", "b", "<eos>"]
    assert tokenize("a b\n") == ["a", "b", "<eos>"]
    assert tokenize(" a \n\n b\t c\n\n") == ["a", "<eos>", "<eos>", "b", "c", "<eos>", "<eos>"]


@given(st.text(alphabet="ab \t\n\r\x0b\u00e9\u2028", max_size=40))
def test_tokenize_matches_line_by_line_convention(text):
    assert tokenize(text) == reference_tokenize(text)


def test_tiny_folder_counts_vocab_and_unk(tmp_path, caplog):
    folder = make_folder(tmp_path / "tiny")
    with caplog.at_level(logging.INFO, logger="tune_lm.lm.data"):
        corpus = load_corpus(str(folder))
    assert corpus.name == str(folder)
    # Vocabulary from train only, in order of first appearance; <unk> appended for valid.
    assert corpus.vocab == ("the", "cat", "sat", "<eos>", "dog", "<unk>")
    assert corpus.ntokens == 6
    assert corpus.train.tolist() == [0, 1, 2, 3, 3, 0, 4, 3]
    assert words(corpus, "valid") == ["the", "<unk>", "<eos>"]
    assert words(corpus, "test") == ["cat", "<eos>"]
    assert dict(corpus.unk_counts) == {"valid": 1, "test": 0}
    assert "1 valid tokens" in caplog.text
    assert all(corpus.split(s).dtype == torch.int64 for s in data.SPLITS)
    assert corpus.word_to_id()["dog"] == 4
    assert len(corpus.fingerprint) == 64
    with pytest.raises(DataError, match="train, valid, test"):
        corpus.split("dev")


def test_existing_unk_in_train_is_reused(tmp_path):
    folder = make_folder(tmp_path / "c", {"train": "a <unk> b\n", "valid": "z\n", "test": "a\n"})
    corpus = load_corpus(str(folder))
    assert corpus.vocab == ("a", "<unk>", "b", "<eos>")
    assert words(corpus, "valid") == ["<unk>", "<eos>"]


def test_no_unk_added_when_every_word_is_known(tmp_path):
    folder = make_folder(tmp_path / "c", {"train": "a b\n", "valid": "b\n", "test": "a\n"})
    assert "<unk>" not in load_corpus(str(folder)).vocab


def test_missing_split_file(tmp_path):
    folder = make_folder(tmp_path / "c", {"train": "a\n", "valid": "a\n"})
    with pytest.raises(DataError) as info:
        load_corpus(str(folder))
    message = str(info.value)
    assert str(folder) in message and "test.txt" in message
    assert "train.txt, valid.txt and test.txt" in message


def test_empty_split_file(tmp_path):
    folder = make_folder(tmp_path / "c", {"train": "a\n", "valid": "", "test": "a\n"})
    with pytest.raises(DataError, match=r"valid\.txt is empty"):
        load_corpus(str(folder))


def test_non_utf8_names_file_and_line(tmp_path):
    folder = make_folder(tmp_path / "c", {**TINY, "test": b"ok\nfine\nbad \xff here\n"})
    with pytest.raises(DataError) as info:
        load_corpus(str(folder))
    assert str(folder / "test.txt") in str(info.value)
    assert "line 3" in str(info.value)


@pytest.mark.parametrize("split", ["train", "valid", "test"])
@pytest.mark.parametrize("text", ["\n", "\n\n\n", "   \t \n \n", "\u00a0\u3000\r\n", "  "])
def test_a_split_without_words_is_refused_and_nothing_cached(tmp_path, split, text):
    folder = make_folder(tmp_path / "c", {**TINY, split: text})
    with pytest.raises(DataError, match=rf"{split}\.txt has no words") as info:
        load_corpus(str(folder))
    assert str(folder / f"{split}.txt") in str(info.value)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "raw,line",
    [(b"the cat\x00 sat\n", 1), (b"a\nb\nc\x00\n", 3), ("the cat\n".encode("utf-16"), 1)],
)
def test_nul_bytes_are_refused_naming_file_and_line(tmp_path, raw, line):
    folder = make_folder(tmp_path / "c", {**TINY, "valid": raw})
    with pytest.raises(DataError, match="NUL byte") as info:
        load_corpus(str(folder))
    assert str(folder / "valid.txt") in str(info.value) and f"line {line} " in str(info.value)
    assert not (tmp_path / "cache").exists()


def test_byte_order_marks_never_become_part_of_a_word(tmp_path, caplog):
    bom = "\ufeff"
    splits = {"train": bom + "the cat\nthe dog\n", "valid": bom + bom + "the cat\n",
              "test": "the\n" + bom + "dog\nthe\n" + bom + "dog " + bom + " the\n"}  # fmt: skip
    folder = make_folder(tmp_path / "c", splits)
    with caplog.at_level(logging.INFO, logger="tune_lm.lm.data"):
        first = load_corpus(str(folder))
        second = load_corpus(str(folder))  # from the cache
    for corpus in (first, second):
        assert corpus.vocab == ("the", "cat", "<eos>", "dog", "<unk>")
        assert words(corpus, "valid") == ["the", "cat", "<eos>"]
        # Inside a line U+FEFF is a character like any other (WikiText-2 has it as a word).
        assert words(corpus, "test") == ["the", "<eos>", "dog", "<eos>", "the", "<eos>", "dog",
                                         "<unk>", "the", "<eos>"]  # fmt: skip
        assert dict(corpus.unk_counts) == {"valid": 0, "test": 1}
    assert "train.txt: starts with a byte-order mark" in caplog.text
    assert "test.txt: 2 line(s) start with a byte-order mark (U+FEFF), the first is line 2" in (
        caplog.text
    )


def test_a_valid_split_unrelated_to_train_warns_loudly(tmp_path, caplog):
    folder = make_folder(
        tmp_path / "c", {"train": "the cat sat\n", "valid": "der Hund lief\n", "test": "cat x y\n"}
    )
    with caplog.at_level(logging.WARNING, logger="tune_lm.lm.data"):
        corpus = load_corpus(str(folder))
        load_corpus(str(folder))  # the cached corpus warns too
    assert corpus.unk_counts["valid"] == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("valid.txt: NONE of its 3 words" in w for w in warnings) == 2
    assert sum("test.txt: 2 of its 3 words (67%)" in w for w in warnings) == 2


def test_a_split_of_literal_unk_words_warns_too(tmp_path, caplog):
    folder = make_folder(tmp_path / "c", {"train": "a <unk> b\n", "valid": "<unk> <unk> a\n",
                                          "test": "a b\n"})  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="tune_lm.lm.data"):
        load_corpus(str(folder))
    assert "valid.txt: 2 of its 3 words (67%) are <unk>" in caplog.text
    assert "test.txt" not in caplog.text


def test_unknown_name_lists_known_names():
    with pytest.raises(DataError) as info:
        load_corpus("wikitext-103")
    message = str(info.value)
    assert all(name in message for name in ("wikitext-2", "ptb", "synthetic", "folder"))


def test_a_file_is_not_a_corpus(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("a\n")
    with pytest.raises(DataError, match="is a file"):
        load_corpus(str(path))


def test_synthetic_name():
    corpus = load_corpus("synthetic")
    assert corpus.name == "synthetic" and corpus.train.numel() >= 20_000


def assert_same_corpus(first: Corpus, second: Corpus) -> None:
    assert first.vocab == second.vocab
    assert first.fingerprint == second.fingerprint
    assert dict(first.unk_counts) == dict(second.unk_counts)
    for split in data.SPLITS:
        assert torch.equal(first.split(split), second.split(split))
        assert second.split(split).dtype == torch.int64


def test_cache_hit_skips_tokenising(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "tiny")
    first = load_corpus(str(folder), cache_dir=tmp_path / "mycache")
    cache_file = tmp_path / "mycache" / "tokenized" / f"{first.fingerprint}.pt"
    assert cache_file.is_file()
    assert torch.load(cache_file, weights_only=True)["format"] == "tune_lm.corpus/1"

    def no_tokenising(text):
        raise AssertionError("tokenize() called on a cache hit")

    monkeypatch.setattr(data, "tokenize", no_tokenising)
    assert_same_corpus(first, load_corpus(str(folder), cache_dir=tmp_path / "mycache"))


def test_changed_file_is_not_served_from_cache(tmp_path):
    folder = make_folder(tmp_path / "tiny")
    first = load_corpus(str(folder))
    (folder / "train.txt").write_text("the cat sat\n\nthe bird\n")
    second = load_corpus(str(folder))
    assert second.fingerprint != first.fingerprint
    assert words(second, "valid") == ["the", "bird", "<eos>"]


def test_corrupt_cache_is_rebuilt(tmp_path, caplog):
    folder = make_folder(tmp_path / "tiny")
    first = load_corpus(str(folder))
    cache_file = tmp_path / "cache" / "tokenized" / f"{first.fingerprint}.pt"
    cache_file.write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING, logger="tune_lm.lm.data"):
        second = load_corpus(str(folder))
    assert "unreadable" in caplog.text
    assert_same_corpus(first, second)
    assert torch.load(cache_file, weights_only=True)["format"] == "tune_lm.corpus/1"


def test_unwritable_cache_only_warns(tmp_path, caplog):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="tune_lm.lm.data"):
        corpus = load_corpus(str(make_folder(tmp_path / "tiny")), cache_dir=blocker)
    assert corpus.train.numel() == 8
    assert "cannot write" in caplog.text


def test_write_corpus_folder_round_trip(tmp_path):
    original = load_corpus(str(make_folder(tmp_path / "a")))
    write_corpus_folder(original, tmp_path / "b")
    copy = load_corpus(str(tmp_path / "b"))
    for split in data.SPLITS:
        assert words(copy, split) == words(original, split)


def test_data_dir_env_and_folder_precedence(tmp_path, monkeypatch):
    make_folder(tmp_path / "data" / "ptb")
    monkeypatch.setenv("TUNE_LM_DATA_DIR", str(tmp_path / "data"))
    assert data.resolve_corpus_dir("ptb") == tmp_path / "data" / "ptb"
    assert load_corpus("ptb").vocab[:3] == ("the", "cat", "sat")
    # An existing folder called "ptb" in the working directory wins over the name.
    make_folder(Path("ptb"), {"train": "x y\n", "valid": "x\n", "test": "y\n"})
    assert load_corpus("ptb").vocab == ("x", "y", "<eos>")


# --- the real corpora (README figures) ----------------------------------------------

REAL = {
    # name: (tokens per split, train vocab incl. <eos>)
    "wikitext-2": ({"train": 2_088_628, "valid": 217_646, "test": 245_569}, 33_278),
    "ptb": ({"train": 929_589, "valid": 73_760, "test": 82_430}, 10_000),
}


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_corpus_matches_readme(name, tmp_path, monkeypatch):
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    for split in data.SPLITS:
        digest = hashlib.sha256((folder / f"{split}.txt").read_bytes()).hexdigest()
        assert digest == data.CORPUS_SHA256[name][split]
    monkeypatch.setenv("TUNE_LM_DATA_DIR", str(SHARED_DATA))
    corpus = load_corpus(name)
    counts, vocab_size = REAL[name]
    assert {split: corpus.split(split).numel() for split in data.SPLITS} == counts
    assert corpus.ntokens == vocab_size
    assert "<unk>" in corpus.vocab and "<eos>" in corpus.vocab
    assert dict(corpus.unk_counts) == {"valid": 0, "test": 0}
    assert_same_corpus(corpus, load_corpus(name))  # now from the cache


@pytest.mark.parametrize("kind", ["folder", "pipe", "broken link"])
def test_a_split_that_is_not_a_text_file_is_named_as_what_it_is(tmp_path, kind):
    """It read "has no train.txt" although something called train.txt was there."""
    import os

    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text("the cat sat\n")
    odd = tmp_path / "valid.txt"
    odd.unlink()
    {"folder": odd.mkdir, "pipe": lambda: os.mkfifo(odd),
     "broken link": lambda: odd.symlink_to(tmp_path / "gone")}[kind]()  # fmt: skip
    expected = {"folder": "a folder", "pipe": "not a regular file",
                "broken link": "a link to nothing"}[kind]  # fmt: skip
    with pytest.raises(DataError, match=f"valid.txt is {expected}"):
        data.load_corpus_folder(tmp_path, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()

"""Word-level corpora: find, download, tokenise and cache train/valid/test splits.

A corpus is a folder holding ``train.txt``, ``valid.txt`` and ``test.txt`` (UTF-8).
Every line is split on whitespace and ends with one ``<eos>``, empty lines included
(the PyTorch word-language-model convention)::

    " the cat\\n\\nsat"  ->  the cat <eos> <eos> sat <eos>

``wikitext-2`` and ``ptb`` are looked up in ``$TUNE_LM_DATA_DIR/NAME``, then in the
cache folder, and downloaded there (checksummed) when absent; ``synthetic`` is built
in memory by :mod:`tune_lm.lm.synthetic`. Token ids are cached under
``<cache_root>/tokenized/<fingerprint>.pt`` so a second load skips tokenising.

Degenerate files are refused (:class:`DataError`, the file named): empty, NUL bytes
(binary or UTF-16), not UTF-8, or no words at all (only blank lines). A byte-order
mark (U+FEFF) that starts the file or a line is removed, never glued to a word. A
valid/test split whose words are mostly or all missing from the train vocabulary is
loaded, with a warning.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from itertools import repeat
from pathlib import Path

import torch

from tune_lm.lm.atomic import atomic_file
from tune_lm.lm.corpus import EOS, SPLITS, UNK, Corpus, tokenize
from tune_lm.lm.corpus_files import (
    BOM,
    cache_root,
    decode,
    local_folder,
    no_words,
    not_a_corpus,
    read_splits,
)
from tune_lm.lm.download import CORPUS_SHA256, CORPUS_SOURCES, download_corpus
from tune_lm.lm.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["CORPUS_SHA256", "CORPUS_SOURCES", "cache_root", "download_corpus", "load_corpus"]
# Part of every fingerprint: bump it when tokenising changes so old caches are ignored.
TOKENIZER_VERSION = "tune_lm.tokenizer/2"  # 2: byte-order marks at line starts removed
CACHE_FORMAT = "tune_lm.corpus/1"

_UNK_WARN_FRACTION = 0.5  # more of a valid/test split unknown than this: warn


def _note_byte_order_marks(path: Path, raw: bytes) -> None:
    """Byte-order marks noted (:func:`corpus_files.decode` removes them)."""
    bom = BOM.encode("utf-8")
    if raw.startswith(bom):
        logger.info("%s: starts with a byte-order mark (U+FEFF); ignoring it", path)
    inner = raw.find(b"\n" + bom)
    if inner >= 0:
        logger.warning(
            "%s: %d line(s) start with a byte-order mark (U+FEFF), the first is line %d "
            "(files joined with cat?); ignoring them",
            path, raw.count(b"\n" + bom), raw.count(b"\n", 0, inner) + 2,
        )  # fmt: skip


def _fingerprint(raw: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256(TOKENIZER_VERSION.encode())
    for split in SPLITS:
        digest.update(hashlib.sha256(raw[split]).hexdigest().encode())
    return digest.hexdigest()


def _tokenize_splits(folder: Path, raw: Mapping[str, bytes]):
    """Returns (vocab, {split: int64 ids}, {"valid": n_unk, "test": n_unk})."""
    words = {split: tokenize(decode(folder / f"{split}.txt", raw[split])) for split in SPLITS}
    vocab = list(dict.fromkeys(words["train"]))  # dicts keep first-insertion order
    word_to_id = {word: index for index, word in enumerate(vocab)}
    ids = {"train": torch.tensor(list(map(word_to_id.__getitem__, words["train"])))}
    unk_counts = {}
    for split in ("valid", "test"):
        split_ids = torch.tensor(list(map(word_to_id.get, words[split], repeat(-1))))
        missing = split_ids < 0
        unk_counts[split] = int(missing.sum())
        if unk_counts[split]:
            if UNK not in word_to_id:  # custom corpora may lack <unk>; WikiText/PTB have it
                word_to_id[UNK] = len(vocab)
                vocab.append(UNK)
            split_ids[missing] = word_to_id[UNK]
        ids[split] = split_ids
    return tuple(vocab), ids, unk_counts


def _check_words(folder: Path, vocab, ids, unk_counts) -> None:
    """A split with no words (only blank lines) is refused; a valid/test split that the
    train vocabulary mostly or wholly misses gets a warning: its perplexity would mostly
    measure how well the model predicts <unk>."""
    eos = vocab.index(EOS) if EOS in vocab else -1
    unk = vocab.index(UNK) if UNK in vocab else -1
    for split in SPLITS:
        path = folder / f"{split}.txt"
        n_words = int((ids[split] != eos).sum())
        if n_words == 0:
            raise no_words(path, split, ids[split].numel())
        if split == "train":
            continue
        # <unk> in the text itself (PTB has it) counts too: the model learns nothing there.
        n_unk = int((ids[split] == unk).sum())
        if n_unk == n_words:
            logger.warning(
                "%s: NONE of its %d words is in the vocabulary of train.txt: all are %s, so "
                "%s perplexity will only measure how well the model predicts %s and line "
                "ends. Is it the %s split of the same corpus?",
                path, n_words, UNK, split, UNK, split,
            )  # fmt: skip
        elif n_unk > _UNK_WARN_FRACTION * n_words:
            logger.warning(
                "%s: %d of its %d words (%.0f%%) are %s, not in the vocabulary of train.txt; "
                "is it the %s split of the same corpus?",
                path, n_unk, n_words, 100 * n_unk / n_words, UNK, split,
            )  # fmt: skip
        if unk_counts.get(split):
            logger.info(
                "%s: %d %s tokens not in the train vocabulary -> %s",
                folder, unk_counts[split], split, UNK,
            )  # fmt: skip


def _load_cached(path: Path):
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, weights_only=True)
        if payload.get("format") != CACHE_FORMAT:
            raise ValueError(f"format is {payload.get('format')!r}, not {CACHE_FORMAT!r}")
        vocab = tuple(payload["vocab"])
        ids = {split: payload[split].to(torch.int64) for split in SPLITS}
        if any(t.dim() != 1 or t.min() < 0 or t.max() >= len(vocab) for t in ids.values()):
            raise ValueError("token ids out of range")
        unk_counts = {split: int(payload["unk_counts"][split]) for split in ("valid", "test")}
    except Exception as err:  # any damage at all: the text files are the truth, so rebuild
        logger.warning("tokenised-corpus cache %s is unreadable (%s); rebuilding it", path, err)
        path.unlink(missing_ok=True)
        return None
    return vocab, ids, unk_counts


def _save_cached(path: Path, vocab, ids, unk_counts) -> None:
    # int32 halves the file and its load time; ids are widened back to int64 on load.
    payload = {"format": CACHE_FORMAT, "vocab": list(vocab), "unk_counts": dict(unk_counts)}
    payload.update({split: ids[split].to(torch.int32) for split in SPLITS})
    try:
        with atomic_file(path) as out:  # readers never see half a file
            torch.save(payload, out)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
        logger.warning("cannot write tokenised-corpus cache %s (%s); not caching", path, err)


def load_corpus_folder(
    folder: str | Path, *, name: str | None = None, cache_dir: str | Path | None = None
) -> Corpus:
    """Tokenise (or load from the cache) the corpus in ``folder``."""
    folder = Path(folder)
    raw = read_splits(folder)
    for split in SPLITS:
        _note_byte_order_marks(folder / f"{split}.txt", raw[split])
    fingerprint = _fingerprint(raw)
    cache_file = cache_root(cache_dir) / "tokenized" / f"{fingerprint}.pt"
    cached = _load_cached(cache_file)
    if cached is None:
        logger.info("tokenising corpus %s", folder)
        tokenized = _tokenize_splits(folder, raw)
        _check_words(folder, *tokenized)  # before caching: a refused corpus leaves nothing
        _save_cached(cache_file, *tokenized)
        cached = tokenized
    else:
        logger.info("loaded tokenised corpus %s from cache %s", folder, cache_file)
        _check_words(folder, *cached)
    vocab, ids, unk_counts = cached
    return Corpus(
        str(name or folder), vocab, ids["train"], ids["valid"], ids["test"], fingerprint, unk_counts
    )


def resolve_corpus_dir(name: str, *, cache_dir: str | Path | None = None) -> Path:
    """The folder of named corpus ``name``, downloading it into the cache if needed.

    Order: ``$TUNE_LM_DATA_DIR/NAME`` if that folder exists, else
    ``<cache_root>/NAME`` if it holds all three files, else download there.
    """
    if name not in CORPUS_SOURCES:
        raise DataError(f"unknown downloadable corpus {name!r}; known: {', '.join(CORPUS_SOURCES)}")
    folder = local_folder(name, cache_dir)
    if folder is None:
        folder = cache_root(cache_dir) / name
        download_corpus(name, folder)
    return folder


def load_corpus(data: str, *, cache_dir: str | Path | None = None, given_as: str = "--data",
                ) -> Corpus:  # fmt: skip
    """Load a corpus by name ("wikitext-2", "ptb", "synthetic") or folder path.

    An existing folder wins over a name; ``cache_dir`` overrides the cache root;
    ``given_as`` names where ``data`` came from in an error (a flag, a file's field).
    """
    path = Path(data).expanduser()
    if path.is_dir():
        return load_corpus_folder(path, name=data, cache_dir=cache_dir)
    if data == "synthetic":
        from tune_lm.lm.synthetic import make_synthetic_corpus  # imported late: it imports us

        return make_synthetic_corpus()
    if data in CORPUS_SOURCES:
        return load_corpus_folder(
            resolve_corpus_dir(data, cache_dir=cache_dir), name=data, cache_dir=cache_dir
        )
    raise not_a_corpus(data, given_as)


def write_corpus_folder(corpus: Corpus, folder: Path) -> None:
    """Write ``corpus`` as ``folder/{train,valid,test}.txt``, one line per ``<eos>``.

    Reading the folder back gives the same words for every split that ends with
    ``<eos>``; a split that does not gets one extra ``<eos>`` on reading.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        lines, words = [], []
        for word in (corpus.vocab[index] for index in corpus.split(split).tolist()):
            if word == EOS:
                lines.append(" ".join(words) + "\n")
                words = []
            else:
                words.append(word)
        text = "".join(lines) + " ".join(words)
        (folder / f"{split}.txt").write_bytes(text.encode("utf-8"))

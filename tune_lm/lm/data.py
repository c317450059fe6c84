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
import os
import re
from collections.abc import Mapping
from itertools import repeat
from pathlib import Path

import torch

from tune_lm.lm.atomic import atomic_file
from tune_lm.lm.corpus import EOS, SPLITS, UNK, Corpus, tokenize
from tune_lm.lm.download import CORPUS_SHA256, CORPUS_SOURCES, download_corpus
from tune_lm.lm.errors import DataError

logger = logging.getLogger(__name__)

KNOWN_CORPORA = ("wikitext-2", "ptb", "synthetic")
__all__ = ["CORPUS_SHA256", "CORPUS_SOURCES", "download_corpus", "load_corpus"]
# Part of every fingerprint: bump it when tokenising changes so old caches are ignored.
TOKENIZER_VERSION = "tune_lm.tokenizer/2"  # 2: byte-order marks at line starts removed
CACHE_FORMAT = "tune_lm.corpus/1"

_FOLDER_HINT = "a corpus folder must hold train.txt, valid.txt and test.txt (UTF-8 text)"
BOM = "\ufeff"  # a byte-order mark: Windows editors start UTF-8 files with it
_LINE_START_BOMS = re.compile(f"^{BOM}+", re.MULTILINE)
_UNK_WARN_FRACTION = 0.5  # more of a valid/test split unknown than this: warn


def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 text without byte-order marks at the start of the file or of a line, where
    they are BOMs (``\\ufeffthe`` would be a word of its own). Elsewhere U+FEFF is left
    alone: WikiText-2's train split has 36 of them as words, counted in its usual size."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}: line {line} is not valid UTF-8 ({err.reason} at byte offset "
            f"{err.start}). Corpus files must be UTF-8; re-encode the file (e.g. "
            f"`iconv -f latin1 -t utf-8`) or fix that line."
        ) from None
    if BOM in text:
        text = _LINE_START_BOMS.sub("", text)
    return text


def _read_splits(folder: Path) -> dict[str, bytes]:
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DataError(f"cannot read the corpus folder {folder} (permission denied); check "
                        "its permissions, or point --data at another folder")  # fmt: skip
    for split in SPLITS:
        path = folder / f"{split}.txt"
        kind = ("a folder" if path.is_dir() else "a link to nothing" if path.is_symlink() and
                not path.exists() else "not a regular file (a pipe, socket or device)"
                if path.exists() and not path.is_file() else None)  # fmt: skip
        if kind:
            raise DataError(f"{path} is {kind}; each split must be a text file. Replace it, "
                            f"or point --data at another folder ({_FOLDER_HINT})")  # fmt: skip
    missing = [f"{split}.txt" for split in SPLITS if not (folder / f"{split}.txt").is_file()]
    if missing:
        raise DataError(
            f"corpus folder {folder} has no {', '.join(missing)}; {_FOLDER_HINT}. "
            "Add the missing file(s) or point --data at another folder."
        )
    raw = {}
    for split in SPLITS:
        path = folder / f"{split}.txt"
        try:
            raw[split] = path.read_bytes()
        except OSError as err:
            raise DataError(f"cannot read {path} ({err}); check its permissions") from None
        if not raw[split]:
            raise DataError(
                f"{path} is empty; the {split} split needs at least one line of text. "
                f"Fill it in or point --data at another folder ({_FOLDER_HINT})."
            )
        _check_bytes(path, raw[split])
    return raw


def _check_bytes(path: Path, raw: bytes) -> None:
    """NUL bytes refused; byte-order marks noted (:func:`_decode` removes them). Cheap
    (C-speed scans), so it runs on every load, cached or not."""
    nul = raw.find(b"\0")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise DataError(
            f"{path}: line {line} has a NUL byte (byte offset {nul}), "
            "which text has none of: is it a binary file, or UTF-16 text? Corpus files must "
            "be UTF-8: convert it (e.g. `iconv -f utf-16 -t utf-8`) or remove the NUL bytes."
        )
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
    words = {split: tokenize(_decode(folder / f"{split}.txt", raw[split])) for split in SPLITS}
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
            raise DataError(
                f"{path} has no words, only {ids[split].numel()} blank or whitespace-only "
                f"line(s); the {split} split needs text. Fill it in or point --data at "
                f"another folder ({_FOLDER_HINT})."
            )
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


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$TUNE_LM_CACHE_DIR``, else ``~/.cache/tune_lm``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("TUNE_LM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tune_lm"


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
    raw = _read_splits(folder)
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
    data_dir = os.environ.get("TUNE_LM_DATA_DIR")
    if data_dir and (Path(data_dir).expanduser() / name).is_dir():
        return Path(data_dir).expanduser() / name
    cached = cache_root(cache_dir) / name
    if not all((cached / f"{split}.txt").is_file() for split in SPLITS):
        download_corpus(name, cached)
    return cached


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
    what = "is a file, not a folder" if path.exists() else "is neither a known corpus nor a folder"
    squeezed = {re.sub(r"[^a-z0-9]", "", known.lower()): known for known in KNOWN_CORPORA}
    meant = squeezed.get(re.sub(r"[^a-z0-9]", "", data.lower()))  # PTB, wikitext2, WikiText_2
    hint = f" Did you mean {meant!r}?" if meant and not path.exists() else ""
    raise DataError(
        f"{given_as} {data!r} {what}.{hint} Use one of the known corpora "
        f"({', '.join(KNOWN_CORPORA)}) or a folder path: {_FOLDER_HINT}."
    )


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

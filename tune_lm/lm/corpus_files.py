"""A corpus's files, checked without torch: where a corpus named by ``--data`` is, and
whether its ``train.txt``, ``valid.txt`` and ``test.txt`` can be read as UTF-8 text
with words in them. :func:`tune_lm.lm.data.load_corpus` reads them through here; a
search or a training calls :func:`check_corpus_files` first, so a wrong corpus is
refused in a fraction of a second, before torch, Ray or MLflow is imported."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tune_lm.lm.errors import DataError

SPLITS = ("train", "valid", "test")
KNOWN_CORPORA = ("wikitext-2", "ptb", "synthetic")
DOWNLOADABLE = ("wikitext-2", "ptb")  # the keys of download.CORPUS_SOURCES
FOLDER_HINT = "a corpus folder must hold train.txt, valid.txt and test.txt (UTF-8 text)"
BOM = "\ufeff"  # a byte-order mark: Windows editors start UTF-8 files with it
_LINE_START_BOMS = re.compile(f"^{BOM}+", re.MULTILINE)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$TUNE_LM_CACHE_DIR``, else ``~/.cache/tune_lm``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("TUNE_LM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tune_lm"


def decode(path: Path, raw: bytes) -> str:
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


def read_splits(folder: Path) -> dict[str, bytes]:
    """The three files' bytes; a folder, file or split that cannot be text is refused."""
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
                            f"or point --data at another folder ({FOLDER_HINT})")  # fmt: skip
    missing = [f"{split}.txt" for split in SPLITS if not (folder / f"{split}.txt").is_file()]
    if missing:
        raise DataError(
            f"corpus folder {folder} has no {', '.join(missing)}; {FOLDER_HINT}. "
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
                f"Fill it in or point --data at another folder ({FOLDER_HINT})."
            )
        check_no_nul(path, raw[split])
    return raw


def check_no_nul(path: Path, raw: bytes) -> None:
    """NUL bytes refused (a binary file, or UTF-16 text). C-speed, so it runs on every
    load, cached or not."""
    nul = raw.find(b"\0")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise DataError(
            f"{path}: line {line} has a NUL byte (byte offset {nul}), "
            "which text has none of: is it a binary file, or UTF-16 text? Corpus files must "
            "be UTF-8: convert it (e.g. `iconv -f utf-16 -t utf-8`) or remove the NUL bytes."
        )


def no_words(path: Path, split: str, lines: int) -> DataError:
    """The error for a split with only blank or whitespace-only lines."""
    return DataError(
        f"{path} has no words, only {lines} blank or whitespace-only line(s); the {split} "
        f"split needs text. Fill it in or point --data at another folder ({FOLDER_HINT})."
    )


def not_a_corpus(data: str, given_as: str) -> DataError:
    """The error for ``data`` that is neither a known corpus nor a folder."""
    path = Path(data).expanduser()
    what = "is a file, not a folder" if path.exists() else "is neither a known corpus nor a folder"
    squeezed = {re.sub(r"[^a-z0-9]", "", known.lower()): known for known in KNOWN_CORPORA}
    meant = squeezed.get(re.sub(r"[^a-z0-9]", "", data.lower()))  # PTB, wikitext2, WikiText_2
    hint = f" Did you mean {meant!r}?" if meant and not path.exists() else ""
    return DataError(
        f"{given_as} {data!r} {what}.{hint} Use one of the known corpora "
        f"({', '.join(KNOWN_CORPORA)}) or a folder path: {FOLDER_HINT}."
    )


def local_folder(name: str, cache_dir: str | Path | None = None) -> Path | None:
    """Where known corpus ``name`` is on this machine: ``$TUNE_LM_DATA_DIR/NAME`` if that
    folder exists, else the cache's copy if it holds all three files; None: it is to be
    downloaded."""
    data_dir = os.environ.get("TUNE_LM_DATA_DIR")
    if data_dir and (Path(data_dir).expanduser() / name).is_dir():
        return Path(data_dir).expanduser() / name
    cached = cache_root(cache_dir) / name
    if all((cached / f"{split}.txt").is_file() for split in SPLITS):
        return cached
    return None


def check_corpus_files(data: str, *, given_as: str = "--data",
                       cache_dir: str | Path | None = None) -> None:  # fmt: skip
    """Refuse ``data`` (a corpus name or folder) whose files are wrong: not found,
    unreadable, empty, binary, not UTF-8, or a split without a word. What needs the
    vocabulary (a corpus too small for a batch, say) is checked when it is loaded; a
    corpus still to be downloaded is checked then."""
    path = Path(data).expanduser()
    if path.is_dir():
        folder: Path | None = path
    elif data == "synthetic":
        return
    elif data in DOWNLOADABLE:
        folder = local_folder(data, cache_dir)
    else:
        raise not_a_corpus(data, given_as)
    if folder is None:
        return
    for split, raw in read_splits(folder).items():
        text = decode(folder / f"{split}.txt", raw)
        if not text.split(maxsplit=1):  # the tokeniser's words: none at all
            raise no_words(folder / f"{split}.txt", split, len(text.removesuffix("\n").split("\n")))

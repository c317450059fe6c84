"""Files written whole or not at all, with the permissions any new file would get."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path``, then rename it into place: a crash
    leaves the old file (or none), never half a file. The result gets the mode the umask
    gives new files (``mkstemp`` alone would make it private, 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp_name, new_file_mode())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes) -> None:
    """``data`` into ``path``, whole or not at all (:func:`atomic_file`)."""
    with atomic_file(path) as out:
        out.write(data)


def new_file_mode() -> int:
    """The permissions a new file gets under this process's umask (e.g. 0o644)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def probe_writable(path: Path, *, create_missing: bool = True) -> None:
    """Raise OSError unless a file could be written at ``path`` (a file path) now: its
    folder, or with ``create_missing`` the nearest folder that exists above it, must be a
    folder that takes a new file, and an existing file must be writable. Writes nothing
    that stays (the probe file vanishes when closed)."""
    folder = path.parent
    while create_missing and not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        problem = f"{folder} is not a folder" if folder.exists() else f"{folder} does not exist"
        raise NotADirectoryError(errno.ENOTDIR, problem)
    with tempfile.TemporaryFile(dir=folder):
        pass
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, f"{path} is read-only")

"""The free space a trial's checkpoints must leave on the storage's disk
(``TUNE_LM_MIN_FREE_MB``): read and checked by the search before anything starts, and
by every trial before each checkpoint. Light (no torch, no Ray), so a search checks it
first."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from tune_lm.lm.errors import ConfigError, TuneLMError

RESERVE_VARIABLE = "TUNE_LM_MIN_FREE_MB"


def reserve_bytes() -> float:
    """The free space a checkpoint must leave, ``TUNE_LM_MIN_FREE_MB`` (default 200 MB);
    the search checks it before it starts (a bad value failed every trial)."""
    text = os.environ.get(RESERVE_VARIABLE, "200")
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = math.nan
    if not 0 <= megabytes < math.inf:
        raise ConfigError(f"{RESERVE_VARIABLE}={text!r} is not a number of megabytes (0 or "
                          "more) to keep free on the storage's disk; set it to e.g. 200, or "
                          "unset it")  # fmt: skip
    return megabytes * 2**20


def _nearest_folder(path: str | Path) -> Path:
    """``path``, or its nearest ancestor that exists (whose disk it will be on)."""
    folder = Path(path)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_reserve_fits(folder: str | Path) -> None:
    """Before a search: the reserve is free on the storage's disk now (else every trial
    failed at its first checkpoint, after Ray and MLflow had started)."""
    reserve, folder = reserve_bytes(), _nearest_folder(folder)
    free = shutil.disk_usage(folder).free
    if free < reserve:
        raise ConfigError(f"{RESERVE_VARIABLE} keeps {reserve / 2**20:.0f} MB free for safety, "
                          f"but {folder}'s disk has {free / 2**20:.0f} MB free, so every "
                          f"checkpoint would be refused. Free some space, lower "
                          f"{RESERVE_VARIABLE}, or give --storage on another disk")  # fmt: skip


def check_free_space(folder: str | Path, needed_bytes: int) -> None:
    """Refuse to write a checkpoint that would leave less than ``TUNE_LM_MIN_FREE_MB``
    (default 200) megabytes free on ``folder``'s disk (its nearest existing folder): a
    full disk corrupts more than this one file."""
    reserve = reserve_bytes()
    folder = _nearest_folder(folder)  # the trial's folder appears with its first checkpoint
    free = shutil.disk_usage(folder).free
    if free - needed_bytes < reserve:
        raise TuneLMError(
            f"low disk space: {free / 2**20:.0f} MB free at {folder}, a checkpoint needs "
            f"{needed_bytes / 2**20:.1f} MB and {reserve / 2**20:.0f} MB are kept in reserve "
            "(TUNE_LM_MIN_FREE_MB). Free some space (old experiments under the storage "
            "folder), then continue the search with --resume"
        )

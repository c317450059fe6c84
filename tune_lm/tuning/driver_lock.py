"""One driver per experiment: a search, ``--resume`` or ``--extend`` holds an exclusive
lock on its experiment folder while it runs, so a second one started meanwhile (a
``--resume`` typed while the first still runs, a cron job started twice) is refused
instead of restoring the same Tune experiment and Optuna study and running trials,
test scores and model registrations twice.

The lock is the operating system's (``flock``): it ends with the process however the
process ends, SIGKILL included, so there is never a stale lock to remove by hand. The
file stays, with its last holder's line. An experiment in remote storage (``s3://``)
is locked through its local copy, ``./NAME``: two drivers started from one folder of one
machine are refused; drivers on two machines are not seen by each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from tune_lm.lm.errors import ConfigError
from tune_lm.tuning.layout import DRIVER_LOCK


class ExperimentBusy(ConfigError):
    """Another driver holds the experiment: whatever is in its folder is that driver's."""


@contextlib.contextmanager
def driving(folder: Path) -> Iterator[None]:
    """Hold the experiment ``folder``'s lock (made with its parents if new) while the block
    runs, or raise :class:`ExperimentBusy` naming the driver that holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DRIVER_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise ExperimentBusy(
                f"experiment {folder} is being run by another search now ({holder}); two "
                "drivers would run its trials twice. Wait for it to end, or stop it (Ctrl-C "
                "in its terminal, or kill PID: it stops gracefully), then --resume"
            ) from None
        line = (f"pid {os.getpid()} on {socket.gethostname()}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode()  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, line, 0)
        yield
    finally:
        os.close(fd)  # releases the lock

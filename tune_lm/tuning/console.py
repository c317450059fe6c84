"""What a search shows its user: tune_lm's own lines on the console, everything else
(Ray's status tables and worker output, MLflow's and Optuna's messages, warnings) in a
log file in the experiment folder, unless ``--verbose`` asks for it on the console.

The other tools write to the process's stdout and stderr from many places (Ray's
log-monitor thread, C++ components, MLflow's progress bars), so the capture works at
the file-descriptor level: while it lasts, descriptors 1 and 2 point to the log file
and tune_lm's own lines go to a copy of the console's descriptor (and into the log).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from tune_lm.tuning import private_api


class _DropRayRestoreHint(logging.Filter):
    """Ray's "Resume experiment with: Tuner.restore(...)" is Python API advice that does
    not apply to a command-line search; tune_lm prints its own resume command."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore(" not in record.getMessage()


class Console:
    """The search's own output (``say``) and the capture of everyone else's."""

    def __init__(self) -> None:
        self._stream: TextIO | None = None  # None: sys.stdout, as it is at the time
        self._log: TextIO | None = None
        self._console_gone = False  # a write to it failed: the log alone from then on

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def say(self, text: str) -> None:
        """A line (or lines) of tune_lm's own output; the log keeps it if the console is
        gone (a closed terminal, a closed pipe)."""
        if not self._console_gone:
            try:
                print(text, file=self.stream, flush=True)
            except (OSError, ValueError):  # EIO, EPIPE, or a closed file: stop writing there
                self._console_gone = True
        if self._log is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self._log.write("".join(f"[tune_lm {stamp}] {line}\n" for line in text.splitlines()))
            self._log.flush()

    @contextlib.contextmanager
    def capture(self, log_path: Path, *, verbose: bool) -> Iterator[None]:
        """Send the process's stdout and stderr into ``log_path`` (appended to) while the
        block runs; ``verbose`` leaves them on the console. Either way Ray's worker
        output carries no colour codes unless the console is a terminal."""
        logging.getLogger(private_api.RESTORE_HINT_LOGGER).addFilter(_DropRayRestoreHint())
        if not verbose or not self.stream.isatty():  # a log file or a pipe: plain text
            private_api.plain_ray_output()
        if verbose:
            yield
            return
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        console = os.fdopen(os.dup(saved[0]), "w", buffering=1, encoding="utf-8")
        log = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (held open)
        handler = logging.StreamHandler(console)  # tune_lm's warnings stay on the console
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        ours = logging.getLogger("tune_lm")
        self._stream, self._log = console, log
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        ours.addHandler(handler)
        try:
            yield
        finally:
            ours.removeHandler(handler)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)
            self._stream, self._log = None, None
            with contextlib.suppress(OSError):  # a console that is gone cannot be flushed
                console.close()
            log.close()


console = Console()
say = console.say

"""One way to run a tune_lm command in a subprocess, as a user would: ``python -m
tune_lm.COMMAND ARGS``, output captured as text, unbuffered, with a timeout."""

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(command: str, *args: str, cwd: Path | str | None = None,
            env: dict[str, str] | None = None, timeout: float = 600,
            **kwargs) -> subprocess.CompletedProcess:  # fmt: skip
    """``python -m tune_lm.COMMAND *args`` (``command``: search, train, report, generate,
    evaluate, or a full module name); ``env`` adds to (or, with ``env={...}`` holding
    PATH, replaces) this process's environment; runs in ``cwd`` (default: the repo)."""
    module = command if "." in command else f"tune_lm.{command}"
    base = {} if env is not None and "PATH" in env else dict(os.environ)
    full_env = {**base, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or REPO_ROOT, env=full_env,
                          **kwargs)  # fmt: skip


def start_cli(command: str, *args: str, cwd: Path | str | None = None,
              env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:  # fmt: skip
    """The same command started in the background (to signal or kill it); ``kwargs`` go
    to ``subprocess.Popen`` (stdout, stderr, start_new_session, ...)."""
    module = command if "." in command else f"tune_lm.{command}"
    base = {} if env is not None and "PATH" in env else dict(os.environ)
    full_env = {**base, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)],
                            cwd=cwd or REPO_ROOT, env=full_env, **kwargs)  # fmt: skip

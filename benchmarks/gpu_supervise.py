"""The GPU check's supervisor: runs ``gpu_check.py``'s sections in a child process and, if
that child loses its CUDA context or stalls, starts it once more, with the CUDA-graph step
off, for the sections it had not finished.

Why: the check measures in one process, and its CUDA-graph step has never run on a GPU
before. A sticky CUDA error (an illegal address, say) makes every later kernel of that
process fail, so one bad graphed measurement would cost every eager figure after it; a
hang would cost the rest of the device time and say nothing about where it hung. So:

- the child announces, at each section, variant and row, by when it will report again
  (a heartbeat file holding that time); the supervisor, which never touches CUDA, dumps
  a silent child's Python stacks into the log (faulthandler, on SIGUSR1) and kills its
  process group (packing workers and pytest included);
- after an error, the child checks that CUDA still works; if not, it records the section
  as ``lost`` and exits with ``LOST_CONTEXT_EXIT``;
- the supervisor records each restart in ``gpu_check.json`` (``restarts``) and starts a
  child with ``--merge --no-graph`` for the sections not yet done, within the same budget.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LOST_CONTEXT_EXIT = 75  # the child's exit status after a lost CUDA context
FINAL = ("ok", "error", "skipped")  # section states that a restart keeps
QUIET_S = 90.0  # a section's, variant's or row's default allowance between two heartbeats
DUMP_WAIT_S = 3.0  # time for faulthandler's stack dump before the kill
FAULT_ENV = "TUNE_LM_GPU_CHECK_FAULT"  # dry run only: "lost" or "stall" at a graphed variant


class CudaContextLost(RuntimeError):
    """CUDA fails even a trivial kernel after an error: nothing more can run in this process."""


class Child:
    """The child's side: heartbeats, the CUDA probe, and the dry run's simulated faults."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.heartbeat = Path(args.heartbeat) if args.heartbeat else None
        self.quiet_limit_s = args.quiet_limit_s
        self.fault = os.environ.get(FAULT_ENV, "") if args.dry_run else ""
        self.lost = False  # a simulated lost context (dry run)
        if self.heartbeat:
            faulthandler.register(signal.SIGUSR1, all_threads=True)

    def beat(self, quiet_s: float = QUIET_S) -> None:
        """Announce the next heartbeat within ``quiet_s`` seconds."""
        if self.heartbeat is None:
            return
        if self.quiet_limit_s:
            quiet_s = min(quiet_s, self.quiet_limit_s)
        scratch = self.heartbeat.with_suffix(".tmp")
        scratch.write_text(f"{time.time() + quiet_s:.3f}")
        scratch.replace(self.heartbeat)

    def cuda_alive(self, device: Any) -> bool:
        if self.lost:
            return False
        if device is None or device.type != "cuda":
            return True
        import torch

        try:
            with torch.cuda.device(device):
                torch.cuda.synchronize()
                return torch.ones(1, device=device).add_(1).item() == 2.0
        except Exception:  # a sticky error fails every call
            return False

    def check_after_error(self, device: Any, error: BaseException) -> None:
        """Raise :class:`CudaContextLost` if ``error`` left CUDA unusable."""
        if isinstance(error, CudaContextLost):
            raise error
        if not self.cuda_alive(device):
            raise CudaContextLost(f"CUDA unusable after {type(error).__name__}: {error}"[:500])

    def at_graphed_variant(self) -> None:
        """The dry run's simulated faults, where a real one would most likely come from."""
        if self.fault == "lost":
            self.lost = True
            raise RuntimeError("simulated: CUDA error: an illegal memory access was encountered")
        if self.fault == "stall":
            time.sleep(3600)


def supervise(argv: list[str], args: argparse.Namespace, script: Path,
              order: tuple[str, ...]) -> int:  # fmt: skip
    """Run ``script`` (gpu_check.py) with ``argv`` as a supervised child; one restart,
    graphs off, after a lost CUDA context, a crash by signal or a stall. ``order``: the
    check's sections, for the report. Returns the check's exit status (1 if a child had
    to be stopped)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    heartbeat = out / "heartbeat"
    deadline = time.time() + args.budget_s
    extra: list[str] = []
    for attempt in (1, 2):
        heartbeat.unlink(missing_ok=True)
        command = [sys.executable, str(script), *argv, "--supervised", "--deadline",
                   f"{deadline:.3f}", "--heartbeat", str(heartbeat), *extra]  # fmt: skip
        # its own process group (to stop it whole), ended with the supervisor if that is killed
        child = subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with_parent)
        why = _watch(child, heartbeat, deadline)
        heartbeat.unlink(missing_ok=True)
        if why is None:  # a restarted check fails: the graphed figures are missing
            return child.returncode if attempt == 1 else max(child.returncode, 1)
        results = _read(out)
        remaining = [name for name in args.sections
                     if results.get("sections", {}).get(name, {}).get("status") not in FINAL]
        lost = {name: entry.get("why") for name, entry in results.get("sections", {}).items()
                if entry.get("status") in ("lost", "running")}  # fmt: skip
        restart = {"attempt": attempt, "why": why, "in_section": lost, "remaining": remaining,
                   "seconds_left": round(deadline - time.time())}  # fmt: skip
        print(f"== supervisor: the check's process {why}; sections not done: "
              f"{', '.join(remaining) or 'none'}", flush=True)  # fmt: skip
        _record_restart(out, results, restart, order)
        if attempt == 2 or not remaining or deadline - time.time() < 30:
            return 1
        extra = ["--merge", "--no-graph", "--sections", *remaining]
    return 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the supervisor dies (Linux's prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def _watch(child: subprocess.Popen, heartbeat: Path, deadline: float) -> str | None:
    """Wait for ``child``; None if it ended on its own with a status the check gives
    (0, 1, 2), else why it was stopped or how it died."""
    while child.poll() is None:
        time.sleep(0.5)
        now = time.time()
        due = _due(heartbeat)
        if due is not None and now > due:
            why = f"was silent past its announced heartbeat ({now - due:.0f} s late)"
        elif now > deadline + 30:
            why = "ran 30 s past the budget"
        else:
            continue
        _stop(child)
        return why
    if child.returncode in (0, 1, 2):
        return None
    if child.returncode == LOST_CONTEXT_EXIT:
        return "lost its CUDA context"
    return f"died (exit status {child.returncode})"


def _due(heartbeat: Path) -> float | None:
    try:
        return float(heartbeat.read_text())
    except (OSError, ValueError):  # not written yet, or between write and rename
        return None


def _stop(child: subprocess.Popen) -> None:
    """Dump the child's Python stacks into the log, then kill its whole process group."""
    try:
        os.killpg(child.pid, signal.SIGUSR1)  # faulthandler in the child; others just end
        child.wait(timeout=DUMP_WAIT_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _read(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / "gpu_check.json").read_text())
    except (OSError, ValueError):
        return {}


def _record_restart(out: Path, results: dict[str, Any], restart: dict[str, Any],
                    order: tuple[str, ...]) -> None:  # fmt: skip
    """Add ``restart`` to the results (the next child, with --merge, keeps them)."""
    from gpu_report import render_markdown

    results.setdefault("sections", {})
    results.setdefault("restarts", []).append(restart)
    for entry in results["sections"].values():
        if entry.get("status") == "running":  # cut off mid-section
            entry["status"], entry["why"] = "lost", restart["why"]
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    if "started" in results:  # else the child died before its first write
        (out / "gpu_check.md").write_text(render_markdown(results, order))

"""Fault injection for the reliability tests: make chosen trials diverge, raise or be
killed at a chosen epoch, so that the search's handling of each is tested for real.

Off unless ``TUNE_LM_FAULTS`` holds a JSON list of faults (Ray's local workers inherit
the driver's environment), each::

    {"kind": "nan" | "raise" | "kill", "epoch": 1, "when": {"model": "GRU"},
     "once_dir": "/tmp/x"}

- ``nan``: after the trial reports ``epoch``, its weights become NaN, so the next
  epoch's loss is NaN (a diverged trial);
- ``raise``: the trial raises just before reporting ``epoch`` (that epoch's result and
  checkpoint are lost, as in a crash during it; a retry resumes before it, so without
  ``once_dir`` every attempt fails);
- ``kill``: the trial's process is SIGKILLed ``after_s`` (default 0.2) seconds after
  reporting ``epoch``: mid-way through the next epoch (not if the trial has ended by
  then: its reused process may run another trial);
- ``when``: only trials whose sampled parameters have these values;
- ``once_dir``: fire once per trial (a marker file per trial id), so the retry succeeds.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
ENV = "TUNE_LM_FAULTS"


KINDS = ("nan", "raise", "kill")


def check_env() -> None:
    """Before a search: ``TUNE_LM_FAULTS``, if set, is a JSON list of faults (else every
    trial failed on it, after Ray and MLflow had started)."""
    from tune_lm.lm.errors import ConfigError

    text = os.environ.get(ENV) or "[]"
    try:
        faults = json.loads(text)
        good = isinstance(faults, list) and all(
            isinstance(f, dict) and f.get("kind") in KINDS and float(f["epoch"]) >= 0
            for f in faults)  # fmt: skip
    except (ValueError, TypeError, KeyError):
        good = False
    if not good:
        kinds = " | ".join(f'"{kind}"' for kind in KINDS)
        raise ConfigError(f"{ENV}={text[:100]!r} is not a JSON list of faults, each "
                          f'{{"kind": {kinds}, "epoch": N, ...}} (a test setting: see '
                          f"tune_lm/tuning/faults.py); unset it")  # fmt: skip


def before_report(epoch: float, sampled: dict[str, Any], trial_id: str) -> None:
    """Fire the ``raise`` faults due at ``epoch`` (nothing when none are set)."""
    _fire({"raise"}, epoch, sampled, trial_id, {})


def after_report(epoch: float, sampled: dict[str, Any], trial_id: str, model_state: dict) -> None:
    """Fire the ``nan`` and ``kill`` faults due after ``epoch`` was reported."""
    _fire({"nan", "kill"}, epoch, sampled, trial_id, model_state)


def _fire(kinds: set[str], epoch: float, sampled: dict[str, Any], trial_id: str,
          model_state: dict) -> None:  # fmt: skip
    for fault in json.loads(os.environ.get(ENV) or "[]"):
        if fault["kind"] not in kinds or float(fault["epoch"]) != float(epoch):
            continue
        if any(sampled.get(key) != value for key, value in fault.get("when", {}).items()):
            continue
        if fault.get("once_dir"):
            marker = Path(fault["once_dir"]) / f"{fault['kind']}-{trial_id}"
            if marker.exists():
                continue
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        log.warning("fault injection: %s after epoch %s in trial %s", fault["kind"], epoch,
                    trial_id)  # fmt: skip
        if fault["kind"] == "nan":
            for tensor in model_state.values():  # the live model's parameters
                if tensor.is_floating_point():
                    tensor.fill_(math.nan)
        elif fault["kind"] == "raise":
            raise RuntimeError(f"injected fault after epoch {epoch:g}")
        elif fault["kind"] == "kill":
            threading.Timer(float(fault.get("after_s", 0.2)), _kill_while_alive,
                            (threading.current_thread(),)).start()  # fmt: skip


def _kill_while_alive(training: threading.Thread) -> None:
    """SIGKILL this process if the trial's training thread still runs: with Tune's
    reuse_actors a trial that has ended may already have handed the process to another."""
    if training.is_alive():
        os.kill(os.getpid(), signal.SIGKILL)

"""One driver per experiment (tuning/driver_lock.py): an operating-system lock that ends
with its process, however the process ends."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tune_lm.tuning.driver_lock import ExperimentBusy, driving


def test_a_second_driver_is_refused_naming_the_first_until_it_ends(tmp_path):
    folder = tmp_path / "runs" / "exp"  # made with its parents
    busy = f"being run by another search now \\(pid {os.getpid()} on "
    with driving(folder), pytest.raises(ExperimentBusy, match=busy), driving(folder):
        pass
    with driving(folder):  # released when the first ended
        pass


def test_a_killed_driver_leaves_no_lock_behind(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from tune_lm.tuning.driver_lock import driving\n"
         f"with driving(Path({str(tmp_path)!r})):\n print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ExperimentBusy, match=f"pid {holder.pid} "), driving(tmp_path):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    time.sleep(0.1)
    with driving(tmp_path):  # SIGKILL ended the lock with the process
        pass

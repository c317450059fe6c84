"""release_freed_memory: the memory a finished trial freed goes back to the OS (a reused
trial process otherwise grew by about 60 MB per trial; benchmarks/reuse_memory.py). Its
GPU half is tested on a GPU (tests/test_gpu.py)."""

import json
import subprocess
import sys

import pytest

FRAGMENTED_HEAP = """
import gc, json, os
from tune_lm.tuning.heap import release_freed_memory

gc.disable()  # only release_freed_memory collects

def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20

# 192 MB in 64 KB blocks (below glibc's mmap threshold: on its heap); every 16th is kept,
# so the freed ones are holes between live blocks, not a free top the heap shrinks by.
blocks = [bytearray(64 * 1024) for _ in range(3072)]
kept = blocks[::16]
del blocks
# 200 MB held only by a reference cycle: garbage that reference counting never frees.
cycle = [bytearray(200 * 2**20)]
cycle.append(cycle)
del cycle
before = resident_mb()
released = release_freed_memory()
print(json.dumps({"before": before, "after": resident_mb(), "released": released}))
"""


def run_fragmented(keep: str) -> dict:
    done = subprocess.run([sys.executable, "-c", FRAGMENTED_HEAP], capture_output=True,
                          text=True, timeout=120,
                          env={"TUNE_LM_KEEP_FREED_HEAP": keep, "PATH": ""})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim: Linux")
def test_the_freed_holes_of_a_fragmented_heap_and_cyclic_garbage_go_back_to_the_os():
    trimmed = run_fragmented("0")
    assert trimmed["released"] == {"cuda": False, "heap": True}  # CUDA never used there
    assert trimmed["before"] - trimmed["after"] > 300, trimmed  # ~180 MB holes + 200 cycle
    kept = run_fragmented("1")  # turned off: the holes and the cycle stay resident
    assert kept["released"] == {"cuda": False, "heap": False}
    assert kept["before"] - kept["after"] < 20, kept

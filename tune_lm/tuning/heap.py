"""Give the memory a finished trial freed back to the operating system.

Trial processes are reused (Tune's ``reuse_actors``): one process trains trial after
trial. glibc's allocator keeps the memory a trial frees inside the process, and the next
trial, whose tensors have other sizes, cannot always fit into those holes: the process
grew by about 60 MB per trial with no Python object or tensor left behind (figures:
``benchmarks/reuse_memory.py`` and the README's Speed section). ``malloc_trim`` returns
the free pages at once. ``TUNE_LM_KEEP_FREED_HEAP=1`` turns it off (that benchmark's
comparison).
"""

from __future__ import annotations

import ctypes
import os


def release_freed_heap() -> bool:
    """Return the C heap's free pages to the OS (glibc's ``malloc_trim(0)``). False where
    there is no glibc (macOS, musl) or it is turned off: then it does nothing."""
    if os.environ.get("TUNE_LM_KEEP_FREED_HEAP") == "1":
        return False
    try:  # the C library this process already runs with
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True

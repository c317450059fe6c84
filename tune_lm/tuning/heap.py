"""Give the memory a finished trial freed back, to the operating system and to the GPU.

Trial processes are reused (Tune's ``reuse_actors``): one process trains trial after
trial. glibc's allocator keeps the memory a trial frees inside the process, and the next
trial, whose tensors have other sizes, cannot always fit into those holes: the process
grew by about 60 MB per trial with no Python object or tensor left behind (figures:
``benchmarks/reuse_memory.py`` and the README's Speed section). ``malloc_trim`` returns
the free pages at once. On a GPU, torch's caching allocator likewise keeps a finished
trial's blocks reserved for this process; trials that share the GPU (fractional GPUs)
could not use them, so they go back too. ``TUNE_LM_KEEP_FREED_HEAP=1`` turns all of it
off (that benchmark's comparison).
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys


def release_freed_memory() -> dict[str, bool]:
    """Collect cyclic garbage (a cycle may still hold a finished trial's tensors), then
    give the CUDA cache's unused blocks back to the GPU and the C heap's free pages back
    to the OS. Returns which of the two it did: ``cuda`` is False where this process
    never used CUDA, ``heap`` where there is no glibc (macOS, musl); both are False when
    ``TUNE_LM_KEEP_FREED_HEAP=1``."""
    if os.environ.get("TUNE_LM_KEEP_FREED_HEAP") == "1":
        return {"cuda": False, "heap": False}
    gc.collect()
    return {"cuda": _empty_cuda_cache(), "heap": _trim_c_heap()}


def _empty_cuda_cache() -> bool:
    torch = sys.modules.get("torch")  # never the one to import torch, nor to start CUDA
    if torch is None or not torch.cuda.is_initialized():
        return False
    torch.cuda.empty_cache()
    return True


def _trim_c_heap() -> bool:
    try:  # the C library this process already runs with
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True

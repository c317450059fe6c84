"""The GPU check's packing sections: ``count`` trainings at once on the one GPU, one
process each (as Ray's fractional GPUs run trials), started together once all are warm;
aggregate tokens/s and the GPU memory they use."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHECK_SCRIPT = Path(__file__).resolve().parent / "gpu_check.py"  # its --packing-worker


def packing(check: Any, graphed: bool = False) -> dict[str, Any]:
    """The ``packing`` (or ``packing_graphed``) section (``check``: gpu_check.Check)."""
    from tune_lm.lm.config import TrainConfig

    data = "synthetic" if check.args.dry_run else "ptb"
    check.corpus(data)  # tokenised once here; the workers read the cache
    config = TrainConfig(data=data, model="LSTM", device=str(check.device), cuda_graph=graphed,
                         **{"threads": 2, **check.toy})  # fmt: skip
    rows = []
    for count in check.args.packing:
        if check.left_s() < check.args.packing_seconds + 30 and not check.args.dry_run:
            return {"rows": rows, "partial": True}
        check.child.beat(check.args.packing_seconds + 150)  # workers: 120 s to be ready
        rows.append(pack(check, config, count))
        row = rows[-1]
        print(f"   {count} at once: {row['aggregate_tokens_per_s']:.0f} tok/s in all, "
              f"{row['gpu_memory_used_mib']} MiB GPU memory in use", flush=True)  # fmt: skip
    return {"rows": rows, "partial": False, "cuda_graph": graphed,
            "setting": "PTB LSTM 2x200 fp32", "seconds": check.args.packing_seconds}  # fmt: skip


def pack(check: Any, config: Any, count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        go_file = scratch / "go"
        workers = []
        baseline = _gpu_used_mib(check.device)
        for index in range(count):
            spec = {"config": config.to_dict(), "ready_file": str(scratch / f"ready{index}"),
                    "go_file": str(go_file), "seconds": check.args.packing_seconds,
                    "segment_batches": check.args.segment_batches,
                    "result_file": str(scratch / f"result{index}.json")}  # fmt: skip
            workers.append(subprocess.Popen(
                [sys.executable, str(CHECK_SCRIPT), "--packing-worker", json.dumps(spec)],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            ))  # fmt: skip
        try:
            _wait_for(lambda: all((scratch / f"ready{i}").exists() for i in range(count)),
                      workers, timeout_s=120)  # fmt: skip
            # whole or absent: a worker polling for the file must never read it empty
            go_file.with_suffix(".tmp").write_text(str(time.time() + 0.2))
            go_file.with_suffix(".tmp").replace(go_file)
            used = []
            while any(worker.poll() is None for worker in workers):
                used.append(_gpu_used_mib(check.device))
                time.sleep(0.25)
            for worker in workers:
                if worker.wait() != 0:
                    raise RuntimeError(f"a packing worker exited {worker.returncode}: "
                                       f"{worker.stderr.read()[-800:]}")  # fmt: skip
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
        results = [json.loads((scratch / f"result{i}.json").read_text()) for i in range(count)]
    used_mib = max(used, default=baseline) - baseline if check.device.type == "cuda" else None
    return {
        "trials": count,
        "aggregate_tokens_per_s": sum(r["tokens_per_s"] for r in results),
        "per_trial_tokens_per_s": [r["tokens_per_s"] for r in results],
        "peak_allocated_mib": [r.get("peak_allocated_mib") for r in results],
        "peak_reserved_mib": [r.get("peak_reserved_mib") for r in results],
        "gpu_memory_used_mib": round(used_mib) if used_mib is not None else None,
    }


def _gpu_used_mib(device: Any) -> float:
    import torch

    if device.type != "cuda":
        return 0.0
    free, total = torch.cuda.mem_get_info(device)
    return (total - free) / 2**20


def _wait_for(ready: Callable[[], bool], workers: list, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        failed = [w for w in workers if w.poll() is not None and w.returncode != 0]
        if failed:
            stderr = failed[0].stderr.read()[-800:]
            raise RuntimeError(f"a packing worker failed at start: {stderr}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"packing workers not ready after {timeout_s:.0f} s")
        time.sleep(0.05)

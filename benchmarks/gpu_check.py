"""The prepared GPU check: one command that, on a CUDA machine and within a wall-clock
budget (default 520 s), measures what tune_lm's users run on GPUs and writes
``gpu_check.json`` and ``gpu_check.md`` to ``--out`` after every section:

1. ``environment``: GPU, driver, torch/CUDA/cuDNN versions;
2. ``tests``: ``pytest -m gpu`` over ``tests/test_gpu.py`` (placement, no per-batch host
   sync, cuDNN, bf16 autocast, resume, evaluation) and ``tests/test_gpu_graph.py`` (the
   step captured as a CUDA graph), with each test's outcome;
3. ``peak``: the GPU's own matrix-product peak (bf16, fp32, tf32);
4. ``throughput``: training tokens/s, tune_lm against the textbook loop at identical
   settings, fp32 / bf16 / the step as a CUDA graph / adaptive softmax, PTB and WikiText-2
   2x200 and PTB 2x650, LSTM and GRU (warm-up excluded, CUDA-synchronised clocks), as a
   fraction of the peak too;
5. ``profile``: where one step's time goes, eager and as a CUDA graph: wall ms, ms the
   GPU spends in kernels (profiler), kernels per step (host-bound or device-bound?);
6. ``packing``: 1, 4 and 8 trainings at once on the one GPU, one process each (as Ray's
   fractional GPUs run trials): aggregate tokens/s and peak GPU memory;
7. ``epochs``: the classic study's setting on WikiText-2 (2-layer LSTM and GRU, emsize
   200, bptt 35 and 50), eager and as a CUDA graph: seconds per full epoch;
8. ``packing_graphed``: packing with the step as a CUDA graph.

A section that the budget no longer covers is recorded as skipped; a section that fails
is recorded with its error and the check goes on. The sections run in a child process
that ``gpu_supervise.py`` watches: if it loses its CUDA context or goes silent, the
sections not done run again in a new child, with the CUDA-graph step off.

    python benchmarks/gpu_check.py --dry-run         # here, on a CPU: toy sizes, all code paths
    bash benchmarks/gpu_prepare.sh                   # the folder to carry, and the command

``--dry-run`` checks that everything the check needs imports, that the GPU tests are
collected and that the corpora are found, then runs every section at toy sizes on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpu_pytest import gpu_tests
from gpu_report import render_markdown  # benchmarks/ is on sys.path when run as a script
from gpu_supervise import FINAL, LOST_CONTEXT_EXIT, Child, CudaContextLost, supervise

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
SHARED_DATA = REPO.parent / "shared" / "data"
SECTIONS = ("environment", "tests", "peak", "throughput", "profile", "packing", "epochs",
            "packing_graphed")  # in order of need: what the budget cuts comes last
# The least time a section needs to be worth starting (real run), seconds.
MIN_SECONDS = {"environment": 1, "tests": 60, "peak": 10, "throughput": 30, "profile": 15,
               "packing": 40, "epochs": 20, "packing_graphed": 40}  # fmt: skip
GRAPH_ONLY = ("packing_graphed",)  # sections that measure only the CUDA-graph step


class Check:
    """Runs the sections within the budget and rewrites the JSON and Markdown after each."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        budget_s = args.deadline - time.time() if args.deadline else args.budget_s
        self.deadline = time.monotonic() + budget_s
        self.results: dict[str, Any] = {
            "dry_run": args.dry_run, "budget_s": args.budget_s,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv),
            "sections": {},
        }  # fmt: skip
        if args.merge:  # a restarted child: keep what the earlier one finished
            earlier = json.loads((self.out / "gpu_check.json").read_text())
            self.results["started"] = earlier.get("started", self.results["started"])
            self.results["restarts"] = earlier.get("restarts", [])
            self.results["sections"] = {name: entry for name, entry in
                                        earlier.get("sections", {}).items()
                                        if entry.get("status") in FINAL}  # fmt: skip
        self.graphs = not args.no_graph  # the CUDA-graph step measured too
        self.child = Child(args)  # heartbeats, the CUDA probe
        self.device: Any = None  # torch.device, set by main()
        self.toy: dict[str, Any] = {}  # TrainConfig changes of a dry run
        self.corpus: Callable[[str], Any] = lambda name: None  # corpus by name, loaded once
        self.peak: dict[str, float] = {}

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, section: Callable[[Check], Any]) -> None:
        entry: dict[str, Any] = {}
        lost = False
        if not self.args.dry_run and self.left_s() < MIN_SECONDS[name]:
            entry = {"status": "skipped", "why": f"{self.left_s():.0f} s of budget left"}
        elif name in GRAPH_ONLY and not self.graphs:
            entry = {"status": "skipped", "why": "the CUDA-graph step is off (--no-graph)"}
        else:
            print(f"== {name} ({self.left_s():.0f} s of budget left)", flush=True)
            self.child.beat()
            started = time.monotonic()
            try:
                entry = {"status": "ok", "data": section(self)}
            except Exception as error:  # recorded, and the next section still runs
                entry = {"status": "error", "why": f"{type(error).__name__}: {error}"}
                try:
                    self.child.check_after_error(self.device, error)
                except CudaContextLost as gone:
                    lost, entry = True, {"status": "lost", "why": str(gone)}
                print(f"   {name} failed: {entry['why']}", flush=True)
            entry["seconds"] = round(time.monotonic() - started, 1)
        self.results["sections"][name] = entry
        self.write()
        if lost:  # nothing more can run here: the supervisor starts a new process
            sys.exit(LOST_CONTEXT_EXIT)

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=2) + "\n")
        (self.out / "gpu_check.md").write_text(render_markdown(self.results, SECTIONS))


# --- the sections --------------------------------------------------------------------


def environment(check: Check) -> dict[str, Any]:
    import torch

    import tune_lm.lm.fit  # noqa: F401  (the LM layer imports without Ray or MLflow)

    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cpus": os.cpu_count(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(check.device),
    }  # fmt: skip
    if check.device.type == "cuda":
        props = torch.cuda.get_device_properties(check.device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count,
                    capability=f"{props.major}.{props.minor}")  # fmt: skip
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True)  # fmt: skip
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    import_check = {}
    for module in ("pydantic", "yaml", "tqdm", "pytest", "textbook", "gpu_measure"):
        __import__(module)
        import_check[module] = "ok"
    info["imports"] = import_check
    for banned in ("ray", "mlflow", "optuna"):
        info[f"{banned}_imported"] = banned in sys.modules
    return info


def peak_section(check: Check) -> dict[str, Any]:
    from gpu_measure import peak

    size, repeats = (256, 2) if check.args.dry_run else (8192, 10)
    check.peak = peak(check.device, size, repeats)
    return check.peak


def throughput(check: Check) -> dict[str, Any]:
    from gpu_measure import SETTINGS, VARIANTS, measure_variant, short_eval
    from gpu_measure import train_flops_per_token as flops

    from tune_lm.lm.config import TrainConfig

    rows, partial, errors = [], False, {}
    warmup, measure = check.args.warmup_batches, check.args.measure_batches
    settings = list(SETTINGS.items())
    if check.args.dry_run:  # toy sizes make the settings alike: an LSTM and a GRU cover the paths
        settings = settings[:2]
    for setting, (data, changes) in settings:
        corpus = short_eval(check.corpus(data))
        config = TrainConfig(data=data, device=str(check.device), **{**changes, **check.toy})
        speeds: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for round_index in range(check.args.rounds):
            order = list(VARIANTS) if round_index % 2 == 0 else list(VARIANTS)[::-1]
            for name in order:
                if check.left_s() < 5 and not check.args.dry_run:
                    partial = True
                    break
                graphed = (VARIANTS[name] or {}).get("cuda_graph", False)
                if graphed and not check.graphs:
                    continue
                check.child.beat()
                try:
                    if graphed:
                        check.child.at_graphed_variant()
                    speed = measure_variant(name, config, corpus, check.device, warmup, measure)
                except Exception as error:  # one variant failing keeps the others' figures
                    check.child.check_after_error(check.device, error)
                    errors.setdefault(f"{setting} {name}", f"{type(error).__name__}: {error}"[:500])
                    print(f"   {setting:15s} {name}: failed ({error})", flush=True)
                    continue
                speeds[name].append(speed)
                print(f"   {setting:15s} round {round_index + 1} {name:14s} {speed:9.0f} tok/s",
                      flush=True)  # fmt: skip
        if not speeds["textbook fp32"]:
            break
        base = statistics.median(speeds["textbook fp32"])
        for name, values in speeds.items():
            if not values:
                continue
            median = statistics.median(values)
            variant = config.replace(**(VARIANTS[name] or {}))
            per_token = flops(variant, corpus.ntokens)
            peak_key = "bf16_tflops" if variant.precision == "bf16" else "fp32_tflops"
            peak_tflops = check.peak.get(peak_key)
            achieved = per_token * median / 1e12 if per_token else None
            rows.append({
                "setting": setting, "variant": name, "tokens_per_s": median, "runs": values,
                "vs_textbook": median / base, "achieved_tflops": achieved,
                "fraction_of_peak": achieved / peak_tflops if achieved and peak_tflops else None,
            })  # fmt: skip
        check.results["sections"]["throughput"] = {"status": "running", "data": {"rows": rows}}
        check.write()
    return {"rows": rows, "partial": partial, "errors": errors, "warmup_batches": warmup,
            "measured_batches": measure, "rounds": check.args.rounds}  # fmt: skip


def packing_section(check: Check, graphed: bool = False) -> dict[str, Any]:
    from gpu_packing import packing

    return packing(check, graphed)


def profile_section(check: Check) -> dict[str, Any]:
    from gpu_profile import profile_section as section

    return section(check)


def epochs(check: Check) -> dict[str, Any]:
    from gpu_measure import full_epoch

    from tune_lm.lm.config import TrainConfig

    data = "synthetic" if check.args.dry_run else "wikitext-2"
    corpus = check.corpus(data)
    rows: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    for model in ("LSTM", "GRU"):
        for bptt in (35, 50):
            for graph in (True, False) if check.graphs else (False,):
                if check.left_s() < 25 and not check.args.dry_run:
                    return {"rows": rows, "partial": True, "errors": errors}
                check.child.beat()
                config = TrainConfig(data=data, model=model, bptt=bptt, cuda_graph=graph,
                                     device=str(check.device), **check.toy)  # fmt: skip
                try:
                    row = {"model": model, "bptt": bptt, "cuda_graph": graph,
                           **full_epoch(config, corpus)}  # fmt: skip
                except Exception as error:  # the eager rows still count
                    check.child.check_after_error(check.device, error)
                    errors[f"{model} bptt {bptt} graph {graph}"] = repr(error)[:500]
                    continue
                rows.append(row)
                print(f"   WT2 {model} bptt {bptt}{' graphed' if graph else ''}: "
                      f"{row['train_s']:.1f} s/epoch, val ppl {row['val_ppl']:.1f}",
                      flush=True)  # fmt: skip
    return {"rows": rows, "partial": False, "errors": errors, "corpus": data}


# --- the command ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu_check"),
                        help="folder for gpu_check.json and gpu_check.md")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, every path")
    parser.add_argument("--budget-s", type=float, default=520.0, help="wall-clock budget")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds (alternated)")
    parser.add_argument("--warmup-batches", type=int, default=100,
                        help="throughput: the warm-up, and each measured segment")  # fmt: skip
    parser.add_argument("--measure-batches", type=int, default=200)
    parser.add_argument("--packing", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--packing-seconds", type=float, default=8.0)
    parser.add_argument("--segment-batches", type=int, default=100,
                        help="packing: batches between the workers' clock readings")  # fmt: skip
    parser.add_argument("--no-graph", action="store_true",
                        help="leave out the CUDA-graph step's measurements")  # fmt: skip
    parser.add_argument("--packing-worker", metavar="SPEC", help=argparse.SUPPRESS)
    # the supervisor's child (gpu_supervise.py): its deadline (epoch s), heartbeat file,
    # whether to keep the sections an earlier child finished; a cap on heartbeat intervals
    parser.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--heartbeat", help=argparse.SUPPRESS)
    parser.add_argument("--merge", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quiet-limit-s", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(BENCHMARKS))
    if not (args.supervised or args.packing_worker):
        return supervise(sys.argv[1:] if argv is None else list(argv), args,
                         Path(__file__).resolve(), SECTIONS)  # fmt: skip
    if args.packing_worker:
        from gpu_measure import packing_worker

        packing_worker(json.loads(args.packing_worker))
        return 0
    if "TUNE_LM_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
        os.environ["TUNE_LM_DATA_DIR"] = str(SHARED_DATA)

    import torch

    check = Check(args)
    if args.dry_run:
        check.device = torch.device("cpu")
        args.warmup_batches, args.measure_batches, args.rounds = 2, 4, 1
        args.packing, args.packing_seconds, args.segment_batches = [1, 2], 1.0, 2
        # toy models and a capped epoch: every path runs, in seconds, on a CPU
        # (one thread each: the packing workers and pytest's other worker share 2 cores)
        check.toy = {"emsize": 16, "nhid": 16, "max_tokens_per_epoch": 4000, "threads": 1}
        torch.set_num_threads(1)  # the textbook loop too
    else:
        if not torch.cuda.is_available():
            print("no CUDA GPU is visible: run this on a GPU machine, or use --dry-run here",
                  file=sys.stderr)  # fmt: skip
            return 2
        check.device = torch.device("cuda")
        check.toy = {}
    corpora: dict[str, Any] = {}

    def corpus(name: str) -> Any:
        from tune_lm.lm.data import load_corpus

        if args.dry_run and name != "synthetic":
            name = "synthetic"
        if name not in corpora:
            corpora[name] = load_corpus(name)
        return corpora[name]

    check.corpus = corpus
    if args.dry_run:
        check.results["data_found"] = _data_found()
        print(f"dry run: corpora {check.results['data_found']}; would run sections "
              f"{', '.join(args.sections)} within {args.budget_s:.0f} s on a GPU", flush=True)
    functions = {"environment": environment, "tests": gpu_tests, "peak": peak_section,
                 "throughput": throughput, "profile": profile_section, "epochs": epochs,
                 "packing": packing_section,
                 "packing_graphed": lambda c: packing_section(c, graphed=True)}  # fmt: skip
    for name in SECTIONS:
        if name in args.sections:
            check.run(name, functions[name])
    failed = [n for n, e in check.results["sections"].items() if e["status"] == "error"]
    print(f"wrote {check.out / 'gpu_check.json'} and gpu_check.md; "
          f"{'failed: ' + ', '.join(failed) if failed else 'no section failed'}", flush=True)
    return 1 if failed else 0


def _data_found() -> dict[str, bool]:
    """Whether PTB and WikiText-2 are in TUNE_LM_DATA_DIR (the GPU machine has no network)."""
    data_dir = Path(os.environ.get("TUNE_LM_DATA_DIR") or "/nonexistent")
    return {name: (data_dir / name / "train.txt").is_file() for name in ("ptb", "wikitext-2")}


if __name__ == "__main__":
    sys.exit(main())

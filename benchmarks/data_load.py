"""Corpus load time: first load (read + tokenise + write the cache) and cached loads.

Each load runs in a fresh process (as a search or a trainer start does), against an
empty cache folder for the first load and the filled one afterwards.

    python benchmarks/data_load.py --json benchmarks/results/data_load.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMED = """
import sys, time
start = time.perf_counter()
from tune_lm.lm.data import load_corpus
imported = time.perf_counter()
corpus = load_corpus(sys.argv[1], cache_dir=sys.argv[2])
print(time.perf_counter() - imported, imported - start, corpus.train.numel())
"""


def timed_load(folder: Path, cache: Path) -> tuple[float, float, int]:
    """(load seconds, import seconds, train tokens) of one load in a new process."""
    out = subprocess.run([sys.executable, "-c", TIMED, str(folder), str(cache)], check=True,
                         capture_output=True, text=True, cwd=REPO).stdout.split()  # fmt: skip
    return float(out[0]), float(out[1]), int(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data", nargs="+", default=[str(REPO.parent / "shared/data/wikitext-2"),
                                                      str(REPO.parent / "shared/data/ptb")])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="benchmarks/results/data_load.json")
    args = parser.parse_args()
    rows = []
    for folder in map(Path, args.data):
        firsts, cached, imports = [], [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache:
                seconds, imported, tokens = timed_load(folder, Path(cache))
                firsts.append(seconds)
                imports.append(imported)
                for _ in range(args.repeats):
                    cached.append(timed_load(folder, Path(cache))[0])
        rows.append({"corpus": folder.name, "train_tokens": tokens,
                     "first_load_s": statistics.median(firsts),
                     "cached_load_s": statistics.median(cached),
                     "import_s": statistics.median(imports),
                     "first_runs": firsts, "cached_runs": cached})  # fmt: skip
    print("| corpus | train tokens | first load (s) | cached load (s) | import lm.data (s) |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['corpus']} | {row['train_tokens']:,} | {row['first_load_s']:.2f} | "
              f"{row['cached_load_s']:.3f} | {row['import_s']:.2f} |")  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"repeats": args.repeats, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""The GPU check's correctness section: the GPU-marked tests of the language-model layer,
run by pytest in a subprocess and read back from its JUnit XML. On a CPU (--dry-run)
they must all be collected and all be skipped."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def gpu_tests(check: Any) -> dict[str, Any]:
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py",
               "tests/test_gpu_graph.py", "-q", "-p", "no:cacheprovider"]  # fmt: skip
    collected: list[str] = []
    if check.args.dry_run:  # then run them too: without CUDA each must be skipped
        done = subprocess.run([*command, "--collect-only"], cwd=REPO, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        collected = [line for line in done.stdout.splitlines() if "::" in line]
        if done.returncode != 0 or not collected:
            raise RuntimeError(f"pytest collected nothing (exit {done.returncode}): "
                               f"{done.stdout[-500:]}{done.stderr[-500:]}")  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        junit = Path(scratch) / "junit.xml"
        timeout = max(30.0, min(240.0, check.left_s() - 200))
        check.child.beat(timeout + 60)
        try:
            done = subprocess.run([*command, f"--junitxml={junit}", "--timeout=120"], cwd=REPO,
                                  capture_output=True, text=True, timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"exit": "timeout", "timeout_s": timeout}
        (check.out / "gpu_tests.log").write_text(done.stdout + done.stderr)
        cases = parse_junit(junit) if junit.exists() else []
    outcomes = [case["outcome"] for case in cases]
    result = {"exit": done.returncode, "passed": outcomes.count("passed"),
              "failed": outcomes.count("failed"), "skipped": outcomes.count("skipped"),
              "cases": cases}  # fmt: skip
    if check.args.dry_run:
        result["collected"] = len(collected)
        if len(cases) != len(collected) or result["skipped"] != len(cases):
            raise RuntimeError(f"on a CPU every GPU test must be skipped: {result}")
    return result


def parse_junit(path: Path) -> list[dict[str, Any]]:
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", (child.get("message") or "")[:300]
            elif child.tag == "skipped":
                outcome, message = "skipped", (child.get("message") or "")[:300]
        cases.append({"test": case.get("name"), "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "message": message})  # fmt: skip
    return cases

"""The prepared GPU check runs end to end on a CPU (``--dry-run``): every section's code
path at toy sizes, the GPU tests collected, nothing of Ray, MLflow or Optuna imported."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from tune_lm.lm.config import TrainConfig


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_section(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "gpu_check.json").read_text())
    sections = results["sections"]
    assert list(sections) == ["environment", "tests", "peak", "throughput", "profile", "packing",
                              "epochs", "packing_graphed"]  # fmt: skip
    assert {name: entry["status"] for name, entry in sections.items()} == dict.fromkeys(
        sections, "ok"
    )
    env = sections["environment"]["data"]
    assert not (env["ray_imported"] or env["mlflow_imported"] or env["optuna_imported"])
    assert sections["tests"]["data"]["collected"] >= 20  # test_gpu.py and test_gpu_graph.py
    rows = sections["throughput"]["data"]["rows"]
    assert len(rows) == 2 * 6 and all(row["tokens_per_s"] > 0 for row in rows)
    assert {row["variant"] for row in rows if row["vs_textbook"] == 1.0} == {"textbook fp32"}
    profiled = sections["profile"]["data"]["rows"]
    assert [row["step"] for row in profiled] == ["eager", "CUDA graph"]
    for row in profiled:  # a CPU: host ops counted, no kernels, no GPU share
        assert row["wall_ms_per_step"] > 0 and row["host_ops_per_step"] > 0
        assert row["kernels_per_step"] == 0 and row["gpu_busy"] is None
    epochs = sections["epochs"]["data"]["rows"]
    assert [row["cuda_graph"] for row in epochs] == [True, False] * 4
    for graphed, eager in zip(epochs[::2], epochs[1::2], strict=True):  # same arithmetic on a CPU
        assert graphed["val_ppl"] == eager["val_ppl"]
    for name, graphed in (("packing", False), ("packing_graphed", True)):
        assert sections[name]["data"]["cuda_graph"] is graphed
        packing = sections[name]["data"]["rows"]
        assert [row["trials"] for row in packing] == [1, 2]
        assert all(row["aggregate_tokens_per_s"] > 0 for row in packing)
    markdown = (out / "gpu_check.md").read_text()
    assert "| setting | variant | tokens/s | x textbook | of peak |" in markdown
    assert "| trials | aggregate tokens/s |" in markdown
    assert "| setting | step | wall ms | GPU ms | GPU busy | kernels | host ops |" in markdown


def test_flops_per_token_counts_each_matrix_product():
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from gpu_measure import train_flops_per_token

    config = TrainConfig(model="LSTM", emsize=200, nhid=200, nlayers=2)
    recurrent = 2 * 4 * 200 * (200 + 200) * 2  # two layers, four gates, input + recurrent
    decoder = 2 * 200 * 10000
    assert train_flops_per_token(config, 10000) == 3 * (recurrent + decoder)
    assert train_flops_per_token(config.replace(decoder="adaptive"), 10000) is None


def test_a_failed_variant_is_reported_beside_the_figures_that_were_measured():
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from gpu_check import SECTIONS
    from gpu_report import render_markdown

    row = {"setting": "PTB LSTM 2x200", "variant": "textbook fp32", "tokens_per_s": 1000.0,
           "vs_textbook": 1.0, "fraction_of_peak": None}  # fmt: skip
    results = {"dry_run": False, "started": "now", "sections": {"throughput": {
        "status": "ok", "data": {"rows": [row], "errors": {
            "PTB LSTM 2x200 graphed fp32": "RuntimeError: capture failed"}}}}}  # fmt: skip
    markdown = render_markdown(results, SECTIONS)
    assert "| PTB LSTM 2x200 | textbook fp32 | 1,000 | 1.00 | - |" in markdown
    assert "- throughput, failed: PTB LSTM 2x200 graphed fp32: RuntimeError: capture failed" in (
        markdown)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["lost", "stall"])
def test_a_check_that_loses_cuda_or_stalls_is_restarted_without_graphs(tmp_path, fault):
    """The supervisor: a child whose CUDA context is lost (simulated: the probe fails after
    an error) or that goes silent (simulated: sleeps at the first graphed variant) is
    replaced by one that runs the unfinished sections with the CUDA-graph step off."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(out),
         "--sections", "environment", "throughput", "epochs", "--quiet-limit-s", "10"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TUNE_LM_GPU_CHECK_FAULT": fault},
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 1, log[-3000:]  # the graphed figures are missing
    results = json.loads((out / "gpu_check.json").read_text())
    [restart] = results["restarts"]
    assert restart["remaining"] == ["throughput", "epochs"]
    if fault == "lost":
        assert restart["why"] == "lost its CUDA context"
        assert "illegal memory access" in restart["in_section"]["throughput"]
    else:
        assert restart["why"].startswith("was silent past its announced heartbeat")
        assert "in at_graphed_variant" in log  # the silent child's stacks, dumped before the kill
    assert log.count("== environment") == 1  # finished before the fault: kept, not run again
    sections = results["sections"]
    assert {name: entry["status"] for name, entry in sections.items()} == {
        "environment": "ok", "throughput": "ok", "epochs": "ok"}
    variants = {row["variant"] for row in sections["throughput"]["data"]["rows"]}
    assert variants == {"textbook fp32", "tune_lm fp32", "tune_lm bf16", "adaptive fp32"}
    assert [row["cuda_graph"] for row in sections["epochs"]["data"]["rows"]] == [False] * 4
    assert "**restart 1**" in (out / "gpu_check.md").read_text()
    assert not (out / "heartbeat").exists()

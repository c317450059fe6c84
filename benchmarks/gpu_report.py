"""The GPU check's Markdown report (``gpu_check.md``), from its JSON results: a line or a
table per section, and each section's failed rows beside the figures that were measured."""

from __future__ import annotations

import statistics
from typing import Any


def render_markdown(results: dict[str, Any], order: tuple[str, ...]) -> str:
    """The Markdown report of the check's results, sections in ``order``."""
    sections = results["sections"]
    lines = [f"# GPU check ({'dry run, CPU' if results['dry_run'] else 'GPU'}), "
             f"{results['started']}", ""]  # fmt: skip
    env = sections.get("environment", {}).get("data") or {}
    if env:
        lines += [f"Device: {env.get('gpu', env.get('device'))}; torch {env.get('torch')}, "
                  f"CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, "
                  f"driver/max SM clock {env.get('nvidia_smi', '-')}.", ""]  # fmt: skip
    for restart in results.get("restarts", []):
        cut = restart.get("in_section", {})
        where = f" ({'; '.join(f'in {n}: {why}' for n, why in cut.items())})" if cut else ""
        again = ", ".join(restart["remaining"]) or "nothing"
        lines += [f"**restart {restart['attempt']}**: the check's process {restart['why']}"
                  f"{where}; {again} run again in a new process with the CUDA-graph step off.",
                  ""]  # fmt: skip
    for name in order:
        entry = sections.get(name)
        if entry is None:
            continue
        if entry["status"] not in ("ok", "running"):
            lines += [f"**{name}**: {entry['status']} ({entry.get('why', '')})", ""]
            continue
        data = entry.get("data") or {}
        if name == "tests":
            lines += [f"**tests** (`pytest -m gpu`): {data.get('passed')} passed, "
                      f"{data.get('failed')} failed, {data.get('skipped')} skipped.", ""]
            lines += [f"- {c['outcome']}: {c['test']} {c['message']}".rstrip()
                      for c in data.get("cases", []) if c["outcome"] != "passed"]
        elif name == "peak":
            lines += [f"**peak** ({data['size']}^3 matrix product): bf16 "
                      f"{data['bf16_tflops']:.1f}, fp32 {data['fp32_tflops']:.1f}, tf32 "
                      f"{data['tf32_tflops']:.1f} TFLOP/s.", ""]  # fmt: skip
        elif name == "throughput":
            lines += ["**throughput** (training tokens/s, median of rounds; x textbook; "
                      "fraction of the matching peak)", "",
                      "| setting | variant | tokens/s | x textbook | of peak |",
                      "|---|---|---:|---:|---:|"]  # fmt: skip
            for row in data.get("rows", []):
                fraction = row.get("fraction_of_peak")
                lines.append(f"| {row['setting']} | {row['variant']} | "
                             f"{row['tokens_per_s']:,.0f} | {row['vs_textbook']:.2f} | "
                             f"{f'{fraction:.1%}' if fraction else '-'} |")  # fmt: skip
            lines.append("")
        elif name == "profile":
            lines += _profile(data)
        elif name == "epochs":
            lines += ["**epochs** (WikiText-2, 2 layers, emsize 200, one full epoch)", "",
                      "| model | bptt | step | train s/epoch | with validation s | tokens/s "
                      "| val ppl |", "|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
            lines += [f"| {r['model']} | {r['bptt']} | "
                      f"{'CUDA graph' if r.get('cuda_graph') else 'eager'} | {r['train_s']:.1f} | "
                      f"{r['epoch_with_validation_s']:.1f} | {r['tokens_per_s']:,.0f} | "
                      f"{r['val_ppl']:.1f} |" for r in data.get("rows", [])]  # fmt: skip
            lines.append("")
        elif name in ("packing", "packing_graphed"):
            step = "the step as a CUDA graph" if name == "packing_graphed" else "eager"
            lines += [f"**{name}** (trainings at once on one GPU, one process each; {step})",
                      "",
                      "| trials | aggregate tokens/s | per trial | GPU memory in use MiB | "
                      "peak reserved per trial MiB |", "|---:|---:|---:|---:|---:|"]  # fmt: skip
            for row in data.get("rows", []):
                reserved = [r for r in row["peak_reserved_mib"] if r is not None]
                used = row["gpu_memory_used_mib"]
                lines.append(f"| {row['trials']} | {row['aggregate_tokens_per_s']:,.0f} | "
                             f"{statistics.median(row['per_trial_tokens_per_s']):,.0f} | "
                             f"{'-' if used is None else used} | "
                             f"{f'{max(reserved):,.0f}' if reserved else '-'} |")  # fmt: skip
            lines.append("")
        errors = data.get("errors") or {}
        if errors:
            lines += [f"- {name}, failed: {key}: {why}" for key, why in errors.items()] + [""]
    return "\n".join(lines) + "\n"


def _profile(data: dict[str, Any]) -> list[str]:
    """Markdown lines of the ``profile`` section."""
    lines = ["**profile** (one training step, fp32: wall ms, ms the GPU spends in kernels, "
             "its share of the wall, kernels and host ops per step)", "",
             "| setting | step | wall ms | GPU ms | GPU busy | kernels | host ops |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row in data.get("rows", []):
        busy = "-" if row["gpu_busy"] is None else f"{row['gpu_busy']:.0%}"
        lines.append(
            f"| {row['setting']} | {row['step']} | {row['wall_ms_per_step']:.2f} | "
            f"{row['device_ms_per_step']:.2f} | {busy} | {row['kernels_per_step']:.0f} | "
            f"{row['host_ops_per_step']:.0f} |"
        )
    graphed = [r for r in data.get("rows", []) if r["step"] == "CUDA graph"]
    for row in graphed[:1]:
        top = ", ".join(f"`{name}` {ms:.3f}" for name, ms in row["top_kernels_ms_per_step"].items())
        lines += ["", f"Top kernels, {row['setting']} as a CUDA graph (ms per step): {top}"]
    return lines + [""]

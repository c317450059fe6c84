"""The report of a search (``python -m tune_lm.report EXPERIMENT``): tables and pictures
that answer "which cell, at what cost?" from a finished search: its folder, its storage
URI (``s3://...``), or its MLflow experiment (``--mlflow NAME``).

Writes into ``EXPERIMENT/report/``: ``trials.md``/``.csv`` (every trial), one grouped
table per ``--by`` parameter (cell type always), and PNGs: validation perplexity per
epoch, best perplexity against seconds per epoch with the Pareto front, best-so-far
against wall-clock time, the expected best against the number of trials
(``expected_best.md``/``.png``, Dodge et al. 2019), the confirmed finalists
(``confirmed.md``, when the search confirmed them), and Optuna's parameter importances.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tune_lm.lm import metrics as M
from tune_lm.lm.errors import TuneLMError
from tune_lm.reporting.expected_best import expected_best_curve
from tune_lm.reporting.verdicts import add_verdicts, seed_noise
from tune_lm.tuning.layout import SUMMARY_JSON
from tune_lm.tuning.results import TrialRow
from tune_lm.tuning.summary import confirmation_table, markdown_table

REPORT_DIR = "report"
log = logging.getLogger("tune_lm.report")  # not __main__ under python -m


def parse_summary(text: str | bytes, source: str) -> dict[str, Any]:
    """A search's summary.json, checked: a half-written or foreign file names itself."""
    try:
        summary = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise TuneLMError(
            f"{source} is not complete JSON ({error}): the search was still writing it, or it "
            "was cut off while being copied. Wait for the search to end (or --resume it, "
            "which writes it again), copy it again whole, then run the report again"
        ) from None
    space = summary.get("space") if isinstance(summary, dict) else None
    trials = summary.get("trials") if isinstance(summary, dict) else None
    row_keys = ("trial_id", "status", M.BEST_VAL_PPL)
    if not (
        isinstance(space, dict)
        and isinstance(space.get("parameters"), dict)
        and isinstance(space.get("fixed"), dict)
        and isinstance(trials, list)
        and all(isinstance(row, dict) and all(k in row for k in row_keys) for row in trials)
    ):
        raise TuneLMError(
            f"{source} is not the {SUMMARY_JSON} of a tune_lm search (it lacks the space's "
            f"parameters and fixed values, or trials with {', '.join(row_keys)}); give the "
            "folder of a search that has ended"
        )
    for index, row in enumerate(trials):
        problem = _row_problem(row, space["parameters"])
        if problem:
            raise TuneLMError(f"{source}: trial {index + 1} {problem}; the file was edited or "
                              "damaged. Copy it again, or --resume the search, which writes "
                              "it again")  # fmt: skip
    return summary


def _row_problem(row: dict[str, Any], parameters: dict[str, Any]) -> str | None:
    """What is wrong with a trial's row of summary.json, if anything (types, not values)."""
    for key in ("trial_id", "status"):
        if not isinstance(row[key], str):
            return f"has {key} {row[key]!r}, not text"
    best = row[M.BEST_VAL_PPL]
    if best is not None and (isinstance(best, bool) or not isinstance(best, int | float)):
        return f"has {M.BEST_VAL_PPL} {best!r}, not a number"
    for name in parameters:
        value = row.get(name)
        if value is not None and not isinstance(value, str | int | float):
            return f"has {name} {value!r}, not a single value"
    return None


def check_by(summary: dict[str, Any], by: Sequence[str]) -> None:
    """Every ``--by`` name is a searched or fixed parameter of the search."""
    known = [*summary["space"]["parameters"], *summary["space"]["fixed"]]
    unknown = [name for name in by if name not in known]
    derived = summary["space"].get("derived") or {}
    aliases = []
    for name in unknown:
        source, seen = name, set()
        while source in derived and source not in seen:  # a chain a: b, b: c ends at c
            seen.add(source)
            source = derived[source]
        if source != name:
            aliases.append(f"{name} takes {source}'s value (derived), so --by {source} "
                           "groups the same trials")  # fmt: skip
    if unknown:
        raise TuneLMError(f"--by {' '.join(unknown)}: not a parameter of this search; it has "
                          f"{', '.join(known)}{''.join('. ' + a for a in aliases)}")  # fmt: skip


def read_history(result_file: Path) -> list[dict[str, Any]]:
    """A trial's per-evaluation results (Ray's result.json, one JSON object per line). A
    line cut off by a search still writing it is skipped with a warning; a file that is
    damaged or cannot be read is left out with one warning."""
    try:
        lines = result_file.read_text(errors="replace").splitlines()
    except OSError as error:  # a folder of that name, no permission ...
        log.warning("%s cannot be read (%s); that trial's curve is left out", result_file,
                    error.strerror or error)  # fmt: skip
        return []
    history, skipped = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            skipped.append(number)
            continue
        history.append(entry)
    if skipped == [len(lines)]:
        log.warning("%s: line %d is not a complete JSON result (a search still writing "
                    "it?); skipped", result_file, skipped[0])  # fmt: skip
    elif skipped:
        log.warning("%s: %d of its %d lines are not JSON results (lines %s); the file is "
                    "damaged, and those lines are skipped", result_file, len(skipped),
                    len(lines), ", ".join(map(str, skipped[:5])) + (" ..." if len(skipped) > 5
                                                                   else ""))  # fmt: skip
    return history


def load_trials(folder: Path) -> tuple[dict[str, Any], list[TrialRow]]:
    """The search's summary.json plus each trial's per-evaluation results."""
    summary_file = folder / SUMMARY_JSON
    if not summary_file.is_file():
        raise TuneLMError(
            f"{folder}: no {SUMMARY_JSON} here; give the folder of a search "
            "(tune_lm_runs/NAME) whose run has ended"
        )
    summary = parse_summary(summary_file.read_bytes(), str(summary_file))
    histories: dict[str, list[dict[str, float]]] = {}
    for result_file in folder.glob("*/result.json"):
        lines = read_history(result_file)
        if lines:
            histories[str(lines[0].get("trial_id"))] = lines
    params = list(summary["space"]["parameters"])
    records = [TrialRow.from_flat(row, params, histories.get(str(row["trial_id"]), []))
               for row in summary["trials"]]  # fmt: skip
    return summary, records


def grouped(records: list[TrialRow], by: str) -> list[dict[str, Any]]:
    """One row per value of ``by``: trials, best val ppl (and which trial), median s/epoch."""
    groups: dict[Any, list[TrialRow]] = {}
    for record in records:
        groups.setdefault(record.params.get(by), []).append(record)
    rows = []
    for value, members in groups.items():
        best = min(members, key=lambda r: r.best_val_ppl)
        times = [r.epoch_time_s for r in members if math.isfinite(r.epoch_time_s)]
        rows.append(
            {
                by: value,
                "trials": len(members),
                M.BEST_VAL_PPL: best.best_val_ppl,
                "best_trial": best.trial_id,
                "median_epoch_time_s": statistics.median(times) if times else None,
            }
        )
    return sorted(rows, key=lambda row: row[M.BEST_VAL_PPL])


def _write_table(rows: list[dict[str, Any]], columns: list[str], stem: Path) -> list[Path]:
    stem.with_suffix(".md").write_text(markdown_table(rows, columns) + "\n")
    with open(stem.with_suffix(".csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return [stem.with_suffix(".md"), stem.with_suffix(".csv")]


def write_report(folder: Path, by: Sequence[str] = ()) -> list[Path]:
    """Every table and picture of the report; returns the files written. Everything is
    read and checked (the summary, ``by``) before the first file is written."""
    summary, records = load_trials(folder)
    check_by(summary, by)
    if not any(math.isfinite(record.best_val_ppl) for record in records):
        if records and all(r.status.startswith("diverged") for r in records):
            raise TuneLMError(f"{folder}: every trial diverged ({len(records)}: its loss became "
                              "inf or NaN), so there is no perplexity to report; search a "
                              "lower learning rate, or clip the gradients (clip)")  # fmt: skip
        raise TuneLMError(f"{folder}: no trial reported a result ({len(records)} started), so "
                          "there is nothing to report; continue the search (--resume), or "
                          "start it again with a longer time budget")  # fmt: skip
    from tune_lm.reporting import (
        plots as report_plots,  # matplotlib (and its cache) only once all is checked
    )

    out = folder / REPORT_DIR
    check_writable(out, "the report folder")
    out.mkdir(exist_ok=True)
    params = list(summary["space"]["parameters"])
    columns = ["trial_id", *params, M.EPOCHS_RUN, "status", M.BEST_VAL_PPL, M.EPOCH_TIME_S,
               M.TOKENS_PER_S, M.TEST_PPL]  # fmt: skip
    written = _write_table(summary["trials"], columns, out / "trials")
    noise = seed_noise(summary)
    for name in dict.fromkeys(["model", *by]):
        if name not in params and name not in summary["space"]["fixed"]:
            continue  # a search that fixed no cell type
        for record in records:
            record.params.setdefault(name, summary["space"]["fixed"].get(name))
        rows = grouped(records, name)
        add_verdicts(rows, noise)
        header = [name, "trials", M.BEST_VAL_PPL, "best_trial", "median_epoch_time_s",
                  "vs_best", "verdict"]
        written += _write_table(rows, header, out / f"by_{name}")
    curve = expected_best_curve([r.best_val_ppl for r in records])
    shown = [point for point in curve
             if point["trials"] & (point["trials"] - 1) == 0 or point is curve[-1]]  # fmt: skip
    written += _write_table(shown, ["trials", "expected_best", "ci95_low", "ci95_high"],
                            out / "expected_best")  # fmt: skip
    written.append(report_plots.expected_best_plot(curve, out / "expected_best.png"))
    if summary.get("confirmed"):
        confirmed = out / "confirmed.md"
        confirmed.write_text(confirmation_table(summary["confirmed"]) + "\n")
        written.append(confirmed)
    written += report_plots.draw_all(records, folder, out, summary["space"]["parameters"])
    return written


def check_writable(folder: Path, what: str) -> None:
    """``folder`` is, or can be made, a folder we may write in; else say so before writing."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise TuneLMError(f"{what} {folder} cannot be made: {existing} is a file, not a folder. "
                          "Give another place")  # fmt: skip
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TuneLMError(
            f"{what} {folder} cannot be written ({existing} is read-only). Copy the "
            "experiment somewhere writable, or give another place"
        )


def write_search_report(folder: Path, path: str) -> dict[str, Path]:
    """At the end of a search: the report's tables and pictures, keyed ``report:NAME``
    (a failure here never fails the search). With remote storage the trials' results
    are copied beside the summary first."""
    try:
        if "://" in path:
            from tune_lm.reporting.sources import fetch_trial_results

            fetch_trial_results(path, folder)
        return {f"report:{p.name}": p for p in write_report(folder)}
    except Exception as error:
        log.warning("the report could not be written: %s", error)
        return {}

"""The table at the end of a search: one row per trial, the winner scored on test.

Also the classic study layout for grid searches (cell type across, settings down,
"test perplexity (seconds per epoch)" in each cell).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

from tune_lm.lm import metrics as M
from tune_lm.lm.atomic import atomic_file
from tune_lm.tuning.layout import GRID_TABLE_MD, SUMMARY_CSV, SUMMARY_JSON, SUMMARY_MD
from tune_lm.tuning.results import TrialRow
from tune_lm.tuning.space import SearchSpace


def human(value: Any) -> str:
    """A setting as a person writes it: 0.3 (not 0.30000000000000004), 4 (not 4.0),
    28.24 (4 significant digits), 0.0003 and 1e-05 as they are."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _measured(value: Any) -> str:
    """A measurement (perplexity, seconds): two decimals, three digits below 1; none
    (NaN: never measured) is left blank."""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, float) and not isinstance(value, bool):
        return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"
    return human(value)


def _is_measurement(column: str) -> bool:
    return "ppl" in column or column.endswith("_s")


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Settings written as :func:`human` does, measurements (``*ppl*``, ``*_s``) with
    two decimals."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_measured(row.get(c)) if _is_measurement(c) else human(row.get(c))
                                for c in columns) + " |" for row in rows]  # fmt: skip
    return "\n".join(lines)


def describe(params: dict[str, Any]) -> str:
    """A trial's searched settings in one phrase: ``LSTM emsize 128 nhid 256 lr 28.24``
    (the cell type's name stands alone)."""
    return " ".join(human(v) if k == "model" else f"{k} {human(v)}" for k, v in params.items())


SHORT_NAMES = {"emsize": "e", "nhid": "h", "nlayers": "L", "dropout": "d", "batch_size": "b",
               "seed": "s"}  # fmt: skip


def short_label(params: dict[str, Any]) -> str:
    """A trial's settings in a few characters, for MLflow's run list and plot labels:
    ``LSTM e200 h200 d0.2 lr 20.1 bptt 35``."""
    parts = []
    for key, value in params.items():
        if key == "model":
            parts.append(str(value))
        elif key in SHORT_NAMES:
            parts.append(f"{SHORT_NAMES[key]}{human(value)}")
        elif isinstance(value, float):
            parts.append(f"{key} {human(float(f'{value:.3g}'))}")
        else:
            parts.append(f"{key} {human(value)}")
    return " ".join(parts)


def top_table(rows: list[TrialRow], limit: int = 10) -> str:
    ranked = sorted(rows, key=lambda r: (r.best_val_ppl, r.trial_id))[:limit]
    params = list(dict.fromkeys(k for r in ranked for k in r.params))
    columns = ["trial_id", *params, M.EPOCHS_RUN, M.BEST_VAL_PPL, M.EPOCH_TIME_S, "status",
               M.TEST_PPL]  # fmt: skip
    return markdown_table([r.flat() for r in ranked], columns)


def grid_table(rows: list[TrialRow], space: SearchSpace) -> str:
    """Cell type (or the first grid parameter) across; the other grid settings and the
    test epochs down; "test ppl (s/epoch)" in each cell."""
    grid_params = list(space.parameters)
    across = "model" if "model" in grid_params else grid_params[0]
    down = [p for p in grid_params if p != across]
    across_values = space.parameters[across].values
    epochs = [*space.test_at_epochs, space.epochs]
    table = []
    for setting in itertools.product(*(space.parameters[p].values for p in down)):
        chosen = dict(zip(down, setting, strict=True))
        for epoch in dict.fromkeys(epochs):
            label = ", ".join(f"{k} {v}" for k, v in chosen.items())
            when = f"{epoch} epoch{'s' if epoch != 1 else ''}"
            line = {"run": f"{label}, {when}" if label else when}
            for value in across_values:
                match = [r for r in rows
                         if r.params.get(across) == value
                         and all(r.params.get(k) == v for k, v in chosen.items())]  # fmt: skip
                if not match:
                    continue
                line[str(value)] = _grid_cell(match, epoch, space.epochs)
            table.append(line)
    return markdown_table(table, ["run", *map(str, across_values)])


def _grid_cell(rows: list[TrialRow], epoch: int, last_epoch: int) -> str:
    """"test ppl (s/epoch)"; over repeats (one seed each) the mean, ± the standard
    deviation, and how many seeds."""
    scores = [row.test_ppl if epoch == last_epoch else row.extra.get(M.test_at_epoch(epoch))
              for row in rows]  # fmt: skip
    scores = [score for score in scores if score]
    seconds = statistics.median(row.epoch_time_s for row in rows)
    if not scores:
        return "—"
    if len(rows) == 1:
        return f"{_measured(scores[0])} ({seconds:.0f} s)"
    spread = f" ± {statistics.stdev(scores):.2f}" if len(scores) > 1 else ""
    return f"{statistics.mean(scores):.2f}{spread} ({seconds:.0f} s; {len(scores)} seeds)"


def write_summary(
    folder: Path,
    rows: list[TrialRow],
    space: SearchSpace,
    best: TrialRow | None,
    pareto: list[TrialRow] | None = None,
    confirmed: list[dict[str, Any]] | None = None,
    compute: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """summary.csv and summary.md (every trial), summary.json (with the winner and, when
    the finalists were confirmed, ``confirmed``: see :mod:`tune_lm.tuning.confirm`), and
    grid_table.md for grid studies."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / SUMMARY_CSV, "json": folder / SUMMARY_JSON, "md": folder / SUMMARY_MD}
    flat = [r.flat() for r in sorted(rows, key=lambda r: (r.best_val_ppl, r.trial_id))]
    columns = list(dict.fromkeys(k for row in flat for k in row))
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
    payload = {
        "space": space.model_dump(),
        "best_trial": best.flat() if best else None,
        "objectives": list(space.objectives),
        "pareto_trials": [r.flat() for r in pareto or []],
        "trials": flat,
    }
    payload.update(extra or {})
    if compute is not None:  # the compute ledger (tuning/compute.py)
        payload["compute"] = compute
    if confirmed is not None:
        payload["confirmed"] = confirmed
        payload["confirmed_best"] = next((e["trial_id"] for e in confirmed if e.get("winner")),
                                         None)  # fmt: skip
    with atomic_file(paths["json"], "w") as out:  # the report reads it while a search runs
        out.write(json.dumps(payload, indent=2, default=str) + "\n")
    text = top_table(rows, limit=len(rows)) + "\n"
    if confirmed:
        text += f"\n## Finalists, confirmed with fresh seeds\n\n{confirmation_table(confirmed)}\n"
    paths["md"].write_text(text)
    if space.searcher.type == "grid":
        paths["grid"] = folder / GRID_TABLE_MD
        paths["grid"].write_text(grid_table(rows, space) + "\n")
    return paths


def scored_before(folder: Path) -> dict[str, tuple[float, float]]:
    """trial id -> (best val ppl, test ppl) from an earlier summary of this experiment (a
    resumed or extended search): test is scored once per chosen weights, so a trial
    whose best weights are unchanged keeps its score."""
    try:
        trials = json.loads((folder / SUMMARY_JSON).read_text())["trials"]
        return {str(t["trial_id"]): (float(t["best_val_ppl"]), float(t["test_ppl"]))
                for t in trials if t.get("test_ppl") is not None}  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def outcome_counts(rows: list[TrialRow]) -> str:
    """``5 completed, 9 stopped early by ASHA, 2 stopped by the time budget, 0 failed``
    (a kind no trial ended in is left out, except completed and failed)."""
    counts = {"completed": 0, "stopped early by ASHA": 0, "diverged": 0, "failed": 0}
    other: dict[str, int] = {}
    for row in rows:
        kind = next((k for k in counts if row.status.startswith(k)), None)
        if kind is not None:
            counts[kind] += 1
            continue
        reason = re.search(r" by (the time budget|Ctrl-C|SIGTERM|SIGHUP)", row.status)
        label = (f"stopped{reason.group(0)}" if reason else "stopped where the recorded curve "
                 "ends" if "recorded curve ends" in row.status else "stopped before the end")
        other[label] = other.get(label, 0) + 1
    parts = [f"{counts['completed']} completed"]
    if counts["stopped early by ASHA"]:
        parts.append(f"{counts['stopped early by ASHA']} stopped early by ASHA")
    parts += [f"{n} {label}" for label, n in other.items()]
    if counts["diverged"]:
        parts.append(f"{counts['diverged']} diverged")
    parts.append(f"{counts['failed']} failed")
    return ", ".join(parts)


def describe_plan(space: SearchSpace, fits: int | None = None) -> str:
    """What the search will do, in one line. ``fits``: how many trials the connected Ray
    has room for at once (None: not known)."""
    if space.searcher.type == "grid":
        searcher = "every combination of the grid"
    else:
        searcher = f"Optuna {space.searcher.sampler.upper()} proposing"
    if space.scheduler.type != "fifo":
        rungs = ", ".join(f"{r:g}" for r in space.asha_rungs)
        at = f"epoch{'s' if len(space.asha_rungs) > 1 else ''} {rungs}"
        scheduler = (f"ASHA keeping the best 1/{space.scheduler.reduction_factor:g} at {at}"
                     if rungs else "ASHA (no rung before the last epoch)")  # fmt: skip
        if space.scheduler.type == "mo_asha":
            scheduler = "MO-ASHA (Pareto fronts) " + scheduler.removeprefix("ASHA ")
        if space.scheduler.type == "hyperband":
            scheduler = (f"Hyperband: {space.scheduler.brackets} brackets of ASHA, each "
                         f"keeping the best 1/{space.scheduler.reduction_factor:g} at its "
                         f"rungs (the first bracket's at {at})")  # fmt: skip
    else:
        scheduler = "every trial runs to the end (FIFO)"
    if space.scheduler.type == "pbt":
        share = f"{space.scheduler.quantile_fraction:.0%}"
        searcher = "random starting values"
        every = space.scheduler.perturbation_interval
        scheduler = (f"PBT every {every:g} epoch{'s' if every != 1 else ''}: the worst "
                     f"{share} continue the best {share}'s weights with "
                     f"{' and '.join(space.pbt_mutations)} perturbed")  # fmt: skip
    budget = space.budget
    trials = f"{space.total_trials} trial{'s' if space.total_trials != 1 else ''}"
    parts = [f"{trials} of {space.epochs} epochs ({searcher}; {scheduler})"]
    parts.append(_at_a_time(space, fits))
    if budget.time_budget:
        parts.append(f"time budget {budget.time_budget}")
    return ", ".join(part for part in parts if part)


def _at_a_time(space: SearchSpace, fits: int | None) -> str:
    wanted, total = space.budget.max_concurrent, space.total_trials
    if fits is not None and fits >= total and (not wanted or wanted >= total):
        return f"all {total} at once" if total > 1 else ""
    if fits is None or (wanted and wanted <= fits):
        return f"{wanted} at a time" if wanted else ""
    resources = space.resources
    each = f"{resources.cpus_per_trial:g} CPU"
    if resources.gpus_per_trial:
        each += f" and {resources.gpus_per_trial:g} GPU"
    room = f"this Ray has room for {fits} trial{'s' if fits != 1 else ''} of {each} at once"
    if not wanted:
        return f"{fits} at a time ({room})"
    return f"{fits} at a time, not {wanted}: {room} (max_concurrent {wanted})"


def confirmation_table(entries: list[dict[str, Any]]) -> str:
    """The finalists as a Markdown table: mean ± sd over seeds, and the verdict."""
    lines = ["| finalist | configuration | seeds | val ppl | test ppl | s/epoch "
             "| vs the winner (val ppl) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for entry in sorted(entries, key=lambda e: (not e.get("winner"), e["val_ppl_mean"])):
        if entry.get("winner"):
            verdict = "winner"
        elif "vs_winner" in entry:
            d = entry["vs_winner"]["val_ppl"]
            verdict = (f"{d['diff']:+.2f} [{d['ci95_low']:+.2f}, {d['ci95_high']:+.2f}]: "
                       f"{'within noise' if d['within_noise'] else 'worse'}")  # fmt: skip
        else:
            verdict = "no result"
        lines.append(
            f"| {entry['trial_id']} | {describe(entry['params'])} | {len(entry['seeds'])} | "
            f"{_pm(entry, 'val_ppl')} | {_pm(entry, 'test_ppl')} | {_pm(entry, 'epoch_time_s')} "
            f"| {verdict} |")  # fmt: skip
    return "\n".join(lines)


def _pm(entry: dict[str, Any], key: str) -> str:
    mean, sd = entry[f"{key}_mean"], entry[f"{key}_sd"]
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.2f} ± {sd:.2f}" if math.isfinite(sd) else f"{mean:.2f}"

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune_lm.lm import metrics as M
from tune_lm.lm.atomic import atomic_file
from tune_lm.tuning.space import SearchSpace

SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
GRID_TABLE_MD = "grid_table.md"


@dataclass
class TrialRow:
    trial_id: str
    params: dict[str, Any]  # the searched parameters
    epochs_run: float
    best_val_ppl: float
    epoch_time_s: float  # median over evaluations
    tokens_per_s: float
    status: str  # completed | stopped early by ASHA at epoch E | diverged | failed: ...
    test_ppl: float | None = None
    extra: dict[str, float] = field(default_factory=dict)  # e.g. test_ppl_epoch20
    evaluated: int = -1  # evaluations it reported (-1: not known)

    def flat(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            **self.params,
            M.EPOCHS_RUN: self.epochs_run,
            # inf: diverged; none: never evaluated (inf only to rank it last)
            M.BEST_VAL_PPL: None if self.evaluated == 0 else self.best_val_ppl,
            M.EPOCH_TIME_S: self.epoch_time_s,
            M.TOKENS_PER_S: self.tokens_per_s,
            "status": self.status,
            M.TEST_PPL: self.test_ppl,
            **self.extra,
        }


def trial_status(history: list[dict[str, float]], error: str | None, space: SearchSpace,
                 *, asha_stopped: bool = False, interrupted: str | None = None) -> str:  # fmt: skip
    """What became of a trial. Only ``asha_stopped`` (ASHA's own record of its decision)
    makes an early end "stopped early by ASHA"; otherwise it was the Ctrl-C/SIGTERM
    ``interrupted`` names, or the time budget."""
    if error:
        return f"failed: {error.strip().splitlines()[-1][:200]}"
    if not history:
        if interrupted:
            return f"stopped by {interrupted} before its first evaluation"
        if space.budget.time_budget:
            return "stopped by the time budget before its first evaluation"
        return "stopped before its first evaluation"
    if not math.isfinite(history[-1].get(M.VAL_PPL, math.inf)):
        return "diverged"
    last_epoch = history[-1].get(M.EPOCH, 0.0)
    if last_epoch >= space.epochs:
        return "completed"
    if asha_stopped:
        return f"stopped early by ASHA at epoch {last_epoch:g}"
    if interrupted:
        return f"stopped at epoch {last_epoch:g} by {interrupted} (--resume continues it)"
    if space.budget.time_budget:
        return f"stopped at epoch {last_epoch:g} by the time budget"
    return f"stopped at epoch {last_epoch:g}"


def make_row(
    trial_id: str,
    params: dict[str, Any],
    history: list[dict[str, float]],
    error: str | None,
    space: SearchSpace,
    *,
    asha_stopped: bool = False,
    interrupted: str | None = None,
) -> TrialRow:
    val = [h[M.VAL_PPL] for h in history if M.VAL_PPL in h]
    times = [h[M.EPOCH_TIME_S] for h in history if M.EPOCH_TIME_S in h]
    speeds = [h[M.TOKENS_PER_S] for h in history if M.TOKENS_PER_S in h]
    extra = {}
    for entry in history:
        extra.update(
            {k: v for k, v in entry.items() if k.startswith("test_ppl_epoch") and v == v}
        )  # (v == v drops the NaNs that fill evaluations without that metric)
    return TrialRow(
        trial_id=trial_id,
        params=params,
        epochs_run=history[-1].get(M.EPOCH, 0.0) if history else 0.0,
        best_val_ppl=min(val) if val else math.inf,
        epoch_time_s=statistics.median(times) if times else math.nan,
        tokens_per_s=statistics.median(speeds) if speeds else math.nan,
        status=trial_status(history, error, space, asha_stopped=asha_stopped,
                            interrupted=interrupted),
        extra=extra,
        evaluated=len(val),
    )


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
    across_values = space.parameters[across]["grid"]
    epochs = [*space.test_at_epochs, space.epochs]
    table = []
    for setting in itertools.product(*(space.parameters[p]["grid"] for p in down)):
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
    scores = [row.test_ppl if epoch == last_epoch else row.extra.get(f"test_ppl_epoch{epoch}")
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
) -> dict[str, Path]:
    """summary.csv and summary.md (every trial), summary.json (with the winner), and
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
    with atomic_file(paths["json"], "w") as out:  # the report reads it while a search runs
        out.write(json.dumps(payload, indent=2, default=str) + "\n")
    paths["md"].write_text(top_table(rows, limit=len(rows)) + "\n")
    if space.searcher.type == "grid":
        paths["grid"] = folder / GRID_TABLE_MD
        paths["grid"].write_text(grid_table(rows, space) + "\n")
    return paths


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
        reason = re.search(r" by (the time budget|Ctrl-C|SIGTERM)", row.status)
        label = f"stopped{reason.group(0)}" if reason else "stopped before the end"
        other[label] = other.get(label, 0) + 1
    parts = [f"{counts['completed']} completed"]
    if counts["stopped early by ASHA"]:
        parts.append(f"{counts['stopped early by ASHA']} stopped early by ASHA")
    parts += [f"{n} {label}" for label, n in other.items()]
    if counts["diverged"]:
        parts.append(f"{counts['diverged']} diverged")
    parts.append(f"{counts['failed']} failed")
    return ", ".join(parts)

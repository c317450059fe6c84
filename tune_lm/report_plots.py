"""The report's pictures (PNG): learning curves, perplexity vs cost with the Pareto
front, best-so-far over time, parameter importances."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from tune_lm import metrics as M  # noqa: E402

log = logging.getLogger(__name__)


def _colours(records: list[Any]) -> dict[Any, Any]:
    cells = sorted({str(r.params.get("model")) for r in records})
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {cell: cycle[i % len(cycle)] for i, cell in enumerate(cells)}


def _log_scale_if_wide(axis: Any, values: list[float]) -> None:
    finite = [v for v in values if math.isfinite(v) and v > 0]
    if finite and max(finite) / min(finite) > 10:
        axis.set_yscale("log")


def learning_curves(records: list[Any], path: Path) -> Path:
    colours = _colours(records)
    figure, axis = plt.subplots(figsize=(8, 5))
    values = []
    for record in records:
        points = [(h[M.EPOCH], h[M.VAL_PPL]) for h in record.history
                  if math.isfinite(h.get(M.VAL_PPL, math.inf))]  # fmt: skip
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        values += ys
        cell = str(record.params.get("model"))
        axis.plot(xs, ys, marker="o", markersize=3, color=colours[cell], alpha=0.8)
        axis.plot(xs[-1:], ys[-1:], marker="x", color=colours[cell])  # where it stopped
    for cell, colour in colours.items():
        axis.plot([], [], color=colour, label=cell)
    _log_scale_if_wide(axis, values)
    axis.set(xlabel="epoch", ylabel="validation perplexity",
             title="Validation perplexity per epoch (x: where a trial stopped)")  # fmt: skip
    axis.legend(title="cell")
    axis.grid(alpha=0.3)
    return _save(figure, path)


def pareto_plot(records: list[Any], path: Path) -> Path:
    from tune_lm.report import pareto_front

    usable = [r for r in records if math.isfinite(r.best_val_ppl) and math.isfinite(r.epoch_time_s)]
    points = [(r.epoch_time_s, r.best_val_ppl) for r in usable]
    front = sorted(pareto_front(points), key=lambda i: points[i][0])
    colours = _colours(usable)
    figure, axis = plt.subplots(figsize=(8, 5))
    for cell, colour in colours.items():
        mine = [
            p for p, r in zip(points, usable, strict=True) if str(r.params.get("model")) == cell
        ]
        if mine:
            axis.scatter(*zip(*mine, strict=True), color=colour, label=cell, alpha=0.8)
    if front:
        axis.plot(
            [points[i][0] for i in front],
            [points[i][1] for i in front],
            "k--",
            marker="o",
            markerfacecolor="none",
            markersize=11,
            label="Pareto front",
        )
    _log_scale_if_wide(axis, [p[1] for p in points])
    axis.set(xlabel="seconds per epoch", ylabel="best validation perplexity",
             title="Perplexity vs cost per trial")  # fmt: skip
    axis.legend()
    axis.grid(alpha=0.3)
    return _save(figure, path)


def best_so_far(records: list[Any], path: Path) -> Path:
    events = sorted((h["timestamp"], h[M.VAL_PPL]) for r in records for h in r.history
                    if "timestamp" in h and math.isfinite(h.get(M.VAL_PPL, math.inf)))  # fmt: skip
    figure, axis = plt.subplots(figsize=(8, 5))
    if events:
        start, best, xs, ys = events[0][0], math.inf, [], []
        for stamp, value in events:
            best = min(best, value)
            xs.append((stamp - start) / 60)
            ys.append(best)
        axis.step(xs, ys, where="post")
        _log_scale_if_wide(axis, ys)
    axis.set(xlabel="minutes since the first result", ylabel="best validation perplexity",
             title="Best so far")  # fmt: skip
    axis.grid(alpha=0.3)
    return _save(figure, path)


def importances(folder: Path, path: Path) -> Path | None:
    """Optuna's parameter importances (fANOVA, see :func:`importance_evaluator`), from the
    study in the experiment folder."""
    import optuna

    from tune_lm.searchers import STUDY_FILE, STUDY_NAME

    journal = folder / STUDY_FILE
    if not journal.is_file():
        return None
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2 or len(study.best_trial.params) < 1:
        return None
    evaluator, method = importance_evaluator()
    try:
        scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as error:  # e.g. every trial had the same value
        log.info("no parameter importances: %s", error)
        return None
    figure, axis = plt.subplots(figsize=(8, 5))
    names = list(scores)[::-1]
    axis.barh(names, [scores[n] for n in names])
    axis.set(xlabel=f"importance ({method}, completed trials)", title="Which parameters mattered")
    return _save(figure, path)


def importance_evaluator() -> tuple[Any, str]:
    """(evaluator, its name for the plot). fANOVA, named explicitly: Optuna 5's default is
    PED-ANOVA. fANOVA needs scikit-learn (MLflow installs it); without it, PED-ANOVA,
    and the plot says so."""
    import optuna

    try:
        return optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA"
    except ImportError:  # Optuna checks for scikit-learn's random forest here
        return optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA"


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def draw_all(records: list[Any], folder: Path, out: Path) -> list[Path]:
    written = [
        learning_curves(records, out / "learning_curves.png"),
        pareto_plot(records, out / "pareto.png"),
        best_so_far(records, out / "best_so_far.png"),
    ]
    drawn = importances(folder, out / "importances.png")
    return written + ([drawn] if drawn else [])

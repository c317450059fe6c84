"""The report's pictures (PNG): learning curves, parallel coordinates, perplexity vs
cost with the Pareto front, best-so-far over time, parameter importances."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from tune_lm.lm import metrics as M  # noqa: E402
from tune_lm.tuning.summary import human, short_label  # noqa: E402

log = logging.getLogger(__name__)


def _colours(records: list[Any]) -> dict[Any, Any]:
    cells = sorted({str(r.params.get("model")) for r in records})
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {cell: cycle[i % len(cycle)] for i, cell in enumerate(cells)}


def _log_scale_if_wide(axis: Any, values: list[float]) -> None:
    finite = [v for v in values if math.isfinite(v) and v > 0]
    if finite and max(finite) / min(finite) > 10:
        axis.set_yscale("log")


LABELLED_BEST = 3  # the best few trials are named on the learning curves


def learning_curves_figure(records: list[Any]) -> Any:
    """Validation perplexity per epoch, a curve per trial coloured by cell; an x where a
    trial was stopped before its last epoch (not on completed ones); the best few named."""
    colours = _colours(records)
    figure, axis = plt.subplots(figsize=(8, 5))
    values = []
    ranked = sorted((r for r in records if math.isfinite(r.best_val_ppl)),
                    key=lambda r: r.best_val_ppl)[:LABELLED_BEST]  # fmt: skip
    for record in records:
        points = [(h[M.EPOCH], h[M.VAL_PPL]) for h in record.history
                  if math.isfinite(h.get(M.VAL_PPL, math.inf))]  # fmt: skip
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        values += ys
        cell = str(record.params.get("model"))
        axis.plot(xs, ys, marker="o", markersize=3, color=colours[cell], alpha=0.8)
        if record.status != "completed":  # where it stopped
            axis.plot(xs[-1:], ys[-1:], marker="x", markersize=8, color=colours[cell],
                      linestyle="none")  # fmt: skip
        if record in ranked:
            label = f"{record.trial_id} {short_label(record.params)}"
            axis.annotate(label, (xs[-1], ys[-1]), xytext=(6, 0), textcoords="offset points",
                          fontsize=7, va="center")  # fmt: skip
    for cell, colour in colours.items():
        axis.plot([], [], color=colour, label=cell)
    axis.plot([], [], marker="x", color="grey", linestyle="none", label="stopped there")
    _log_scale_if_wide(axis, values)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    if axis.texts:  # room on the right for the names
        low, high = axis.get_xlim()
        ticks = [t for t in axis.get_xticks() if low <= t <= high]  # epochs that exist
        axis.set_xlim(low, high + (high - low) * 0.6)
        axis.set_xticks(ticks)
    axis.set(xlabel="epoch", ylabel="validation perplexity",
             title=f"Validation perplexity per epoch (the best {LABELLED_BEST} named)")  # fmt: skip
    axis.legend(title="cell")
    axis.grid(alpha=0.3)
    return figure


def learning_curves(records: list[Any], path: Path) -> Path:
    return _save(learning_curves_figure(records), path)


def _axis_positions(values: list[Any], spec: dict[str, Any]) -> tuple[list[float], dict]:
    """Where each trial's value sits on a parallel-coordinates axis (0..1), and the axis's
    ticks {position: label}. Numbers of a range on a linear or (loguniform, logint) log
    scale; choices, grids and anything not numeric evenly spaced in their given order."""
    kind = next(iter(spec), "choice")
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if kind in ("choice", "grid") or not numeric:
        order = list(spec.get(kind, [])) if kind in ("choice", "grid") else []
        order += [v for v in dict.fromkeys(values) if v not in order]
        step = 1 / max(len(order) - 1, 1)
        index = {str(v): i * step for i, v in enumerate(order)}
        return [index[str(v)] for v in values], {i * step: human(v) for i, v in enumerate(order)}
    log = kind in ("loguniform", "logint") and min(values) > 0
    scale = (lambda v: math.log10(v)) if log else (lambda v: float(v))  # noqa: E731
    low, high = scale(min(values)), scale(max(values))
    span = (high - low) or 1.0
    positions = [(scale(v) - low) / span for v in values]
    ticks = {0.0: human(float(f"{min(values):.3g}")), 1.0: human(float(f"{max(values):.3g}"))}
    if high > low:
        middle = 10 ** ((low + high) / 2) if log else (low + high) / 2
        ticks[0.5] = human(float(f"{middle:.3g}"))
    return positions, ticks


def parallel_coordinates_figure(records: list[Any], parameters: dict[str, Any]) -> Any:
    """Each trial a line across its searched parameters to its best validation
    perplexity, coloured by it (darker is better); the best trial drawn thickest."""
    usable = [r for r in records if math.isfinite(r.best_val_ppl)]
    names = [n for n in parameters if any(r.params.get(n) is not None for r in usable)]
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * (len(names) + 1)), 5))
    if not usable or not names:
        axis.text(0.5, 0.5, "no trial with a finite validation perplexity to draw",
                  ha="center", va="center")  # fmt: skip
        axis.set_axis_off()
        return figure
    columns = []
    for name in names:
        values = [r.params.get(name) for r in usable]
        columns.append(_axis_positions(values, parameters[name]))
    ppl = [r.best_val_ppl for r in usable]
    columns.append(_axis_positions(ppl, {"loguniform" if min(ppl) > 0 else "uniform": []}))
    wide = min(ppl) > 0 and max(ppl) / min(ppl) > 10
    norm = (LogNorm if wide else Normalize)(vmin=min(ppl), vmax=max(ppl) * 1.0001)
    colour_map = plt.get_cmap("viridis")
    best = min(range(len(usable)), key=lambda i: ppl[i])
    for i in sorted(range(len(usable)), key=lambda i: -ppl[i]):  # the best drawn last, on top
        ys = [column[0][i] for column in columns]
        axis.plot(range(len(columns)), ys, color=colour_map(norm(ppl[i])),
                  linewidth=3 if i == best else 1.2, alpha=0.9 if i == best else 0.7)  # fmt: skip
    for x, (_, ticks) in enumerate(columns):
        axis.axvline(x, color="black", linewidth=0.8)
        for y, label in ticks.items():
            axis.text(x + 0.05, y, label, fontsize=8, va="center",
                      bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})  # fmt: skip
    axis.set_xticks(range(len(columns)), [*names, "best val ppl"])
    axis.set_yticks([])
    axis.set_ylim(-0.05, 1.05)
    axis.set_xlim(-0.2, len(columns) - 0.6)
    for side in ("left", "right", "top"):
        axis.spines[side].set_visible(False)
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=colour_map)
    figure.colorbar(mappable, ax=axis, label="best validation perplexity")
    left_out = len(records) - len(usable)
    note = f" ({left_out} left out: no finite perplexity)" if left_out else ""
    axis.set_title(f"{len(usable)} trials across their parameters{note}")
    return figure


def parallel_coordinates(records: list[Any], parameters: dict[str, Any], path: Path) -> Path:
    return _save(parallel_coordinates_figure(records, parameters), path)


def pareto_plot(records: list[Any], path: Path) -> Path:
    from tune_lm.tuning.results import pareto_front

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


def expected_best_plot(curve: list[dict[str, float]], path: Path) -> Path:
    """Expected best validation perplexity against trials, with its 95% band (see
    :mod:`tune_lm.reporting.expected_best`)."""
    figure, axis = plt.subplots(figsize=(8, 5))
    if curve:
        trials = [point["trials"] for point in curve]
        axis.plot(trials, [p["expected_best"] for p in curve], label="expected best")
        axis.fill_between(trials, [p["ci95_low"] for p in curve],
                          [p["ci95_high"] for p in curve], alpha=0.25,
                          label="95% interval (bootstrap over trials)")  # fmt: skip
        axis.legend()
        _log_scale_if_wide(axis, [p["ci95_high"] for p in curve])
    axis.set(xlabel="trials", ylabel="expected best validation perplexity",
             title="Expected best against budget (Dodge et al. 2019)")  # fmt: skip
    axis.grid(alpha=0.3)
    return _save(figure, path)


MIN_TRIALS_FOR_IMPORTANCE = 10  # fewer completed trials: fANOVA's bars mean little


def importances(folder: Path, path: Path) -> Path | None:
    """Optuna's parameter importances (fANOVA, see :func:`importance_evaluator`), from the
    study in the experiment folder, saying how many completed trials they rest on; with
    fewer than ``MIN_TRIALS_FOR_IMPORTANCE`` the picture says so instead of drawing bars."""
    import optuna

    from tune_lm.tuning.layout import STUDY_FILE, STUDY_NAME

    journal = folder / STUDY_FILE
    if not journal.is_file():
        return None
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    problem = None
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:  # no bars: spare scikit-learn's import
        method = importance_method()
        problem = (f"Too few completed trials for parameter importances: {len(complete)} of "
                   f"{len(study.trials)}\n(at least {MIN_TRIALS_FOR_IMPORTANCE} are needed; "
                   "trials stopped early do not count).\nRun more trials, or read the "
                   "parallel coordinates instead.")  # fmt: skip
    else:
        evaluator, method = importance_evaluator()
        try:  # Optuna's own plot of the importances (an experimental API: no warning)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axis = optuna.visualization.matplotlib.plot_param_importances(
                    study, evaluator=evaluator)
            figure = axis.figure
            figure.set_size_inches(8, 5)
            for where in ("left", "center", "right"):  # Optuna's title: ours says more
                axis.set_title("", loc=where)
            if axis.get_legend() is not None:
                axis.get_legend().remove()  # one objective: the legend says nothing
            axis.set(xlabel=f"importance ({method})", ylabel="")
        except (RuntimeError, ValueError) as error:  # e.g. every trial had the same value
            problem = f"No parameter importances: {error}"
    if problem:
        figure, axis = plt.subplots(figsize=(8, 5))
        axis.text(0.5, 0.5, problem, ha="center", va="center", wrap=True)
        axis.set_axis_off()
    axis.set_title(f"Which parameters mattered ({method} over {len(complete)} completed trials "
                   f"of {len(study.trials)})")  # fmt: skip
    return _save(figure, path)


def importance_method() -> str:
    """The name :func:`importance_evaluator` would give, without importing scikit-learn
    (2 s) or Optuna's importance module."""
    import importlib.util

    return "fANOVA" if importlib.util.find_spec("sklearn") else "PED-ANOVA"


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


def draw_all(records: list[Any], folder: Path, out: Path,
             parameters: dict[str, Any] | None = None) -> list[Path]:  # fmt: skip
    """Every picture; ``parameters``: the space's searched parameters (their kinds give
    the parallel coordinates' scales)."""
    written = [
        learning_curves(records, out / "learning_curves.png"),
        parallel_coordinates(records, parameters or {n: {} for r in records for n in r.params},
                             out / "parallel_coordinates.png"),  # fmt: skip
        pareto_plot(records, out / "pareto.png"),
        best_so_far(records, out / "best_so_far.png"),
    ]
    drawn = importances(folder, out / "importances.png")
    return written + ([drawn] if drawn else [])

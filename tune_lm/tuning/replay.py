"""Replayed searches: rehearse a search on recorded learning curves before paying for it.

A pool of recorded trials (a table, or an earlier experiment's trial folders) stands in
for training. The search itself is the real one: Ray Tune, the space's scheduler (ASHA,
Hyperband, FIFO), its searcher (Optuna's sampler or the grid), the trial lifecycle. Only
the trainable differs: :func:`replay_trial` finds the recorded trial *nearest* to the
configuration proposed and reports its recorded validation perplexity epoch by epoch,
sleeping its recorded seconds (times ``1 / speed``) so that rungs fill in the order
they would for real.

Nearest, in the normalised space: each parameter the recording varied counts 0..1. A
number is placed on its range over the pool (on a log scale where the searched space
samples it on one, or, for a parameter not searched, where the pool spans more than a
decade); a choice counts 0 when equal and 1 when not. The distance is Euclidean over
those; ties go to the earlier recorded trial. Parameters the recording did not vary are
not compared: the curves answer only for what they varied.

A recording is a CSV (or Parquet) table with one row per (trial, epoch): an id column
(``config_id`` or ``trial_id``), one column per parameter, ``epoch`` (1, 2, ...),
``val_ppl``, and the seconds of that epoch (``epoch_time_s``, plus ``eval_time_s`` when
present). ``benchmarks/record_curves.py`` writes one.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tune_lm.lm import metrics as M
from tune_lm.lm.errors import ConfigError
from tune_lm.tuning.space import SearchSpace

ID_COLUMNS = ("config_id", "trial_id")
CURVE_COLUMNS = ("epoch", "val_ppl", "epoch_time_s", "eval_time_s")
FLAG = "--replay"


@dataclass(frozen=True)
class RecordedTrial:
    """One recorded trial: its parameters, and per epoch its validation perplexity and
    seconds (training + validation)."""

    trial_id: str
    params: dict[str, Any]
    val_ppl: tuple[float, ...]
    seconds: tuple[float, ...]


@dataclass
class Curves:
    """A pool of recorded trials, and the nearest one to a proposed configuration."""

    trials: list[RecordedTrial]
    source: str
    _scales: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        return list(self.trials[0].params)

    @property
    def max_epochs(self) -> int:
        return max(len(t.val_ppl) for t in self.trials)

    def check_fits(self, space: SearchSpace) -> None:
        """A space the recording can answer for: its trials need no epoch past the
        recorded ones, and it searches at least one parameter the recording varied."""
        if space.epochs > self.max_epochs:
            raise ConfigError(
                f"{FLAG} {self.source}: the recorded curves end at epoch {self.max_epochs}, "
                f"but the space trains {space.epochs} epochs. Replay at most "
                f"{self.max_epochs} (fixed.epochs or --max-epochs {self.max_epochs}), or record "
                "longer curves"
            )
        if space.scheduler.type == "pbt":
            raise ConfigError(
                f"{FLAG}: 'scheduler: {{type: pbt}}' cannot be replayed: its trials continue "
                "other trials' weights with new values, which no recorded curve shows. "
                "Rehearse ASHA, Hyperband or FIFO, or run the PBT search for real"
            )
        shared = [name for name in space.parameters if name in self.names]
        if not shared:
            raise ConfigError(
                f"{FLAG} {self.source}: the space searches {sorted(space.parameters)}, the "
                f"recording varied {self.names}: no parameter in common, so every trial "
                "would replay the same curve. Search parameters the recording varied"
            )

    def nearest(self, config: dict[str, Any], space: SearchSpace | None = None) -> RecordedTrial:
        """The recorded trial nearest to ``config`` (a full trial config, as a dict)."""
        key = id(space)
        if key not in self._scales:
            self._scales = {key: self._prepare(space)}
        columns, matrix = self._scales[key]
        point = np.array([transform(config.get(name)) for name, transform in columns])
        gaps = matrix - point
        choices = [i for i, (_, transform) in enumerate(columns) if transform.choice]
        gaps[:, choices] = (gaps[:, choices] != 0).astype(float)  # a choice: equal or not
        gaps = np.nan_to_num(gaps, nan=1.0)  # a value the pool cannot place: as far as can be
        return self.trials[int(np.argmin((gaps**2).sum(axis=1)))]

    def _prepare(self, space: SearchSpace | None) -> tuple[list, np.ndarray]:
        columns = []
        for name in self.names:
            values = [t.params[name] for t in self.trials]
            parameter = space.parameters.get(name) if space is not None else None
            columns.append((name, _Transform.fit(values, parameter)))
        matrix = np.array([[transform(t.params[name]) for name, transform in columns]
                           for t in self.trials], dtype=float)  # fmt: skip
        return columns, matrix


@dataclass(frozen=True)
class _Transform:
    """A parameter's value -> 0..1 over the pool (a choice -> the index of its value)."""

    choice: bool
    log: bool = False
    low: float = 0.0
    span: float = 1.0
    labels: tuple[str, ...] = ()

    @classmethod
    def fit(cls, values: list[Any], parameter: Any) -> _Transform:
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) < len(values):
            return cls(choice=True, labels=tuple(sorted({str(v) for v in values})))
        positive = min(numbers) > 0
        if parameter is not None and hasattr(parameter, "log"):
            log = bool(parameter.log) and positive
        else:
            log = positive and max(numbers) > 10 * min(numbers)
        scaled = [math.log(v) if log else float(v) for v in numbers]
        return cls(choice=False, log=log, low=min(scaled), span=(max(scaled) - min(scaled)) or 1.0)

    def __call__(self, value: Any) -> float:
        if self.choice:
            return float(self.labels.index(str(value))) if str(value) in self.labels else math.nan
        try:
            number = float(value)
            return ((math.log(number) if self.log else number) - self.low) / self.span
        except (TypeError, ValueError):
            return math.nan


def load_curves(path: str | Path) -> Curves:
    """A recording: a CSV or Parquet table, or an earlier experiment's folder (its
    trials' recorded histories). Refused with a clear error when it is none of these."""
    path = Path(path)
    if path.is_dir():
        return _from_experiment(path)
    if not path.is_file():
        raise ConfigError(f"{FLAG} {path}: no such file or folder. Give a recorded-curves "
                          "table (CSV or Parquet, e.g. benchmarks/results/curves_ptb.csv) or "
                          "an earlier experiment's folder")  # fmt: skip
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        else:
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as error:
        raise ConfigError(f"{FLAG} {path} cannot be read as a table ({error}). Give a CSV "
                          "or Parquet file with one row per (trial, epoch)") from None
    return _from_rows(rows, str(path))


def _from_rows(rows: list[dict[str, Any]], source: str) -> Curves:
    if not rows:
        raise ConfigError(f"{FLAG} {source} has no rows: record some curves first")
    columns = list(rows[0])
    id_column = next((c for c in ID_COLUMNS if c in columns), None)
    missing = [c for c in ("epoch", "val_ppl", "epoch_time_s") if c not in columns]
    if id_column is None or missing:
        need = ", ".join(["config_id (or trial_id)"] * (id_column is None) + missing)
        raise ConfigError(f"{FLAG} {source} lacks the column(s) {need}. A recording has one "
                          "row per (trial, epoch): an id, one column per parameter, epoch, "
                          "val_ppl, epoch_time_s (and eval_time_s)")  # fmt: skip
    names = [c for c in columns if c != id_column and c not in CURVE_COLUMNS]
    if not names:
        raise ConfigError(f"{FLAG} {source} has no parameter columns: nothing to match a "
                          "proposed configuration against")  # fmt: skip
    grouped: dict[str, list[dict[str, Any]]] = {}
    kinds: dict[str, dict[bool, tuple[int, Any]]] = {}  # column -> is text -> (row, value)
    for number, row in enumerate(rows, start=2):
        try:
            epoch = int(float(row["epoch"]))
            value = float(row["val_ppl"])
            seconds = float(row["epoch_time_s"]) + float(row.get("eval_time_s") or 0.0)
        except (TypeError, ValueError):
            raise ConfigError(f"{FLAG} {source}, row {number}: epoch, val_ppl and the seconds "
                              "must be numbers") from None  # fmt: skip
        if epoch < 1 or not seconds >= 0 or not value >= 1:
            raise ConfigError(f"{FLAG} {source}, row {number}: epoch must be 1 or more, "
                              "seconds 0 or more and val_ppl a perplexity, 1 or more (inf for "
                              "a divergence)")  # fmt: skip
        params = {n: _parse(row[n]) for n in names}
        for name, param in params.items():  # the first row of each kind, per column
            kinds.setdefault(name, {}).setdefault(isinstance(param, str), (number, param))
        grouped.setdefault(str(row[id_column]), []).append(
            {**params, "epoch": epoch, "val_ppl": value, "seconds": seconds})  # fmt: skip
    for name, seen in kinds.items():
        if len(seen) == 2:  # numbers and text: a typo would be matched as a category
            row, text = seen[True]
            raise ConfigError(f"{FLAG} {source}, row {row}: column {name} holds numbers, but "
                              f"here {text!r}; give every row a number in it")  # fmt: skip
    trials = []
    for trial_id, epochs in grouped.items():
        epochs.sort(key=lambda e: e["epoch"])
        if [e["epoch"] for e in epochs] != list(range(1, len(epochs) + 1)):
            raise ConfigError(f"{FLAG} {source}: trial {trial_id}'s epochs are not 1, 2, "
                              "... without gaps or repeats")  # fmt: skip
        params = {n: epochs[0][n] for n in names}
        changed = next((n for n in names for e in epochs if e[n] != params[n]), None)
        if changed is not None:
            values = sorted({str(e[changed]) for e in epochs})
            raise ConfigError(f"{FLAG} {source}: trial {trial_id}'s {changed} changes between "
                              f"its rows ({', '.join(values)}); a recorded trial trains one "
                              "configuration, so give it one value")  # fmt: skip
        trials.append(RecordedTrial(trial_id, params, tuple(e["val_ppl"] for e in epochs),
                                    tuple(e["seconds"] for e in epochs)))  # fmt: skip
    return Curves(trials, source)


def _parse(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def _from_experiment(folder: Path) -> Curves:
    """The whole-epoch evaluations of every trial of an earlier experiment (its trial
    folders' result.json), with the wall seconds between them."""
    rows: list[dict[str, Any]] = []
    for result_file in sorted(folder.glob("*/result.json")):
        seen = 0
        for line in result_file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                result = json.loads(line)
            except ValueError:  # a line cut by a crash
                continue
            epoch, value = result.get(M.EPOCH), result.get(M.VAL_PPL)
            if epoch is None or value is None or float(epoch) != int(epoch) or epoch <= seen:
                continue  # mid-epoch evaluations and repeats after a restart
            seen = int(epoch)
            params = {k: v for k, v in (result.get("config") or {}).items()
                      if isinstance(v, str | int | float)}  # fmt: skip
            rows.append({"trial_id": result_file.parent.name, **params, "epoch": seen,
                         "val_ppl": float(value),
                         "epoch_time_s": float(result.get("time_this_iter_s", 0.0))})  # fmt: skip
    if not rows:
        raise ConfigError(f"{FLAG} {folder}: no trial with a recorded epoch in this folder. "
                          "Give an experiment folder (STORAGE/NAME) whose trials ran, or a "
                          "recorded-curves table")  # fmt: skip
    names = sorted({k for r in rows for k in r} - {"trial_id", *CURVE_COLUMNS})
    rows = [{"trial_id": r["trial_id"], **{n: r.get(n, "") for n in names},
             **{c: r[c] for c in ("epoch", "val_ppl", "epoch_time_s")}} for r in rows]  # fmt: skip
    # Trials folded into whole epochs from 1 on (a trial resumed mid-way keeps its order).
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_trial.setdefault(row["trial_id"], []).append(row)
    whole = [t for t in by_trial.values() if [e["epoch"] for e in t] == list(range(1, len(t) + 1))]
    kept = [row for trial in whole for row in trial]
    return _from_rows(kept, str(folder))


def replay_trial(sampled: dict[str, Any], *, space: SearchSpace, curves: Curves,
                 speed: float | None = None, clock: Any = None) -> None:  # fmt: skip
    """Tune entry point of a replayed search: the nearest recorded curve, reported epoch
    by epoch in simulated time: each epoch waits on ``clock`` (a
    :class:`~tune_lm.tuning.sim_clock.VirtualClock`) for its recorded seconds, or, without
    one, sleeps recorded seconds / ``speed``."""
    import ray
    from ray import tune

    config = space.trial_config(sampled)
    recorded = curves.nearest(config.model_dump(), space)
    trial_id = tune.get_context().get_trial_id()
    best, train_time = math.inf, 0.0
    last = min(space.epochs, len(recorded.val_ppl))  # a curve ASHA stopped ends early
    for epoch in range(1, last + 1):
        seconds = recorded.seconds[epoch - 1]
        if clock is not None:
            if not ray.get(clock.wait.remote(trial_id, seconds)):
                return  # dropped: the search stopped this trial
        else:
            time.sleep(seconds / (speed or 1.0))
        value = recorded.val_ppl[epoch - 1]
        best, train_time = min(best, value), train_time + seconds
        tune.report({M.EPOCH: float(epoch), M.STEP: epoch, M.VAL_PPL: value,
                     M.VAL_LOSS: math.log(value) if value > 0 else math.inf,
                     M.EPOCH_TIME_S: seconds, M.TRAIN_TIME_S: train_time, M.LR: config.lr,
                     "replayed_from": recorded.trial_id,
                     M.CURVE_ENDS: epoch == last < space.epochs})  # fmt: skip
        if not math.isfinite(value):  # a recorded divergence ends the trial, as for real
            return

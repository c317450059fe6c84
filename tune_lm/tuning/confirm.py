"""Confirmation of finalists: the search's best configurations trained again with fresh
seeds, so that the verdict rests on more than one run each.

A space's ``confirm: {top_k: K, seeds: S}`` (or ``--confirm K,S``): after the search, its
K best trials by validation perplexity (a multi-objective search: its Pareto set, best
validation perplexity first, at most K) are the *finalists*. Each trains again from
scratch to the full budget under S fresh seeds, as the trials of a second Ray experiment
inside the search's folder (``EXPERIMENT/confirm``): scheduled like the search's trials
(same resources and concurrency, no early stopping), checkpointed every epoch, and
restored by ``--resume`` with nothing run twice. The finalists and seeds are fixed in
``confirm.json`` when confirmation first starts. Each confirmation run scores its
best-validation weights on test once, at its last epoch. The winner is the finalist with
the lowest *mean* validation perplexity; every other finalist is compared with it by the
difference of means and Welch's 95% interval (:mod:`tune_lm.tuning.noise`).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from ray import tune

from tune_lm.lm import metrics as M
from tune_lm.lm.atomic import atomic_file
from tune_lm.lm.corpus import Corpus
from tune_lm.tuning import private_api
from tune_lm.tuning.layout import CONFIRM_FILE, CONFIRM_FOLDER
from tune_lm.tuning.noise import difference, mean_sd
from tune_lm.tuning.results import Conclusion
from tune_lm.tuning.space import SchedulerSpec, SearcherSpec, SearchSpace
from tune_lm.tuning.trainable import train_trial
from tune_lm.tuning.tuner import (
    CHECKPOINTS_KEPT,
    forget_stateless,
    restorable,
    with_result_loggers,
)

SEED_OFFSET = 1000  # fresh seeds: the space's seed + 1000, + 1001, ...


def fresh_seeds(space: SearchSpace) -> list[int]:
    """Seeds no trial of the search used (it used ``space.seed``, or a grid's repeats
    ``space.seed + i``)."""
    assert space.confirm is not None
    start = space.seed + max(SEED_OFFSET, space.budget.num_samples)
    return [start + index for index in range(space.confirm.seeds)]


def plan(folder: Path, conclusion: Conclusion, space: SearchSpace) -> dict[str, Any]:
    """The finalists and seeds: read back from ``confirm.json`` when confirmation has
    started before (a resumed search), else chosen now and written there."""
    saved = folder / CONFIRM_FILE
    if saved.is_file():
        return json.loads(saved.read_text())
    assert space.confirm is not None
    pool = conclusion.pareto if len(space.objectives) > 1 else conclusion.finished
    chosen = sorted(pool, key=lambda row: (row.best_val_ppl, row.trial_id))[: space.confirm.top_k]
    made = {
        "finalists": [{"trial_id": row.trial_id, "params": row.params,
                       "search_val_ppl": row.best_val_ppl} for row in chosen],
        "seeds": fresh_seeds(space),
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(saved, "w") as out:
        out.write(json.dumps(made, indent=2, default=str) + "\n")
    return made


def confirmation_space(space: SearchSpace) -> SearchSpace:
    """What a confirmation run trains under: the space's, with nothing stopped early."""
    return space.model_copy(update={"scheduler": SchedulerSpec(type="fifo"),
                                    "searcher": SearcherSpec(type="grid")})  # fmt: skip


def confirm_trial(sampled: dict[str, Any], *, space: SearchSpace, corpus: Corpus,
                  finalists: list[dict[str, Any]]) -> None:  # fmt: skip
    """Tune entry point: finalist ``sampled["finalist"]`` under seed ``sampled["seed"]``,
    trained to its full budget, scored on test once at its last epoch."""
    values = {**finalists[sampled["finalist"]], "seed": sampled["seed"]}
    last = space.trial_config(values).epochs
    train_trial(values, space=space.model_copy(update={"test_at_epochs": [last]}),
                corpus=corpus)  # fmt: skip


def build_confirm_tuner(space: SearchSpace, corpus: Corpus, path: str, made: dict[str, Any],
                        callbacks: list) -> tune.Tuner:  # fmt: skip
    """The confirmation experiment at ``path/confirm``: restored when it has state."""
    where = f"{path}/{CONFIRM_FOLDER}"
    trained = confirmation_space(space)
    trainable = private_api.restoring_from_surviving_checkpoints(tune.with_resources(
        tune.with_parameters(confirm_trial, space=trained, corpus=corpus,
                             finalists=[f["params"] for f in made["finalists"]]),
        {"cpu": space.resources.cpus_per_trial, "gpu": space.resources.gpus_per_trial},
    ))  # fmt: skip
    if restorable(where):
        return tune.Tuner.restore(where, trainable=trainable, resume_unfinished=True,
                                  resume_errored=True)  # fmt: skip
    forget_stateless(where)  # killed before Tune's first state: start it again
    return tune.Tuner(
        trainable,
        param_space={"finalist": tune.grid_search(list(range(len(made["finalists"])))),
                     "seed": tune.grid_search(made["seeds"])},  # fmt: skip
        tune_config=tune.TuneConfig(metric=M.VAL_PPL, mode="min", num_samples=1,
                                    max_concurrent_trials=space.budget.max_concurrent,
                                    reuse_actors=True),  # fmt: skip
        run_config=tune.RunConfig(
            name=CONFIRM_FOLDER, storage_path=path, callbacks=with_result_loggers(callbacks),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            failure_config=tune.FailureConfig(max_failures=space.budget.max_failures),
        ),
    )  # fmt: skip


def _run_values(result: Any) -> dict[str, float]:
    """One confirmation run's best validation perplexity, test perplexity (scored at its
    last epoch) and median seconds per epoch (NaN where missing)."""
    frame = result.metrics_dataframe
    if frame is None or frame.empty or M.VAL_PPL not in frame:
        return {"val_ppl": math.nan, "test_ppl": math.nan, "epoch_time_s": math.nan}
    tests = [c for c in frame.columns if M.is_test_at_epoch(c)]
    test = frame[tests[0]].dropna() if tests else []
    times = frame[M.EPOCH_TIME_S].dropna() if M.EPOCH_TIME_S in frame else []
    return {"val_ppl": float(frame[M.VAL_PPL].min()),
            "test_ppl": float(test.iloc[-1]) if len(test) else math.nan,
            "epoch_time_s": float(statistics.median(times)) if len(times) else math.nan}


def spend(results: Any) -> list[tuple[float, float]]:
    """(epochs run, training seconds) of each confirmation run, for the compute ledger."""
    pairs = []
    for result in results:
        frame = result.metrics_dataframe
        if frame is None or frame.empty or M.EPOCH not in frame:
            continue
        seconds = frame[M.TRAIN_TIME_S].max() if M.TRAIN_TIME_S in frame else 0.0
        pairs.append((float(frame[M.EPOCH].max()), float(seconds)))
    return pairs


def summarise(results: Any, made: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per finalist: its per-seed scores, their means and standard deviations,
    and (but for the winner) its difference from the winner with its noise."""
    runs: dict[int, dict[int, dict[str, float]]] = {i: {} for i in range(len(made["finalists"]))}
    for result in results:
        if result.config and "finalist" in result.config:
            runs[result.config["finalist"]][result.config["seed"]] = _run_values(result)
    entries = []
    for index, finalist in enumerate(made["finalists"]):
        seeds = sorted(runs[index])
        entry: dict[str, Any] = {**finalist, "seeds": seeds}
        for key in ("val_ppl", "test_ppl", "epoch_time_s"):
            values = [runs[index][seed][key] for seed in seeds]
            entry[key] = values
            entry[f"{key}_mean"], entry[f"{key}_sd"] = mean_sd(values)
        entries.append(entry)
    ranked = [e for e in entries if math.isfinite(e["val_ppl_mean"])]
    if not ranked:
        return entries
    winner = min(ranked, key=lambda e: e["val_ppl_mean"])
    for entry in entries:
        entry["winner"] = entry is winner
        if entry is not winner:
            entry["vs_winner"] = {key: difference(winner[key], entry[key]).as_dict()
                                  for key in ("val_ppl", "test_ppl")}  # fmt: skip
    return entries

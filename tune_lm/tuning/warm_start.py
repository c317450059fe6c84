"""Warm start: a new search seeded with an earlier one's results (``--warm-start FOLDER``).

The earlier search's trials (its ``summary.json``) are read and each is checked against
the new space: every parameter the new space searches must have a value in the old trial
(searched there, or fixed) that the new parameter can take, and every parameter the old
search searched that the new one does not must equal the new space's fixed value (or its
default). What passes transfers two ways:

- its ``QUEUED`` best configurations (by validation perplexity) are queued first, as
  baselines of the new space (after the space's own): evaluated first, never stopped
  early, so the new search starts from what was known;
- every transferable trial with a result is given to the new Optuna study as a prior
  observation (a COMPLETE trial with its objective values, user attribute
  ``warm_start_from``), so the sampler models them from the first proposal (TPE ranks
  values, so priors from another corpus, e.g. PTB for WikiText-2, still say which
  regions were good).

What cannot transfer is listed, trial by trial, with the reason. Corpus and fixed values
other than the searched ones may differ: that is the point of a warm start.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune_lm.lm.atomic import write_atomic
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.errors import ConfigError
from tune_lm.tuning.console import say
from tune_lm.tuning.layout import SUMMARY_JSON, WARM_START_FILE
from tune_lm.tuning.space import SearchSpace

FLAG = "--warm-start"
QUEUED = 3  # the earlier search's best configurations run first
SUMMARY_KEYS = {"val_ppl": "best_val_ppl"}  # an objective's column in summary.json


@dataclass
class WarmStart:
    """What an earlier search gives a new one."""

    source: str
    queued: list[dict[str, Any]] = field(default_factory=list)  # configurations, best first
    priors: list[dict[str, Any]] = field(default_factory=list)  # {params, values, trial_id}
    skipped: list[str] = field(default_factory=list)  # "TRIAL: why", one per trial left out

    def describe(self) -> dict[str, Any]:
        return {"from": self.source, "queued": self.queued, "priors": len(self.priors),
                "not_transferred": self.skipped}  # fmt: skip


def read_summary(folder: str) -> dict[str, Any]:
    """The earlier search's summary.json, or a clear refusal naming the flag."""
    path = Path(folder).expanduser() / SUMMARY_JSON
    if not path.is_file():
        raise ConfigError(f"{FLAG} {folder}: no {SUMMARY_JSON} there; give the folder of a "
                          "search that has ended (tune_lm_runs/NAME)")  # fmt: skip
    try:
        summary = json.loads(path.read_text())
        trials, space = summary["trials"], summary["space"]
        assert isinstance(trials, list) and isinstance(space, dict)
    except (ValueError, KeyError, AssertionError, TypeError):
        raise ConfigError(f"{FLAG} {folder}: {path} is not a tune_lm search summary (cut off "
                          "or foreign); give the folder of a search that has ended") from None
    return summary


def _default(name: str) -> Any:
    field_ = TrainConfig.model_fields.get(name)
    return field_.default if field_ is not None else None


def _old_value(trial: dict[str, Any], name: str, old_fixed: dict[str, Any],
               old_searched: list[str]) -> Any:  # fmt: skip
    """What an old trial trained with: its searched value, else the old fixed or default."""
    if name in old_searched:
        return trial.get(name)
    return old_fixed.get(name, _default(name))


def _why_not(trial: dict[str, Any], old_fixed: dict[str, Any], old_searched: list[str],
             space: SearchSpace) -> str | None:  # fmt: skip
    """Why an old trial cannot stand for a point of the new space (None: it can)."""
    for name, parameter in space.parameters.items():
        value = _old_value(trial, name, old_fixed, old_searched)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return f"it has no value for {name}, which the new space searches"
        why = parameter.refuses(value)
        if why:
            return f"{name}: {why}"
    for name in old_searched:
        if name in space.parameters:
            continue
        new = space.fixed.get(name, _default(name))
        if trial.get(name) != new:
            return f"it searched {name} = {trial.get(name)!r}, which the new space fixes at {new!r}"
    return None


def plan_warm_start(folder: str, space: SearchSpace) -> WarmStart:
    """What ``folder``'s search transfers to ``space`` (see the module's doc)."""
    if space.searcher.type != "optuna" or space.scheduler.type == "pbt":
        raise ConfigError(f"{FLAG} seeds Optuna's study and queue; this space uses "
                          f"{'a grid' if space.searcher.type == 'grid' else 'PBT'}. Use "
                          "'searcher: {type: optuna}', or drop --warm-start")  # fmt: skip
    summary = read_summary(folder)
    old_space = summary["space"]
    old_searched = list(old_space.get("parameters", {}))
    old_fixed = dict(old_space.get("fixed", {}))
    start = WarmStart(source=str(Path(folder).expanduser().resolve()))
    usable = []
    for trial in summary["trials"]:
        value = trial.get("best_val_ppl")
        if not isinstance(value, int | float) or not math.isfinite(value):
            start.skipped.append(f"{trial.get('trial_id')}: no finite validation perplexity")
            continue
        why = _why_not(trial, old_fixed, old_searched, space)
        if why:
            start.skipped.append(f"{trial.get('trial_id')}: {why}")
            continue
        params = {name: parameter.on_step(_old_value(trial, name, old_fixed, old_searched))
                  for name, parameter in space.parameters.items()}  # fmt: skip
        values = [float(trial.get(SUMMARY_KEYS.get(objective, objective), math.nan))
                  for objective in space.objectives]  # fmt: skip
        if not all(math.isfinite(v) for v in values):
            start.skipped.append(f"{trial.get('trial_id')}: no value for one of the "
                                 f"objectives {list(space.objectives)}")  # fmt: skip
            continue
        usable.append({"params": params, "values": values, "trial_id": str(trial["trial_id"])})
    start.priors = usable
    ranked = sorted(usable, key=lambda prior: prior["values"][0])
    room = min(QUEUED, space.budget.num_samples - len(space.baselines))  # each is a trial
    for prior in ranked:
        if len(start.queued) >= room:
            break
        if prior["params"] not in start.queued and prior["params"] not in space.baselines:
            start.queued.append(prior["params"])
    return start


def with_queued(space: SearchSpace, start: WarmStart) -> SearchSpace:
    """The space with the earlier search's best configurations as baselines (after its
    own), validated again."""
    if not start.queued:
        return space
    raw = space.model_dump(exclude_unset=True)
    raw["baselines"] = [*space.baselines, *start.queued]
    return SearchSpace.from_raw(raw, source=f"space {space.name!r} with {FLAG}")


def warm_started(folder: str | None, space: SearchSpace) -> tuple[SearchSpace, WarmStart | None]:
    """--warm-start: the space with the earlier search's best configurations queued, and
    what transfers (None without the flag); :func:`say_warm_start` says it."""
    if folder is None:
        return space, None
    warm = plan_warm_start(folder, space)
    return with_queued(space, warm), warm


def say_warm_start(warm: WarmStart | None) -> None:
    """What a warm start transfers, on the console: once the search is known to start."""
    if warm is None:
        return
    say(f"warm start from {warm.source}: {len(warm.queued)} of its best configurations "
        f"queued first, {len(warm.priors)} of its trials given to the sampler, "
        f"{len(warm.skipped)} not transferred")  # fmt: skip
    for line in warm.skipped[:10]:
        say(f"  not transferred: {line}")
    if len(warm.skipped) > 10:
        say(f"  ... and {len(warm.skipped) - 10} more (all in summary.json, warm_start)")


def keep_record(folder: Path, warm: WarmStart) -> None:
    """Keep ``warm``'s record in the experiment, so that a --resume or --extend (which
    do not warm-start again) still write it into summary.json."""
    write_atomic(folder / WARM_START_FILE, json.dumps(warm.describe(), indent=1).encode())


def kept_record(folder: Path) -> dict[str, Any] | None:
    """The warm start this experiment began with (None: it began cold, or the record is
    unreadable)."""
    try:
        record = json.loads((folder / WARM_START_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None

"""Tune's saved experiment state and search state, read and rewritten in place: what a
``--resume`` or ``--extend`` needs that Ray has no public way to do (part of the private
surface of :mod:`tune_lm.tuning.private_api`, which re-exports it; each function has a
canary test in tests/test_private_api.py).

Tune saves, in the experiment folder, ``experiment_state-<session>.json`` (each trial's
JSON and status, and the controller's state with its stopper) and
``search_gen_state-<session>.json`` (a cloudpickle of the search generator's state and of
its wrappers', such as the ConcurrencyLimiter's live trials); the newest by name wins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ENDED = ("TERMINATED", "ERROR")  # Tune's statuses of a trial that will not run again


def tune_state_saved(experiment_dir: Path) -> bool:
    """Whether Tune has written its experiment state (``experiment_state-*.json``, its
    own file naming) into a local experiment folder: before that, ``tuner.pkl`` alone
    makes the folder look restorable while Tune cannot restore it."""
    return any(experiment_dir.glob("experiment_state-*.json"))


def saved_trial_folders(experiment_dir: Path) -> dict[str, str]:
    """Trial id -> the folder (relative to ``experiment_dir``) of each trial that Tune's
    newest experiment state says has started (``trial_data``: each trial's JSON, its
    ``relative_logdir`` and ``status``); {} when there is no readable state."""
    return {str(t["trial_id"]): str(t["relative_logdir"]) for t in _saved_trials(experiment_dir)
            if t.get("relative_logdir") and t.get("status") != "PENDING"}  # fmt: skip


def _saved_trials(experiment_dir: Path) -> list[dict[str, Any]]:
    """Each trial's JSON in Tune's newest experiment state ([] when there is no readable
    state: Tune will say what is wrong with it)."""
    states = sorted(experiment_dir.glob("experiment_state-*.json"))
    try:
        trials = [json.loads(entry[0]) for entry in
                  json.loads(states[-1].read_text())["trial_data"]]  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return []
    return [t for t in trials if isinstance(t, dict)]


# Tune keeps how many trials a search creates in its SearchGenerator's state, saved beside
# the experiment as ``search_gen_state-<session>.json`` (a cloudpickle of a dict, the
# newest by name wins). ``--extend`` raises that total: Ray has no public way to add
# trials to a finished experiment (ray-project/ray#42221, #18847).
SEARCH_STATE_PATTERN = "search_gen_state-*.json"


def trial_total(experiment_dir: Path) -> tuple[int, int] | None:
    """(trials created, trials the search will create) from Tune's saved search state;
    None when Tune has saved none (a grid, or a search killed before its first snapshot)."""
    from ray.tune.utils.util import _load_newest_checkpoint

    state = _load_newest_checkpoint(str(experiment_dir), SEARCH_STATE_PATTERN)
    if not state:
        return None
    return int(state["counter"]), int(state["total_samples"])


def set_trial_total(experiment_dir: Path, total: int) -> None:
    """Make the search at ``experiment_dir`` create ``total`` trials in all when Tune
    restores it (its newest saved search state rewritten, atomically, in place)."""
    import glob

    from ray.tune.utils.util import _atomic_save, _load_newest_checkpoint

    state = _load_newest_checkpoint(str(experiment_dir), SEARCH_STATE_PATTERN)
    newest = max(glob.glob(str(experiment_dir / SEARCH_STATE_PATTERN)))
    state["total_samples"] = total
    state["finished"] = state["counter"] >= total
    _atomic_save(state=state, checkpoint_dir=str(experiment_dir),
                 file_name=Path(newest).name, tmp_file_name=f"tmp-{Path(newest).name}")  # fmt: skip


def restart_time_budget(experiment_dir: Path) -> None:
    """Give a restored experiment its whole time budget again (``--extend``): Tune saves
    its ``TimeoutStopper``, budget spent and all, with the controller's state (the newest
    ``experiment_state-*.json``, rewritten here atomically), and a restored search went
    on spending it: one that its budget had ended ran nothing more."""
    from ray.tune.stopper import TimeoutStopper
    from ray.tune.utils.serialization import TuneFunctionDecoder, TuneFunctionEncoder

    from tune_lm.lm.atomic import atomic_file

    newest = max(experiment_dir.glob("experiment_state-*.json"))
    state = json.loads(newest.read_text())
    saved = state["runner_data"].get("_stopper")  # written by this experiment's own driver
    stopper = json.loads(json.dumps(saved), cls=TuneFunctionDecoder, allow_cloudpickle=True)
    for timeout in (stopper, *getattr(stopper, "_stoppers", ())):
        if isinstance(timeout, TimeoutStopper):
            timeout._budget = timeout._timeout_seconds
    state["runner_data"]["_stopper"] = json.loads(json.dumps(stopper, cls=TuneFunctionEncoder))
    with atomic_file(newest, "w") as out:
        json.dump(state, out)


def forget_ended_trials(experiment_dir: Path) -> list[str]:
    """Take the trials that Tune's saved state says have ended out of the saved
    ConcurrencyLimiter's live trials, and return them. A trial the time budget (or a
    stop) ended is never reported complete to the limiter, which counted it live for
    ever: restored, it let no new trial start, and an ``--extend`` waited for ever."""
    from ray.tune.utils.util import _atomic_save, _load_newest_checkpoint

    state = _load_newest_checkpoint(str(experiment_dir), SEARCH_STATE_PATTERN)
    limiter = (state or {}).get("name:ConcurrencyLimiter")
    if not limiter or not limiter.get("live_trials"):
        return []
    ended = {str(t.get("trial_id")) for t in _saved_trials(experiment_dir)
             if t.get("status") in ENDED}  # fmt: skip
    gone = sorted(set(limiter["live_trials"]) & ended)
    if gone:
        limiter["live_trials"] = set(limiter["live_trials"]) - ended
        limiter["num_unfinished_live_trials"] = len(limiter["live_trials"])
        newest = max(experiment_dir.glob(SEARCH_STATE_PATTERN))
        _atomic_save(state=state, checkpoint_dir=str(experiment_dir), file_name=newest.name,
                     tmp_file_name=f"tmp-{newest.name}")  # fmt: skip
    return gone

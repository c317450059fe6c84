"""``--extend N``: N more trials for a search, finished or not, in the same Ray experiment
(Tune's saved trial total raised: :func:`tune_lm.tuning.private_api.set_trial_total`),
the same Optuna study (restored with the searcher, so the sampler learns from every
earlier trial) and the same MLflow parent run; a restored ASHA judges the new trials
against the earlier trials' rung values (``RecordingASHA.refill_rungs``).

Each extension is noted in ``extensions.json`` *before* Tune's total is raised, and
``--resume`` raises it again if a kill came in between, so an extension is never lost
or applied twice. Only Optuna searches in a local folder extend: a grid or PBT has no
sampler to continue, and a confirmed search has fixed its finalists.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tune_lm.lm.errors import ConfigError
from tune_lm.tuning import private_api
from tune_lm.tuning.experiment import add_extension, clear_finished, read_extensions, read_finished
from tune_lm.tuning.layout import CONFIRM_FILE
from tune_lm.tuning.space import SearchSpace
from tune_lm.tuning.space_size import only_configuration

FLAG = "--extend"


def check_extendable(space: SearchSpace, path: str) -> None:
    """What can be told from the space and the folder alone (nothing heavy imported)."""
    if "://" in path:
        raise ConfigError(f"{FLAG} works on experiments in a local folder; {path} is in remote "
                          "storage. Start a new search seeded with it instead: --warm-start "
                          "(after copying it to a local folder)")  # fmt: skip
    if space.searcher.type != "optuna" or space.scheduler.type == "pbt":
        what = "PBT's population" if space.scheduler.type == "pbt" else "a grid's cells"
        raise ConfigError(f"{FLAG}: this experiment runs {what}, which has no sampler to "
                          "continue. Add values to the space and start a new search "
                          "(--name NEW_NAME), or use an Optuna search (searcher: {type: "
                          "optuna})")  # fmt: skip
    only = only_configuration(space)
    if only is not None:
        raise ConfigError(f"{FLAG}: the space has one configuration "
                          f"({only or 'nothing searched'}); more trials "
                          "would train it again alike, with one seed. Start a new search "
                          "that searches more values (--name NEW_NAME)")  # fmt: skip
    if (Path(path) / CONFIRM_FILE).is_file():
        raise ConfigError(f"{FLAG}: {path} has confirmed its finalists with fresh seeds "
                          f"({CONFIRM_FILE}); more trials could change who the finalists "
                          "are. Start a new search seeded with this one: --warm-start "
                          f"{path} --name NEW_NAME")  # fmt: skip


def check_tune_state(path: str) -> tuple[int, int]:
    """(trials created, trials planned) from Tune's saved search state (Ray imported)."""
    folder = Path(path)
    found = private_api.trial_total(folder) if private_api.tune_state_saved(folder) else None
    if found is None:
        raise ConfigError(f"{FLAG}: {path} has no saved search state (it stopped during "
                          "start-up): there is nothing to extend yet. Finish it first with "
                          "--resume")  # fmt: skip
    return found


def extended(space: SearchSpace, path: str) -> SearchSpace:
    """The space with the trials every earlier ``--extend`` added (what the experiment now
    runs: its progress, plan and summary count them)."""
    extensions = read_extensions(path)
    if not extensions:
        return space
    total = max(space.budget.num_samples, int(extensions[-1]["total"]))
    return space.with_overrides(num_samples=total)


def begin(path: str, more: int) -> dict[str, Any]:
    """Note the extension, reopen the experiment, then raise Tune's total and restart
    its time budget; the note. A finished search gets ``more`` trials beyond those it
    created (one its time budget ended created fewer than planned); an unfinished one,
    beyond those it planned (``--resume`` would run them)."""
    created, planned = check_tune_state(path)
    finished = read_finished(path)
    base = created if finished is not None else max(planned, created)
    finished = finished or {}
    entry = {"added": more, "total": base + more,
             "at": time.strftime("%Y-%m-%d %H:%M:%S"),
             "best_trial_before": finished.get("best_trial"),
             "model_before": finished.get("model")}  # fmt: skip
    add_extension(path, entry)
    clear_finished(path)
    private_api.restart_time_budget(Path(path))  # each extension has the space's budget
    private_api.forget_ended_trials(Path(path))  # ended by that budget: not running
    private_api.set_trial_total(Path(path), entry["total"])
    return entry


def reapply(path: str) -> None:
    """On --resume: trials Tune ended without telling the concurrency limit are not
    counted as running; an extension noted but not yet in Tune's state (a kill between
    the two) is applied now."""
    if "://" in path:
        return
    private_api.forget_ended_trials(Path(path))
    extensions = read_extensions(path)
    found = private_api.trial_total(Path(path)) if extensions else None
    if found is not None and found[1] != int(extensions[-1]["total"]):
        private_api.restart_time_budget(Path(path))
        private_api.set_trial_total(Path(path), int(extensions[-1]["total"]))


def unchanged_model(path: str, best_trial: str | None) -> str | None:
    """The registered model of the search before its last extension, when its best trial
    is still the best (so it is not registered again)."""
    extensions = read_extensions(path) if "://" not in path else []
    if not extensions or best_trial is None:
        return None
    last = extensions[-1]
    return last.get("model_before") if last.get("best_trial_before") == best_trial else None

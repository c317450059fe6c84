"""The Optuna study closed when a search ends for good: no trial left RUNNING, and each
closed as what ended it (the summary's status), read from ASHA's stop ledger."""

from __future__ import annotations

import re
from pathlib import Path

import optuna

from tune_lm.tuning import private_api
from tune_lm.tuning.layout import STUDY_FILE, STUDY_NAME
from tune_lm.tuning.searchers import TUNE_TRIAL_ID, StopLedger

_MO_VALUES = re.compile(r"values_at_epoch_(.+)")


def fail_unfinished_trials(experiment_dir: Path) -> int:
    """After a search ends for good (not interrupted), close the study's trials still
    RUNNING: Tune never reports to the searcher a trial that the time budget cut, nor one
    that ASHA had just stopped when the budget ran out. The first kind is FAIL (its curve
    judges nothing). The second is closed as ASHA's other stops are, so the study agrees
    with the summary: PRUNED with the values it reported, or, with several objectives,
    COMPLETE with the last values it reported (multi-objective samplers learn only from
    COMPLETE trials). Returns how many were closed."""
    journal = experiment_dir / STUDY_FILE
    if not journal.is_file():
        return 0
    study = optuna.load_study(study_name=STUDY_NAME, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))  # fmt: skip
    running = [t for t in study.get_trials(deepcopy=False)
               if t.state == optuna.trial.TrialState.RUNNING]  # fmt: skip
    stopped_by_asha = StopLedger(experiment_dir).stopped() if running else {}
    for trial in running:
        if trial.user_attrs.get(TUNE_TRIAL_ID) not in stopped_by_asha:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            continue
        values = _last_values(trial) if len(study.directions) > 1 else None
        if values is None:
            study.tell(trial.number, state=optuna.trial.TrialState.PRUNED)
        else:
            private_api.set_trial_user_attr(study, trial.number, "stopped_at_epoch", values[0])
            study.tell(trial.number, values[1])
    return len(running)


def _last_values(trial: optuna.trial.FrozenTrial) -> tuple[float, list[float]] | None:
    """A multi-objective trial's latest (epoch, values), from its user attributes."""
    found = []
    for key, values in trial.user_attrs.items():
        match = _MO_VALUES.fullmatch(key)
        if match:
            try:
                found.append((float(match.group(1)), [float(v) for v in values]))
            except (TypeError, ValueError):
                continue
    return max(found, key=lambda pair: pair[0]) if found else None

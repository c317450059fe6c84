"""The Optuna study closed at a search's end: trials Tune never reported are closed as
what ended them (ASHA's ledger), on a real Optuna journal."""

import optuna
import pytest

from tune_lm.tuning.layout import STUDY_FILE, STUDY_NAME
from tune_lm.tuning.searchers import TUNE_TRIAL_ID, StopLedger
from tune_lm.tuning.study_end import fail_unfinished_trials


def journal_study(folder, directions):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / STUDY_FILE)))
    return optuna.create_study(study_name=STUDY_NAME, storage=storage, directions=directions)


def test_a_trial_asha_stopped_as_the_budget_ran_out_is_pruned_not_failed(tmp_path):
    """ASHA stopped trial a, then the time budget ended the search before Tune told the
    searcher; trial b was cut by the budget; a trial of an older search has no Tune id."""
    study = journal_study(tmp_path, ["minimize"])
    stopped, cut = study.ask(), study.ask()
    study.ask()  # an older search's trial: no Tune trial id
    stopped.set_user_attr(TUNE_TRIAL_ID, "a")
    stopped.report(500.0, 1)
    cut.set_user_attr(TUNE_TRIAL_ID, "b")
    cut.report(400.0, 1)
    StopLedger(tmp_path).record("a", 1.0)

    assert fail_unfinished_trials(tmp_path) == 3
    trials = journal_study_loaded(tmp_path).trials
    assert [t.state.name for t in trials] == ["PRUNED", "FAIL", "FAIL"]
    assert trials[0].intermediate_values == {1: 500.0}  # what it reported stays
    assert fail_unfinished_trials(tmp_path) == 0  # nothing left RUNNING


def test_with_several_objectives_it_is_complete_with_its_last_values(tmp_path):
    """Multi-objective samplers learn only from COMPLETE trials: the stopped trial keeps
    the last values it reported, as ASHA's other stops do."""
    study = journal_study(tmp_path, ["minimize", "minimize"])
    stopped, cut = study.ask(), study.ask()
    stopped.set_user_attr(TUNE_TRIAL_ID, "a")
    stopped.set_user_attr("values_at_epoch_1", [120.0, 2.0])
    stopped.set_user_attr("values_at_epoch_2", [90.0, 2.5])
    cut.set_user_attr(TUNE_TRIAL_ID, "b")
    StopLedger(tmp_path).record("a", 3.0)

    assert fail_unfinished_trials(tmp_path) == 2
    first, second = journal_study_loaded(tmp_path).trials
    assert first.state.name == "COMPLETE" and first.values == pytest.approx([90.0, 2.5])
    assert first.user_attrs["stopped_at_epoch"] == 2.0
    assert second.state.name == "FAIL"


def journal_study_loaded(folder):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / STUDY_FILE)))
    return optuna.load_study(study_name=STUDY_NAME, storage=storage)

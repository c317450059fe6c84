"""The rung-aware TPE (tuning/rung_sampler.py) on a real Optuna study."""

import statistics

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from tune_lm.tuning.rung_sampler import RungAwareTPESampler, at_model_rung, model_rung

X = FloatDistribution(0.0, 1.0)


def study_with_rungs():
    """Two trials ran the whole budget (rung 9), with x near 0.1, but at rung 3 they were
    mediocre; ten stopped at rung 3, the best of them near x = 0.9; ten stopped at 1."""
    study = optuna.create_study(direction="minimize")
    for x in (0.08, 0.12):  # finished: final 50, at rung 3 worth 300
        study.add_trial(create_trial(params={"x": x}, distributions={"x": X}, value=50.0,
                                     intermediate_values={1: 400, 3: 300, 9: 50},
                                     user_attrs={"val_ppl_at_epoch_1": 400.0,
                                                 "val_ppl_at_epoch_3": 300.0,
                                                 "val_ppl_at_epoch_9": 50.0}))  # fmt: skip
    for i in range(10):  # stopped at rung 3; near 0.9 the best there
        x = 0.5 + 0.045 * i
        value = 400 - 200 * x
        study.add_trial(create_trial(params={"x": x}, distributions={"x": X},
                                     state=TrialState.PRUNED,
                                     intermediate_values={1: 450, 3: value},
                                     user_attrs={"val_ppl_at_epoch_1": 450.0,
                                                 "val_ppl_at_epoch_3": value}))  # fmt: skip
    for i in range(10):  # stopped at rung 1
        x = 0.2 + 0.03 * i
        study.add_trial(create_trial(params={"x": x}, distributions={"x": X},
                                     state=TrialState.PRUNED, intermediate_values={1: 600},
                                     user_attrs={"val_ppl_at_epoch_1": 600.0}))  # fmt: skip
    return study


def test_the_model_rung_is_the_highest_with_enough_trials_each_valued_there():
    trials = study_with_rungs().get_trials()
    assert model_rung(trials, [1, 3, 9], min_points=5) == 3
    assert model_rung(trials, [1, 3, 9], min_points=2) == 9
    viewed = at_model_rung(trials, [1, 3, 9], min_points=5)
    finished = [t for t in viewed if t.state == TrialState.COMPLETE]
    assert len(finished) == 12  # the 2 full ones and the 10 stopped at rung 3
    assert sorted(t.value for t in finished)[-2:] == [300.0, 300.0]  # the full ones, at 3
    assert all(t.state == TrialState.PRUNED for t in viewed if t.params["x"] < 0.5
               and "val_ppl_at_epoch_3" not in t.user_attrs)  # fmt: skip
    assert trials[0].state == TrialState.COMPLETE and trials[0].value == 50.0  # not changed


def test_tpe_proposes_where_the_model_rung_is_good_not_where_the_deepest_trials_were():
    """Plain TPE puts the two full-budget trials first (x near 0.1); the rung-aware one
    models rung 3, where x near 0.9 is best. If Optuna stopped reading trials through
    the study it is handed, both would propose alike and this would fail."""
    proposals = {}
    for name, sampler in {
        "plain": optuna.samplers.TPESampler(n_startup_trials=0, seed=1),
        "rung": RungAwareTPESampler(rungs=[1, 3, 9], n_startup_trials=0, seed=1),
    }.items():
        study = study_with_rungs()
        study.sampler = sampler
        proposals[name] = [study.ask({"x": X}).params["x"] for _ in range(30)]
    assert statistics.median(proposals["rung"]) > 0.6
    assert statistics.median(proposals["plain"]) < statistics.median(proposals["rung"]) - 0.2


def test_mo_asha_keeps_a_fast_model_that_plain_asha_would_stop(tmp_path):
    """At a rung, MO-ASHA ranks by Pareto front (then perplexity) and keeps the best
    1/reduction_factor; a much faster but worse trial is on the first front."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from tune_lm.tuning.searchers import StopLedger, make_scheduler
    from tune_lm.tuning.space import SearchSpace

    space = SearchSpace.from_raw({
        "name": "mo", "objectives": ["val_ppl", "epoch_time_s"], "fixed": {"epochs": 9},
        "scheduler": {"type": "mo_asha", "grace_period": 1, "reduction_factor": 3},
        "parameters": {"lr": {"loguniform": [1, 40]}}}, "test")  # fmt: skip
    ledger = StopLedger(tmp_path)
    scheduler = make_scheduler(space, ledger)
    scheduler.set_search_properties("val_ppl", "min")

    def result(name, ppl, seconds, epoch=1.0):
        return scheduler.on_trial_result(None, SimpleNamespace(trial_id=name),
                                         {"epoch": epoch, "val_ppl": ppl,
                                          "epoch_time_s": seconds})  # fmt: skip

    assert result("A", 400, 10) == TrialScheduler.CONTINUE  # the first always goes on
    for name, ppl, seconds in [("B", 410, 11), ("C", 420, 12), ("D", 430, 13), ("E", 440, 14)]:
        assert result(name, ppl, seconds) == TrialScheduler.STOP  # A dominates each
    assert result("F", 600, 1) == TrialScheduler.CONTINUE  # 6 at the rung, 2 kept: A and F
    assert result("G", 650, 20) == TrialScheduler.STOP  # dominated by all
    assert result("A", 300, 10, epoch=3.0) == TrialScheduler.CONTINUE
    assert result("A", 200, 10, epoch=9.0) == TrialScheduler.STOP  # the budget's end
    assert set(ledger.stopped()) == {"B", "C", "D", "E", "G"}  # not A's end of budget
    with pytest.raises(Exception, match="mo_asha"):
        SearchSpace.from_raw({"name": "one", "scheduler": {"type": "mo_asha"},
                              "parameters": {"lr": {"loguniform": [1, 40]}}}, "test")  # fmt: skip

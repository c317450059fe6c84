"""The progress line's time-left estimate (pure functions) and its presence in a real search."""

import re

import pytest

from tune_lm.tuning.progress import estimate_remaining_s, expected_epochs, total_trials
from tune_lm.tuning.space import SearchSpace


def space(**sections):
    raw = {"fixed": {"epochs": 9}, "parameters": {"lr": {"loguniform": [1.0, 20.0]}}}
    raw.update(sections)
    return SearchSpace(**raw)


def test_fifo_trials_run_every_epoch():
    assert expected_epochs([], 3, 9) == 9
    assert expected_epochs([], 3, 9, done=4) == 5


def test_asha_rungs_thin_out_the_expected_epochs():
    # rungs 1 and 3 of 9, factor 3: 1 epoch, then 1/3 of trials do 2 more, 1/9 do 6 more.
    assert expected_epochs([1, 3], 3, 9) == pytest.approx(1 + 2 / 3 + 6 / 9)
    # A trial past rung 1 has survived it: 2 more epochs, then 1/3 chance of 6 more.
    assert expected_epochs([1, 3], 3, 9, done=1) == pytest.approx(2 + 6 / 3)
    assert expected_epochs([1, 3], 3, 9, done=9) == 0


def test_estimate_counts_unstarted_and_running_work():
    fifo = space(scheduler={"type": "fifo"}, budget={"num_samples": 4, "max_concurrent": 2})
    left = estimate_remaining_s(space=fifo, total_trials=4, running_epochs=[3, 6], started=2,
                                seconds_per_epoch=10, concurrency=2, elapsed_s=100)  # fmt: skip
    assert left == pytest.approx((2 * 9 + 6 + 3) * 10 / 2)


def test_time_budget_caps_the_estimate():
    budget = space(budget={"num_samples": 100, "time_budget": "5m"})
    left = estimate_remaining_s(space=budget, total_trials=100, running_epochs=[], started=0,
                                seconds_per_epoch=60, concurrency=1, elapsed_s=120)  # fmt: skip
    assert left == pytest.approx(180)


def test_a_grid_runs_every_combination_num_samples_times():
    grid = SearchSpace(
        searcher={"type": "grid"}, budget={"num_samples": 2},
        parameters={"model": {"grid": ["LSTM", "GRU"]}, "bptt": {"grid": [35, 50, 70]}},
    )  # fmt: skip
    assert total_trials(grid) == 12
    assert total_trials(space(budget={"num_samples": 7})) == 7


@pytest.mark.slow
def test_a_real_search_prints_progress_with_time_left(asha_search):
    done, _ = asha_search
    lines = [line for line in done.stdout.splitlines() if line.startswith("progress: ")]
    assert lines, done.stdout[-2000:]
    # A line per trial as it ends, its count rising to all 8, then where the search stands.
    ended = [int(m.group(1)) for line in done.stdout.splitlines()
             if (m := re.match(r"trial (\d+)/8 \S+ (completed|stopped early by ASHA)", line))]
    assert ended == list(range(1, 9)), done.stdout[-3000:]
    assert re.search(r"8/8 finished", lines[-1]), lines
    assert any(re.search(r"about \d+:\d\d:\d\d left", line) for line in lines), lines
    assert any("best val_ppl" in line for line in lines), lines


def test_a_tie_goes_to_the_lower_trial_id_in_the_verdict_the_table_and_the_progress_line():
    from types import SimpleNamespace

    from tune_lm.tuning.progress import ProgressPrinter
    from tune_lm.tuning.results import TrialOutcome, conclude
    from tune_lm.tuning.summary import top_table

    space = SearchSpace.from_raw({"data": "synthetic", "fixed": {"epochs": 1}, "budget":
                                  {"num_samples": 2}, "parameters": {"lr": {"choice": [1, 2]}}},
                                 "test")  # fmt: skip
    tied = [TrialOutcome(trial_id, {"lr": lr}, [{"epoch": 1.0, "val_ppl": 9.5}], None)
            for trial_id, lr in (("bbbb", 1), ("aaaa", 2))]  # fmt: skip
    verdict = conclude(tied, space)
    assert verdict.best.trial_id == "aaaa"
    table = top_table(verdict.rows)
    assert table.index("aaaa") < table.index("bbbb")
    printer = ProgressPrinter(space, interval_s=3600)
    for outcome in tied:  # the later trial id reports first
        printer.on_trial_result(0, [], SimpleNamespace(trial_id=outcome.trial_id),
                                {"epoch": 1.0, "val_ppl": 9.5})
    assert printer._best == (9.5, "aaaa")

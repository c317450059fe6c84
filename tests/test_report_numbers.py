"""The numbers a report shows, on known inputs: the expected best of n trials, Pareto
sets, and verdicts with the seed noise a search measured."""

import math

import pytest

from tune_lm.reporting.expected_best import expected_best, expected_best_curve
from tune_lm.tuning.results import pareto_front


def test_the_expected_best_of_n_trials_is_the_mean_minimum_of_n_draws():
    """Dodge et al.'s estimator against brute force: every ordered n-tuple of the trials."""
    import itertools

    values = [5.0, 1.0, 3.0, 3.0, 8.0]
    for n in (1, 2, 3):
        tuples = list(itertools.product(values, repeat=n))
        assert expected_best(values, n) == pytest.approx(sum(map(min, tuples)) / len(tuples))
    curve = expected_best_curve(values + [math.inf], draws=500)
    assert [point["trials"] for point in curve] == [1, 2, 3, 4, 5]  # a diverged trial: left out
    means = [point["expected_best"] for point in curve]
    assert means == sorted(means, reverse=True) and means[0] == pytest.approx(4.0)


@pytest.mark.parametrize(
    "points,expected",
    [
        ([(1, 5), (2, 3), (3, 1), (3, 4), (2, 6)], {0, 1, 2}),
        ([(1, 1), (2, 2), (1, 2)], {0}),
        ([(1, 2), (1, 2)], {0, 1}),  # equal points do not dominate each other
        ([(1, float("inf")), (2, 3)], {1}),
        ([], set()),
    ],
)
def test_pareto_front_on_known_points(points, expected):
    assert set(pareto_front(points)) == expected


def test_grouped_differences_get_the_seed_noise_the_search_measured():
    from tune_lm.reporting.verdicts import add_verdicts, seed_noise

    def rows():
        return [{"model": "LSTM", "best_val_ppl": 100.0}, {"model": "GRU", "best_val_ppl": 102.0},
                {"model": "RNN_TANH", "best_val_ppl": 120.0}]  # fmt: skip

    confirmed = {"confirmed": [{"val_ppl_sd": 1.0}, {"val_ppl_sd": 2.0}]}
    sd, where = seed_noise(confirmed)
    assert sd == pytest.approx(math.sqrt(2.5)) and "2 confirmed" in where
    table = rows()
    add_verdicts(table, (sd, where))
    half = 1.96 * math.sqrt(2) * sd  # 4.38
    assert table[0]["verdict"] == "best"
    assert table[1]["verdict"].startswith("within noise")
    assert table[1]["vs_best"] == f"+2.00 [{2 - half:+.2f}, {2 + half:+.2f}]"
    assert table[2]["verdict"].startswith("worse")
    # A grid's repeats: each cell's spread over its seeds.
    grid = {"space": {"parameters": {"model": {}, "lr": {}}}, "trials": [
        {"model": "LSTM", "lr": 5, "seed": 0, "best_val_ppl": 100.0},
        {"model": "LSTM", "lr": 5, "seed": 1, "best_val_ppl": 104.0},
        {"model": "GRU", "lr": 5, "seed": 0, "best_val_ppl": 110.0},
        {"model": "GRU", "lr": 5, "seed": 1, "best_val_ppl": 110.0}]}  # fmt: skip
    sd, where = seed_noise(grid)
    assert sd == pytest.approx(math.sqrt((8.0 + 0.0) / 2)) and "2 grid cell" in where
    single = {"space": {"parameters": {"model": {}}}, "trials": [
        {"model": "LSTM", "best_val_ppl": 100.0}]}  # fmt: skip
    assert seed_noise(single) is None
    unknown = rows()
    add_verdicts(unknown, None)
    assert unknown[1]["vs_best"] == "+2.00" and "noise unknown" in unknown[1]["verdict"]

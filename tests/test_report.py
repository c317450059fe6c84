"""The report: Pareto sets on known points; tables and pictures from a real search."""

import csv
import subprocess
import sys

import pytest

from tune_lm.report import pareto_front

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


def test_report_of_a_real_search(finished_search):
    folder = finished_search
    report = folder / "report"
    # Written automatically at the end of the search...
    assert (report / "trials.md").is_file() and (report / "by_model.md").is_file()
    # ...and again on demand, grouped by another parameter.
    done = subprocess.run(
        [sys.executable, "-m", "tune_lm.report", str(folder), "--by", "nhid"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with open(report / "trials.csv") as handle:
        trials = list(csv.DictReader(handle))
    assert len(trials) == 8
    with open(report / "by_nhid.csv") as handle:
        groups = list(csv.DictReader(handle))
    assert {g["nhid"] for g in groups} == {"8", "32"}
    assert sum(int(g["trials"]) for g in groups) == 8
    best_overall = min(float(t["best_val_ppl"]) for t in trials)
    assert float(groups[0]["best_val_ppl"]) == pytest.approx(best_overall)
    for name in ("learning_curves", "pareto", "best_so_far", "importances"):
        picture = report / f"{name}.png"
        assert picture.read_bytes()[:8] == PNG_SIGNATURE and picture.stat().st_size > 5000


def test_report_of_a_folder_without_a_search_exits_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tune_lm.report", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "summary.json" in done.stderr


@pytest.fixture
def finished_search(asha_search):
    done, folder = asha_search
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder

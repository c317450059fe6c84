"""The report: Pareto sets on known points; tables and pictures from a real search."""

import csv
import json
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


def _rows(path):
    with open(path) as handle:
        return sorted(csv.DictReader(handle), key=lambda row: row["trial_id"])


@pytest.mark.parametrize("source", ["uri", "mlflow"])
def test_report_from_a_storage_uri_or_the_mlflow_experiment(finished_search, tmp_path, source):
    """The same tables from a copy fetched through pyarrow's filesystems (the s3:// code
    path, here with file://) and from the MLflow runs alone."""
    folder = finished_search
    if source == "uri":
        flags = [folder.as_uri()]
    else:
        store = folder.parent.parent / "mlflow.db"
        flags = ["--mlflow", "t", "--tracking-uri", f"sqlite:///{store}"]
    out = tmp_path / "copy"
    done = subprocess.run(
        [sys.executable, "-m", "tune_lm.report", *flags, "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(out.rglob("checkpoint_*")), "checkpoints are not copied"
    original, copied = _rows(folder / "report" / "trials.csv"), _rows(out / "report" / "trials.csv")
    assert copied == original
    for name in ("learning_curves", "pareto", "best_so_far", "importances"):
        picture = out / "report" / f"{name}.png"
        assert picture.read_bytes()[:8] == PNG_SIGNATURE and picture.stat().st_size > 5000
    # The learning curves come from each trial's per-evaluation history: same points.
    def curves(root):
        found = {}
        for result in root.glob("*/result.json"):
            lines = [json.loads(line) for line in result.read_text().splitlines() if line]
            found[lines[0]["trial_id"]] = [(h["epoch"], round(h["val_ppl"], 4)) for h in lines]
        return found

    assert curves(out) == curves(folder) and len(curves(out)) == 8


def test_report_of_an_unknown_mlflow_experiment_exits_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tune_lm.report", "--mlflow", "nope", "--tracking-uri",
         f"sqlite:///{tmp_path / 'mlflow.db'}", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "no experiment 'nope'" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


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

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
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{store}").create_experiment("quick")
    done = subprocess.run(
        [sys.executable, "-m", "tune_lm.report", "--mlflow", "nope", "--tracking-uri",
         f"sqlite:///{store}", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "no experiment 'nope'" in done.stderr, done.stderr
    assert "quick" in done.stderr  # what there is
    assert not (tmp_path / "out").exists()
    # A store that does not exist is named, never created (MLflow would create it).
    missing = tmp_path / "elsewhere.db"
    done = subprocess.run(
        [sys.executable, "-m", "tune_lm.report", "--mlflow", "quick", "--tracking-uri",
         f"sqlite:///{missing}", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and str(missing) in done.stderr, done.stderr
    assert not missing.exists() and not (tmp_path / "out").exists()


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


def _hand_made_search(folder, *, truncated_line=False):
    """An experiment folder as a search leaves it (summary.json, one result.json per
    trial), without running one; ``truncated_line``: a trial's last line cut off, as a
    search still writing it leaves it."""
    trials = []
    for index, model in enumerate(["LSTM", "GRU", "LSTM"]):
        trial_id = f"t{index}"
        trials.append({"trial_id": trial_id, "model": model, "lr": 1.0 + index, "epochs_run": 2,
                       "status": "completed", "best_val_ppl": 50.0 - index,
                       "epoch_time_s": 1.0 + index, "tokens_per_s": 100.0})  # fmt: skip
        lines = [json.dumps({"trial_id": trial_id, "epoch": epoch, "val_ppl": 60.0 - epoch,
                             "timestamp": 1000.0 + epoch}) for epoch in (1, 2)]  # fmt: skip
        text = "\n".join(lines) + "\n"
        if truncated_line and index == 1:
            text += '{"trial_id": "t1", "epoch": 3, "val_p'
        (folder / f"trial_{index}").mkdir(parents=True)
        (folder / f"trial_{index}" / "result.json").write_text(text)
    space = {"parameters": {"model": {"choice": ["LSTM", "GRU"]}, "lr": {"uniform": [1, 4]}},
             "fixed": {"nhid": 16}}  # fmt: skip
    (folder / "summary.json").write_text(json.dumps({"space": space, "trials": trials}))
    return folder


def test_a_truncated_result_line_is_skipped_with_a_warning(tmp_path):
    from tune_lm.report import load_trials

    folder = _hand_made_search(tmp_path / "exp", truncated_line=True)
    done = subprocess.run([sys.executable, "-m", "tune_lm.report", str(folder)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "trial_1/result.json" in done.stderr and "line 3" in done.stderr
    assert (folder / "report" / "learning_curves.png").read_bytes()[:8] == PNG_SIGNATURE
    _, records = load_trials(folder)
    assert [len(r.history) for r in records] == [2, 2, 2]


@pytest.mark.parametrize("where", ["folder", "uri"])
def test_bad_flags_or_a_truncated_summary_write_nothing(tmp_path, where):
    folder = _hand_made_search(tmp_path / "exp")
    source = [str(folder)] if where == "folder" else [folder.as_uri(), "--out",
                                                     str(tmp_path / "copy")]  # fmt: skip

    def report(*flags):
        return subprocess.run([sys.executable, "-m", "tune_lm.report", *source, *flags],
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    done = report("--by", "nhid", "emsize")
    assert done.returncode == 2 and "--by emsize" in done.stderr and "nhid" in done.stderr
    summary = folder / "summary.json"
    summary.write_text(summary.read_text()[:100])  # a search still writing it
    done = report()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "summary.json" in done.stderr and "not complete JSON" in done.stderr
    assert not (folder / "report").exists() and not (tmp_path / "copy").exists()


def test_importances_are_fanova_as_the_plot_says():
    import optuna

    from tune_lm.report_plots import importance_evaluator

    evaluator, name = importance_evaluator()
    assert isinstance(evaluator, optuna.importance.FanovaImportanceEvaluator) and name == "fANOVA"


@pytest.mark.slow
def test_a_search_in_remote_storage_reports_its_learning_curves(tmp_path):
    """Storage given as a URI (file:// takes the same pyarrow path as s3://): the summary
    is written in ./NAME, and the end-of-search report there has every trial's curve."""
    import os

    (tmp_path / "space.yaml").write_text(
        "data: synthetic\nsearcher: {type: optuna, sampler: random}\nscheduler: {type: fifo}\n"
        "budget: {num_samples: 2, max_concurrent: 2}\nresources: {cpus_per_trial: 1}\n"
        "fixed: {epochs: 2, nlayers: 1, emsize: 16, nhid: 16, batch_size: 8, bptt: 10,\n"
        "        max_tokens_per_epoch: 1600}\nparameters: {lr: {loguniform: [1.0, 20.0]}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "tune_lm.search", "--space", "space.yaml", "--storage",
         f"file://{tmp_path / 'remote'}", "--name", "far"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    local = tmp_path / "far"
    assert len(list(local.glob("*/result.json"))) == 2
    assert (local / "report" / "learning_curves.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (tmp_path / "remote" / "far" / "space.json").is_file()  # pinned there for --resume

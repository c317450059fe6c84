"""The report: tables and pictures from a real search, from a folder, a storage URI or
MLflow (the numbers behind them: test_report_numbers.py)."""

import csv
import json
import logging
import math

import pytest
from cli_run import run_cli

from tune_lm.lm.errors import TuneLMError
from tune_lm.tuning.driver_lock import driving

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_report_of_a_real_search(finished_search):
    folder = finished_search
    report = folder / "report"
    # Written automatically at the end of the search...
    assert (report / "trials.md").is_file() and (report / "by_model.md").is_file()
    # ...and again on demand, grouped by another parameter.
    done = run_cli("report", str(folder / "summary.json"), "--by", "nhid", timeout=300)
    assert done.returncode == 0, done.stderr  # the summary file stands for its folder
    with open(report / "trials.csv") as handle:
        trials = list(csv.DictReader(handle))
    assert len(trials) == 8
    with open(report / "by_nhid.csv") as handle:
        groups = list(csv.DictReader(handle))
    assert {g["nhid"] for g in groups} == {"8", "32"}
    assert sum(int(g["trials"]) for g in groups) == 8
    best_overall = min(float(t["best_val_ppl"]) for t in trials)
    assert float(groups[0]["best_val_ppl"]) == pytest.approx(best_overall)
    for name in ("learning_curves", "parallel_coordinates", "pareto", "best_so_far", "importances",
                 "expected_best"):
        picture = report / f"{name}.png"
        assert picture.read_bytes()[:8] == PNG_SIGNATURE and picture.stat().st_size > 5000
    # Expected best against trials: 1 trial expects the mean, all 8 nearly the best.
    with open(report / "expected_best.csv") as handle:
        curve = list(csv.DictReader(handle))
    finite = [float(t["best_val_ppl"]) for t in trials if math.isfinite(float(t["best_val_ppl"]))]
    shown = sorted({n for n in (1, 2, 4, 8) if n <= len(finite)} | {len(finite)})
    assert [int(row["trials"]) for row in curve] == shown
    assert float(curve[0]["expected_best"]) == pytest.approx(sum(finite) / len(finite))
    assert best_overall <= float(curve[-1]["expected_best"]) <= float(curve[0]["expected_best"])
    for row in curve:
        assert float(row["ci95_low"]) <= float(row["expected_best"]) <= float(row["ci95_high"])


def _rows(path):
    with open(path) as handle:
        return sorted(csv.DictReader(handle), key=lambda row: row["trial_id"])


@pytest.mark.slow
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
    done = run_cli("report", *flags, "--out", str(out), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Downloading artifacts" not in done.stderr  # MLflow's bar, between command and answer
    assert not list(out.rglob("checkpoint_*")), "checkpoints are not copied"
    original, copied = _rows(folder / "report" / "trials.csv"), _rows(out / "report" / "trials.csv")
    assert copied == original
    for name in ("learning_curves", "parallel_coordinates", "pareto", "best_so_far", "importances"):
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


@pytest.mark.slow
def test_report_of_an_unknown_mlflow_experiment_exits_2(tmp_path):
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{store}").create_experiment("quick")
    done = run_cli("report", "--mlflow", "nope", "--tracking-uri", f"sqlite:///{store}",
                   "--out", tmp_path / "out", timeout=120)
    assert done.returncode == 2 and "no experiment 'nope'" in done.stderr, done.stderr
    assert "quick" in done.stderr  # what there is
    assert not (tmp_path / "out").exists()
    # An experiment that is not a tune_lm search (MLflow's own Default): said so, naming
    # the experiments that hold one.
    client = MlflowClient(f"sqlite:///{store}")
    client.create_run(client.get_experiment_by_name("quick").experiment_id,
                      tags={"tune_lm.kind": "search"})  # fmt: skip
    done = run_cli("report", "--mlflow", "Default", "--tracking-uri", f"sqlite:///{store}",
                   "--out", tmp_path / "out", timeout=120)  # fmt: skip
    assert done.returncode == 2 and "holds no tune_lm search" in done.stderr, done.stderr
    assert "one of: quick" in done.stderr and not (tmp_path / "out").exists()
    # A store that does not exist is named, never created (MLflow would create it).
    missing = tmp_path / "elsewhere.db"
    done = run_cli("report", "--mlflow", "quick", "--tracking-uri", f"sqlite:///{missing}",
                   "--out", tmp_path / "out", timeout=120)
    assert done.returncode == 2 and str(missing) in done.stderr, done.stderr
    assert not missing.exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_report_of_a_folder_without_a_search_exits_2(tmp_path):
    done = run_cli("report", str(tmp_path), timeout=120)
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


def test_an_experiment_where_no_trial_reported_has_nothing_to_report(tmp_path):
    """(a time budget that ran out first) was 10 empty tables and pictures, and a raw
    matplotlib warning"""
    from tune_lm.reporting.report import write_report

    folder = _hand_made_search(tmp_path / "exp")
    summary = json.loads((folder / "summary.json").read_text())
    for row in summary["trials"]:
        row.update(best_val_ppl=None, epochs_run=0, status="stopped by the time budget")
    (folder / "summary.json").write_text(json.dumps(summary))
    for results in folder.glob("*/result.json"):
        results.unlink()
    with pytest.raises(TuneLMError, match="no trial reported a result .3 started."):
        write_report(folder)
    assert not (folder / "report").exists()
    # Every trial diverged: they reported (inf), and the cause and fix are named.
    for row in summary["trials"]:
        row.update(best_val_ppl=None, epochs_run=1, status="diverged")
    (folder / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(TuneLMError, match="every trial diverged .3: its loss became inf or "
                                          "NaN.*lower learning rate.*clip"):
        write_report(folder)
    assert not (folder / "report").exists()


@pytest.mark.slow
def test_a_truncated_result_line_is_skipped_with_a_warning(tmp_path, caplog):
    from tune_lm.reporting.report import load_trials

    folder = _hand_made_search(tmp_path / "exp", truncated_line=True)
    done = run_cli("report", str(folder), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "trial_1/result.json" in done.stderr and "line 3" in done.stderr
    assert (folder / "report" / "learning_curves.png").read_bytes()[:8] == PNG_SIGNATURE
    _, records = load_trials(folder)
    assert [len(r.history) for r in records] == [2, 2, 2]
    # A result.json that is a folder, and one of garbage: left out, one warning each (a
    # traceback, and a warning per line, before).
    (folder / "trial_2" / "result.json").unlink()
    (folder / "trial_2" / "result.json").mkdir()
    (folder / "trial_0" / "result.json").write_text("x\n" * 40)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _, records = load_trials(folder)
    assert sorted(len(r.history) for r in records) == [0, 0, 2]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3, warned  # trial_1's cut line, and one for each of these
    assert any("trial_2/result.json cannot be read" in w for w in warned), warned
    assert any("40 of its 40 lines are not JSON results" in w for w in warned), warned


@pytest.mark.slow
@pytest.mark.parametrize("where", ["folder", "uri"])
def test_bad_flags_or_a_truncated_summary_write_nothing(tmp_path, where):
    folder = _hand_made_search(tmp_path / "exp")
    source = [str(folder)] if where == "folder" else [folder.as_uri(), "--out",
                                                     str(tmp_path / "copy")]  # fmt: skip

    def report(*flags):
        return run_cli("report", *source, *flags, timeout=120)

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

    from tune_lm.reporting.plots import importance_evaluator, importance_method

    evaluator, name = importance_evaluator()
    assert isinstance(evaluator, optuna.importance.FanovaImportanceEvaluator) and name == "fANOVA"
    assert importance_method() == name  # the name a small study's picture gives, unimported


@pytest.mark.slow
def test_a_search_in_remote_storage_reports_its_learning_curves(tmp_path):
    """Storage given as a URI (file:// takes the same pyarrow path as s3://): the summary
    is written in ./NAME, and the end-of-search report there has every trial's curve."""

    (tmp_path / "space.yaml").write_text(
        "data: synthetic\nsearcher: {type: optuna, sampler: random}\nscheduler: {type: fifo}\n"
        "budget: {num_samples: 2, max_concurrent: 2}\nresources: {cpus_per_trial: 1}\n"
        "fixed: {epochs: 2, nlayers: 1, emsize: 16, nhid: 16, batch_size: 8, bptt: 10,\n"
        "        max_tokens_per_epoch: 1600}\nparameters: {lr: {loguniform: [1.0, 20.0]}}\n"
    )
    # A driver running this experiment from this folder (its copy ./far marked, locked)
    # refuses a second one: remote experiments are locked through their local copy.
    local = tmp_path / "far"
    local.mkdir()
    (local / ".tune_lm_remote.json").write_text(
        json.dumps({"experiment": f"file://{tmp_path / 'remote' / 'far'}"}))
    with driving(local):
        busy = run_cli("search", "--space", "space.yaml", "--storage",
                       f"file://{tmp_path / 'remote'}", "--name", "far", cwd=tmp_path,
                       env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"})  # fmt: skip
    assert busy.returncode == 2 and "being run by another search" in busy.stderr, busy.stderr
    assert not (tmp_path / "remote" / "far").exists() and not (tmp_path / "m.db").exists()
    done = run_cli("search", "--space", "space.yaml", "--storage",
                   f"file://{tmp_path / 'remote'}", "--name", "far", cwd=tmp_path,
                   env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"})  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(list(local.glob("*/result.json"))) == 2
    assert (local / "report" / "learning_curves.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (tmp_path / "remote" / "far" / "space.json").is_file()  # pinned there for --resume
    # ./far is known as this experiment's copy: going on from here may write there again
    again = run_cli("search", "--resume", "--storage", f"file://{tmp_path / 'remote'}",
                    "--name", "far", cwd=tmp_path,
                    env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"})  # fmt: skip
    assert again.returncode == 0 and "nothing to resume" in again.stdout, again.stderr[-2000:]


def _record(trial_id, model, lr, status, curve):
    from tune_lm.tuning.results import TrialRow

    history = [{"epoch": float(e), "val_ppl": v} for e, v in enumerate(curve, start=1)]
    return TrialRow(trial_id, {"model": model, "lr": lr}, epochs_run=len(curve),
                    best_val_ppl=min(curve), epoch_time_s=1.0, tokens_per_s=1.0,
                    status=status, history=history)  # fmt: skip


RECORDS = [
    _record("aaaa0001", "LSTM", 1.0, "completed", [300, 200, 150, 120]),
    _record("aaaa0002", "GRU", 10.0, "stopped early by ASHA at epoch 1", [400]),
    _record("aaaa0003", "LSTM", 3.0, "stopped at epoch 2 by the time budget", [350, 250]),
    _record("aaaa0004", "GRU", 2.0, "completed", [320, 210, 170, 130]),
    _record("aaaa0005", "LSTM", 5.0, "stopped early by ASHA at epoch 2", [330, 260]),
]


def test_learning_curves_mark_only_stopped_trials_and_name_the_best():
    import matplotlib.pyplot as plt

    from tune_lm.reporting.plots import learning_curves_figure

    figure = learning_curves_figure(RECORDS)
    axis = figure.axes[0]
    marks = [line for line in axis.lines if line.get_marker() == "x" and len(line.get_xdata())]
    # One x per trial stopped before its last epoch, at its last point; none on completed.
    assert sorted((float(m.get_xdata()[0]), float(m.get_ydata()[0])) for m in marks) == [
        (1.0, 400.0), (2.0, 250.0), (2.0, 260.0)]  # fmt: skip
    assert all(float(tick).is_integer() for tick in axis.get_xticks())  # whole epochs
    named = sorted(text.get_text().split()[0] for text in axis.texts)
    assert named == ["aaaa0001", "aaaa0003", "aaaa0004"]  # the 3 lowest best val ppl
    plt.close(figure)


def test_parallel_coordinates_put_each_trial_on_its_values():
    import matplotlib.pyplot as plt

    from tune_lm.reporting.plots import _axis_positions, parallel_coordinates_figure

    # A log-uniform range on a log axis: 1, 10, 100 at 0, 0.5, 1.
    positions, ticks = _axis_positions([1.0, 10.0, 100.0], {"loguniform": [1.0, 100.0]})
    assert positions == pytest.approx([0.0, 0.5, 1.0]) and ticks[0.5] == "10"
    # Choices in the order the space gives them, whatever order the trials came in.
    positions, ticks = _axis_positions(["GRU", "LSTM", "GRU"], {"choice": ["LSTM", "GRU"]})
    assert positions == [1.0, 0.0, 1.0] and ticks == {0.0: "LSTM", 1.0: "GRU"}
    space = {"model": {"choice": ["LSTM", "GRU"]}, "lr": {"loguniform": [1.0, 10.0]}}
    figure = parallel_coordinates_figure(RECORDS, space)
    axis = figure.axes[0]
    trial_lines = [line for line in axis.lines if len(line.get_xdata()) == 3]
    assert len(trial_lines) == len(RECORDS)
    assert [t.get_text() for t in axis.get_xticklabels()] == ["model", "lr", "best val ppl"]
    # The best trial (aaaa0001: LSTM, lr 1, 120) is drawn last and thickest.
    best = trial_lines[-1]
    assert best.get_linewidth() == max(line.get_linewidth() for line in trial_lines)
    assert list(best.get_ydata()) == pytest.approx([0.0, 0.0, 0.0])
    plt.close(figure)


def test_importances_say_when_too_few_trials_completed(tmp_path, monkeypatch):
    import optuna

    from tune_lm.reporting import plots as report_plots
    from tune_lm.tuning.layout import STUDY_FILE, STUDY_NAME

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / STUDY_FILE)))
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 0.01), 4)
    drawn = []
    real_save = report_plots._save
    monkeypatch.setattr(report_plots, "_save",
                        lambda figure, path: drawn.append(figure) or real_save(figure, path))
    report_plots.importances(tmp_path, tmp_path / "few.png")
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 0.01), 12)
    report_plots.importances(tmp_path, tmp_path / "enough.png")
    few, enough = (figure.axes[0] for figure in drawn)
    assert "4 completed trials of 4" in few.get_title() and "fANOVA" in few.get_title()
    assert "Too few completed trials" in few.texts[0].get_text() and not few.patches
    assert "16 completed trials" in enough.get_title() and len(enough.patches) == 2

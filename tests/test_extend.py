"""--extend N (issue 17): more trials for a search, in the same Ray experiment, Optuna
study and MLflow parent run; a restored ASHA knows the earlier trials' rung values."""

import json
import pickle
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from cli_run import run_cli
from mlflow.tracking import MlflowClient
from ray.tune import ExperimentAnalysis
from ray.tune.schedulers import TrialScheduler

from tune_lm.lm.errors import ConfigError
from tune_lm.tuning import private_api
from tune_lm.tuning.extend import check_extendable
from tune_lm.tuning.layout import CONFIRM_FILE, STUDY_FILE, STUDY_NAME
from tune_lm.tuning.mo_asha import MultiObjectiveASHA
from tune_lm.tuning.searchers import RecordingASHA, StopLedger
from tune_lm.tuning.space import SearchSpace

SPACE = """
name: grown
data: synthetic
seed: 5
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
searcher: {type: optuna, sampler: tpe, n_startup_trials: 2}
budget: {num_samples: 2, max_concurrent: 2}
resources: {cpus_per_trial: 1}
fixed: {epochs: 2, nlayers: 1, emsize: 16, nhid: 16, batch_size: 8, bptt: 10, dropout: 0.0,
        max_tokens_per_epoch: 4000}
parameters:
  lr: {loguniform: [1.0, 30.0]}
"""


def write_results(folder, trial_id, values):
    (folder / f"train_trial_{trial_id}_1_lr=1").mkdir(parents=True)
    lines = [json.dumps({"trial_id": trial_id, "epoch": e, "val_ppl": v}) for e, v in values]
    (folder / f"train_trial_{trial_id}_1_lr=1" / "result.json").write_text("\n".join(lines))


def test_a_restored_asha_judges_new_trials_against_the_earlier_trials_rung_values(tmp_path):
    write_results(tmp_path, "a", [(1, 100.0), (2, 90.0), (4, 80.0)])
    write_results(tmp_path, "b", [(1, 110.0), (2, 105.0)])
    write_results(tmp_path, "c", [(1, 120.0)])
    scheduler = RecordingASHA(ledger=StopLedger(tmp_path), time_attr="epoch", max_t=4,
                              grace_period=1, reduction_factor=2)  # fmt: skip
    scheduler.set_search_properties("val_ppl", "min")
    fresh = SimpleNamespace(trial_id="new", config={}, status="PENDING")
    scheduler.on_trial_add(None, fresh)
    # A new ASHA, never restored, knows nothing of them: the first result continues.
    assert scheduler.on_trial_result(None, fresh, {"epoch": 1, "val_ppl": 130.0}) == "CONTINUE"

    restored = pickle.loads(pickle.dumps(scheduler))  # as Tuner.restore unpickles it
    restored._brackets[0]._rungs = [(m, {}) for m, _ in restored._brackets[0]._rungs]
    for trial_id, status in (("a", "TERMINATED"), ("b", "TERMINATED"), ("c", "ERROR"),
                             ("new", "PENDING")):  # restored: "new" will report again
        restored.on_trial_add(None, SimpleNamespace(trial_id=trial_id, status=status))
    late = SimpleNamespace(trial_id="late", config={}, status="PENDING")
    restored.on_trial_add(None, late)
    decision = restored.on_trial_result(None, late, {"epoch": 1, "val_ppl": 130.0})
    assert decision == TrialScheduler.STOP  # worse than the median of 100, 110, 120
    rungs = dict(private_api.asha_rungs(restored))
    assert rungs[1] == {"a": -100.0, "b": -110.0, "c": -120.0, "late": -130.0}
    assert rungs[2] == {"a": -90.0, "b": -105.0}
    assert restored.refill_rungs() == 0  # once only: every value is there already


def test_a_restored_hyperband_keeps_each_trial_in_its_bracket_and_refills_each_bracket(
    tmp_path,
):
    """Hyperband puts each trial in a random bracket; restored, it puts them back where
    they were (noted on disk) and refills every bracket with its own trials' values."""
    scheduler = RecordingASHA(ledger=StopLedger(tmp_path), time_attr="epoch", max_t=9,
                              grace_period=1, reduction_factor=3, brackets=2)  # fmt: skip
    scheduler.set_search_properties("val_ppl", "min")
    np.random.seed(12)  # Ray draws each trial's bracket from numpy's global generator
    ids = [f"t{i}" for i in range(12)]
    for trial_id in ids:
        scheduler.on_trial_add(None, SimpleNamespace(trial_id=trial_id, status="PENDING"))
    placed = {t: private_api.trial_bracket(scheduler, t) for t in ids}
    assert set(placed.values()) == {0, 1}  # 12 trials: both brackets used
    for i, trial_id in enumerate(ids):
        write_results(tmp_path, trial_id, [(1, 200.0 + i), (3, 150.0 + i), (9, 100.0 + i)])

    restored = pickle.loads(pickle.dumps(scheduler))
    for bracket in restored._brackets:
        bracket._rungs = [(m, {}) for m, _ in bracket._rungs]
    restored._trial_info = {}
    for trial_id in ids:  # "t11" was unfinished: it reports again
        status = "PENDING" if trial_id == "t11" else "TERMINATED"
        restored.on_trial_add(None, SimpleNamespace(trial_id=trial_id, status=status))
    assert {t: private_api.trial_bracket(restored, t) for t in ids} == placed
    new = SimpleNamespace(trial_id="new", config={}, status="PENDING")
    restored.on_trial_add(None, new)
    restored.on_trial_result(None, new, {"epoch": 1, "val_ppl": 500.0})
    for index in (0, 1):
        for milestone, recorded in private_api.asha_rungs(restored, index):
            earlier = {t for t in recorded if t != "new"}
            assert earlier == {t for t in ids[:-1] if placed[t] == index}, (index, milestone)
            value = {1: 200.0, 3: 150.0, 9: 100.0}[milestone]
            assert all(recorded[t] == -(value + ids.index(t)) for t in earlier)


def test_a_restored_mo_asha_judges_new_trials_against_the_earlier_trials_points(tmp_path):
    def results(trial_id, rows):  # (epoch, val_ppl, speed): speed is maximised
        (tmp_path / f"train_trial_{trial_id}_1").mkdir()
        lines = [json.dumps({"trial_id": trial_id, "epoch": e, "val_ppl": v, "speed": s})
                 for e, v, s in rows]  # fmt: skip
        (tmp_path / f"train_trial_{trial_id}_1" / "result.json").write_text("\n".join(lines))

    results("a", [(1, 100.0, 50.0), (3, 90.0, 50.0)])
    results("b", [(1, 110.0, 60.0)])
    results("c", [(1, 120.0, 70.0)])
    scheduler = MultiObjectiveASHA(
        ledger=StopLedger(tmp_path), time_attr="epoch", max_t=9, grace_period=1,
        reduction_factor=3, objectives=["val_ppl", "speed"], modes=["min", "max"],
        rungs=[1, 3])  # fmt: skip
    scheduler.set_search_properties("val_ppl", "min")
    restored = pickle.loads(pickle.dumps(scheduler))
    for trial_id in "abc":
        restored.on_trial_add(None, SimpleNamespace(trial_id=trial_id, status="TERMINATED"))
    late = SimpleNamespace(trial_id="late", config={}, status="PENDING")
    restored.on_trial_add(None, late)
    # Dominated by a, b and c (slower and worse): with their points it is stopped.
    decision = restored.on_trial_result(None, late, {"epoch": 1, "val_ppl": 130, "speed": 40})
    assert decision == TrialScheduler.STOP
    assert restored.recorded[1]["a"] == (100.0, -50.0) and set(restored.recorded[1]) == {
        "a", "b", "c", "late"}
    assert restored.recorded[3] == {"a": (90.0, -50.0)}
    assert restored.refill_rungs() == 0


def test_what_cannot_be_extended_is_refused_naming_why(tmp_path):
    grid = SearchSpace.from_raw({"searcher": {"type": "grid"},
                                 "parameters": {"lr": {"grid": [1, 2]}}}, "g.yaml")  # fmt: skip
    with pytest.raises(ConfigError, match="--extend: .*a grid's cells"):
        check_extendable(grid, str(tmp_path))
    optuna_space = SearchSpace.from_raw({"parameters": {"lr": {"loguniform": [1, 2]}}}, "o.yaml")
    with pytest.raises(ConfigError, match="--extend works on experiments in a local folder"):
        check_extendable(optuna_space, "s3://bucket/runs/x")
    (tmp_path / CONFIRM_FILE).write_text("{}")
    with pytest.raises(ConfigError, match="confirmed its finalists"):
        check_extendable(optuna_space, str(tmp_path))


@pytest.mark.parametrize("flags, expected", [
    (["--extend", "0", "--name", "x"], "is not a number of trials to add"),
    (["--extend", "two", "--name", "x"], "is not a number of trials to add"),
    (["--extend", "2"], "--extend needs --name"),
    (["--extend", "2", "--name", "nowhere"], "--extend: no experiment with a saved space"),
    (["--extend", "2", "--name", "x", "--replay", "curves.csv"], "--replay rehearses"),
    (["--extend", "2", "--name", "x", "--warm-start", "old"], "--warm-start seeds a new"),
])  # fmt: skip
def test_bad_extend_flags_exit_2_naming_the_flag(tmp_path, flags, expected):
    done = run_cli("search", *flags, "--storage", tmp_path / "runs", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert expected in done.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_a_finished_search_extended_by_two_holds_four_trials_everywhere(tmp_path):
    (tmp_path / "grown.yaml").write_text(SPACE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--storage", tmp_path / "runs", "--tracking-uri", uri]
    first = run_cli("search", "--space", tmp_path / "grown.yaml", *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = tmp_path / "runs" / "grown"
    before = json.loads((folder / "summary.json").read_text())
    assert len(before["trials"]) == 2 and (folder / "finished.json").is_file()

    done = run_cli("search", "--extend", "2", "--name", "grown", *common[:2], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout + done.stderr
    assert "extending grown by 2 trial(s), to 4 in all" in said
    assert "rung value(s) of the earlier trials restored" in said  # 2 trials x rungs 1, 2
    assert "4/4 finished" in said and "cut by the time budget" not in said
    best = json.loads((folder / "summary.json").read_text())["best_trial"]
    assert f"best val_ppl {best['best_val_ppl']:.2f} ({best['trial_id']})" in said
    summary = json.loads((folder / "summary.json").read_text())
    assert len(summary["trials"]) == 4 and (folder / "finished.json").is_file()
    old_ids = {t["trial_id"] for t in before["trials"]}
    assert old_ids < {t["trial_id"] for t in summary["trials"]}

    # Ray: one experiment of four finished trials.
    analysis = ExperimentAnalysis(str(folder))
    assert len(analysis.trials) == 4
    assert all(trial.status == "TERMINATED" for trial in analysis.trials)
    # Optuna: the same study, four finished trials, the new ones asked after the old.
    study = optuna.load_study(study_name=STUDY_NAME, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / STUDY_FILE))))  # fmt: skip
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL
               for t in study.trials)  # fmt: skip
    assert len({t.params["lr"] for t in study.trials}) == 4  # no configuration twice
    # MLflow: one search run, four trial runs under it, none left RUNNING.
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("grown")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("tune_lm.kind") == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]  # fmt: skip
    assert len(children) == 4 and not [r for r in runs if r.info.status == "RUNNING"]
    # Test is scored once per chosen weights: an earlier score is kept, not redone; the
    # model is registered again only when the winner changed.
    kept = {t["trial_id"]: t["test_ppl"] for t in before["trials"] if t.get("test_ppl")}
    now = {t["trial_id"]: t.get("test_ppl") for t in summary["trials"]}
    assert all(now[trial_id] == score for trial_id, score in kept.items())
    versions = client.search_model_versions("name='tune_lm-grown'")
    changed = summary["best_trial"]["trial_id"] != before["best_trial"]["trial_id"]
    assert len(versions) == 1 + changed
    extensions = json.loads((folder / "extensions.json").read_text())
    assert [(e["added"], e["total"]) for e in extensions] == [(2, 4)]
    assert [(e["added"], e["total"]) for e in summary["extensions"]] == [(2, 4)]
    # A finished extended search is finished: --resume changes nothing.
    again = run_cli("search", "--resume", "--name", "grown", *common[:2], cwd=tmp_path)
    assert again.returncode == 0 and "nothing to resume" in again.stdout + again.stderr

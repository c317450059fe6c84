"""Warm start (issue 17): a new search seeded with an earlier one's results: its best
configurations queued first, its trials given to Optuna as priors, the rest listed."""

import json
import math

import optuna
import pytest
from cli_run import run_cli

from tune_lm.lm.errors import ConfigError
from tune_lm.tuning.layout import STUDY_FILE, STUDY_NAME
from tune_lm.tuning.space import SearchSpace
from tune_lm.tuning.warm_start import plan_warm_start, with_queued

OLD_SPACE = {"name": "old", "fixed": {"epochs": 3, "nlayers": 1, "dropout": 0.0},
             "parameters": {"model": {"choice": ["LSTM", "GRU"]}, "lr": {"loguniform": [1, 40]},
                            "bptt": {"int": [10, 50]}}}  # fmt: skip
OLD_TRIALS = [
    {"trial_id": "a", "model": "LSTM", "lr": 20.0, "bptt": 35, "best_val_ppl": 120.0},
    {"trial_id": "b", "model": "GRU", "lr": 5.0, "bptt": 20, "best_val_ppl": 150.0},
    {"trial_id": "c", "model": "LSTM", "lr": 35.0, "bptt": 40, "best_val_ppl": 110.0},
    {"trial_id": "d", "model": "GRU", "lr": 2.0, "bptt": 12, "best_val_ppl": math.inf},
    {"trial_id": "e", "model": "LSTM", "lr": 10.0, "bptt": 50, "best_val_ppl": 130.0},
    {"trial_id": "f", "model": "LSTM", "lr": 8.0, "bptt": 45, "best_val_ppl": 140.0},
]


def old_search(tmp_path, trials=OLD_TRIALS):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps(
        {"space": OLD_SPACE, "trials": trials}).replace("Infinity", "1e999"))  # fmt: skip
    return str(folder)


def new_space(**parameters):
    return SearchSpace.from_raw({"name": "new", "fixed": {"epochs": 3, "nlayers": 1},
                                 "parameters": parameters}, "new.yaml")  # fmt: skip


def test_what_transfers_is_queued_best_first_and_the_rest_is_listed_with_why(tmp_path):
    space = new_space(model={"choice": ["LSTM", "GRU"]}, lr={"loguniform": [1, 30]},
                      bptt={"int": [10, 45]}, dropout={"uniform": [0.0, 0.5]})  # fmt: skip
    start = plan_warm_start(old_search(tmp_path), space)
    # c: lr 35 is outside [1, 30]; d: diverged; e: bptt 50 outside [10, 45]; dropout was
    # fixed at 0.0 in the old search, which the new range holds.
    assert [p["trial_id"] for p in start.priors] == ["a", "b", "f"]
    assert [q["lr"] for q in start.queued] == [20.0, 8.0, 5.0]  # best first: a, f, b
    assert all(q["dropout"] == 0.0 for q in start.queued)
    skipped = " | ".join(start.skipped)
    assert "c: lr: 35 is outside [1, 30]" in skipped and "e: bptt: 50" in skipped
    assert "d: no finite" in skipped
    warmed = with_queued(space, start)
    assert warmed.baselines == start.queued


def test_a_parameter_the_old_search_varied_and_the_new_fixes_must_agree(tmp_path):
    space = SearchSpace.from_raw({"fixed": {"epochs": 3, "bptt": 35, "dropout": 0.0},
                                  "parameters": {"lr": {"loguniform": [1, 40]},
                                                 "model": {"choice": ["LSTM", "GRU"]}}},
                                 "new.yaml")  # fmt: skip
    start = plan_warm_start(old_search(tmp_path), space)
    assert [p["trial_id"] for p in start.priors] == ["a"]  # the only one with bptt 35
    assert any("b: it searched bptt = 20" in line for line in start.skipped)


def test_a_warm_start_that_cannot_work_is_refused(tmp_path):
    space = new_space(lr={"loguniform": [1, 30]})
    with pytest.raises(ConfigError, match="--warm-start .* no summary.json"):
        plan_warm_start(str(tmp_path / "nowhere"), space)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "summary.json").write_text('{"space": {"param')
    with pytest.raises(ConfigError, match="not a tune_lm search summary"):
        plan_warm_start(str(tmp_path / "cut"), space)
    grid = SearchSpace.from_raw({"searcher": {"type": "grid"},
                                 "parameters": {"lr": {"grid": [1, 2]}}}, "g.yaml")  # fmt: skip
    with pytest.raises(ConfigError, match="a grid"):
        plan_warm_start(old_search(tmp_path), grid)


def test_warm_start_with_resume_is_refused_with_exit_2(tmp_path):
    done = run_cli("search", "--resume", "--name", "x", "--storage", tmp_path / "runs",
                   "--warm-start", tmp_path)  # fmt: skip
    assert done.returncode == 2 and "--warm-start seeds a new search" in done.stderr


SPACE = """
name: {name}
data: synthetic
seed: {seed}
scheduler: {{type: fifo}}
searcher: {{type: optuna, sampler: tpe, n_startup_trials: 2}}
budget: {{num_samples: 3, max_concurrent: 2}}
resources: {{cpus_per_trial: 1}}
fixed: {{epochs: 2, nlayers: 1, emsize: 16, nhid: 16, batch_size: 8, bptt: 10, dropout: 0.0,
        max_tokens_per_epoch: 6000}}
parameters:
  lr: {{loguniform: [1.0, {high}]}}
"""


def search(tmp_path, name, *extra, high=20.0, seed=1):
    (tmp_path / f"{name}.yaml").write_text(SPACE.format(name=name, seed=seed, high=high))
    done = run_cli("search", "--space", tmp_path / f"{name}.yaml", "--storage",
                   tmp_path / "runs", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                   *extra, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done, tmp_path / "runs" / name


@pytest.mark.slow
def test_a_warm_started_search_runs_the_old_best_first_and_its_sampler_knows_the_old_trials(
        tmp_path):  # fmt: skip
    _, old = search(tmp_path, "old")
    trials = json.loads((old / "summary.json").read_text())["trials"]
    lrs = sorted(t["lr"] for t in trials)
    high = (lrs[-1] + lrs[-2]) / 2  # the new range leaves the old largest lr out
    done, new = search(tmp_path, "new", "--warm-start", old, high=high, seed=2)
    assert "warm start from" in done.stdout + done.stderr
    summary = json.loads((new / "summary.json").read_text())
    warm = summary["warm_start"]
    kept = sorted((t for t in trials if t["lr"] < high), key=lambda t: t["best_val_ppl"])
    assert warm["priors"] == 2 and len(warm["not_transferred"]) == 1
    assert "lr" in warm["not_transferred"][0]
    assert [q["lr"] for q in warm["queued"]] == pytest.approx([t["lr"] for t in kept])
    study = optuna.load_study(study_name=STUDY_NAME, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(new / STUDY_FILE))))  # fmt: skip
    ordered = sorted(study.trials, key=lambda t: t.number)
    priors = [t for t in ordered if "warm_start_from" in t.user_attrs]
    assert sorted(t.value for t in priors) == pytest.approx([t["best_val_ppl"] for t in kept])
    own = [t for t in ordered if "warm_start_from" not in t.user_attrs]
    assert len(own) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in own)
    # The new search's first two trials are the old best configurations, best first (queued
    # before the priors were added); the sampler proposed the third knowing the priors.
    assert [t.params["lr"] for t in own[:2]] == pytest.approx([t["lr"] for t in kept])
    assert max(t.number for t in priors) < own[2].number
    assert len(summary["trials"]) == 3
    # An --extend (or --resume) does not warm-start again, and keeps the record of it.
    extended = run_cli("search", "--extend", "1", "--name", "new", "--storage",
                       tmp_path / "runs", timeout=600)  # fmt: skip
    assert extended.returncode == 0, extended.stderr[-3000:]
    summary = json.loads((new / "summary.json").read_text())
    assert len(summary["trials"]) == 4 and summary["warm_start"] == warm
    # A rehearsal of the warm-started space on the old curves keeps the record too.
    replayed = run_cli("search", "--space", tmp_path / "new.yaml", "--warm-start", old,
                       "--replay", old, "--storage", tmp_path / "runs", timeout=600)  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    rehearsal = json.loads((tmp_path / "runs" / "new-replay" / "summary.json").read_text())
    assert rehearsal["warm_start"] == warm

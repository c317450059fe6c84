"""Replayed searches: recorded curves read and matched (nearest configuration in the
normalised space), and a real Ray Tune search replaying them (issue 16)."""

import csv
import json
import math

import pytest

from tune_lm.lm.errors import ConfigError
from tune_lm.tuning.replay import load_curves
from tune_lm.tuning.searchers import make_scheduler
from tune_lm.tuning.space import SearchSpace

COLUMNS = ["config_id", "model", "emsize", "lr", "epoch", "val_ppl", "epoch_time_s",
           "eval_time_s"]  # fmt: skip
# Four recorded trials of 9 epochs; trial 3 diverges at epoch 2.
POOL = {
    0: ("LSTM", 32, 1.0, [900 - 20 * e for e in range(9)]),
    1: ("LSTM", 256, 20.0, [600 - 30 * e for e in range(9)]),
    2: ("GRU", 64, 5.0, [700 - 10 * e for e in range(9)]),
    3: ("GRU", 256, 40.0, [800, math.inf]),
}


def write_pool(path, pool=POOL, seconds=None):
    """The pool as a recording; ``seconds``: each trial's training seconds per epoch
    (default 0.5), validation 0.1 s."""
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(COLUMNS)
        for config_id, (model, emsize, lr, curve) in pool.items():
            for epoch, value in enumerate(curve, start=1):
                out.writerow([config_id, model, emsize, lr, epoch, value,
                              (seconds or {}).get(config_id, 0.5), 0.1])  # fmt: skip
    return path


def space(**overrides):
    raw = {"name": "replayed", "seed": 3, "fixed": {"epochs": 9, "nlayers": 1},
           "budget": {"num_samples": 12, "max_concurrent": 2},
           "resources": {"cpus_per_trial": 0.5},
           "parameters": {"model": {"choice": ["LSTM", "GRU"]}, "emsize": {"logint": [32, 256]},
                          "lr": {"loguniform": [1, 40]}}}  # fmt: skip
    raw.update(overrides)
    return SearchSpace.from_raw(raw, "test")


def test_a_table_is_read_into_curves_with_their_seconds(tmp_path):
    curves = load_curves(write_pool(tmp_path / "pool.csv"))
    assert curves.names == ["model", "emsize", "lr"]
    assert curves.max_epochs == 9
    first = curves.trials[0]
    assert first.params == {"model": "LSTM", "emsize": 32, "lr": 1.0}
    assert first.val_ppl[:2] == (900.0, 880.0) and first.seconds[0] == pytest.approx(0.6)
    assert curves.trials[3].val_ppl == (800.0, math.inf)


def test_the_nearest_recorded_trial_is_found_on_the_spaces_scales(tmp_path):
    curves = load_curves(write_pool(tmp_path / "pool.csv"))
    searched = space()
    near = lambda **c: curves.nearest(c, searched).trial_id  # noqa: E731
    assert near(model="LSTM", emsize=32, lr=1.0) == "0"  # exact
    assert near(model="LSTM", emsize=200, lr=15.0) == "1"
    # A different cell costs 1, as much as a parameter's whole range: the LSTM at
    # emsize 32 / lr 1 stays nearer for (LSTM, 64, 5) than the GRU with those values.
    assert near(model="LSTM", emsize=64, lr=5.0) == "0"
    assert near(model="GRU", emsize=64, lr=5.0) == "2"
    assert near(model="GRU", emsize=180, lr=40.0) == "3"


@pytest.mark.parametrize(
    "text, says",
    [
        ("", "no rows"),
        ("config_id,model,epoch,val_ppl\n0,LSTM,1,500\n", "epoch_time_s"),
        ("model,epoch,val_ppl,epoch_time_s\nLSTM,1,500,1\n", "config_id"),
        ("config_id,epoch,val_ppl,epoch_time_s\n0,1,500,1\n", "no parameter columns"),
        ("config_id,model,epoch,val_ppl,epoch_time_s\n0,LSTM,1,abc,1\n", "row 2"),
        ("config_id,model,epoch,val_ppl,epoch_time_s\n0,LSTM,1,500,1\n0,LSTM,3,400,1\n",
         "without gaps"),
        ("config_id,model,epoch,val_ppl,epoch_time_s\n0,LSTM,0,500,1\n", "1 or more"),
        ("config_id,lr,epoch,val_ppl,epoch_time_s\n0,2,1,-60,1\n", "perplexity, 1 or more"),
        ("config_id,lr,epoch,val_ppl,epoch_time_s\n0,2,1,0,1\n", "perplexity, 1 or more"),
        ("config_id,lr,epoch,val_ppl,epoch_time_s\n0,2,1,500,1\n1,abc,1,400,1\n",
         "row 3: column lr holds numbers, but here 'abc'"),
        ("config_id,lr,epoch,val_ppl,epoch_time_s\n0,2,1,500,1\n0,3,2,400,1\n",
         "trial 0's lr changes between its rows (2, 3)"),
    ],
)  # fmt: skip
def test_a_bad_recording_is_refused_naming_the_flag_the_file_and_the_fix(tmp_path, text, says):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match="--replay") as refused:
        load_curves(path)
    assert says in str(refused.value) and str(path) in str(refused.value)


def test_a_missing_recording_and_an_unanswerable_space_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_curves(tmp_path / "absent.csv")
    curves = load_curves(write_pool(tmp_path / "pool.csv"))
    with pytest.raises(ConfigError, match="end at epoch 9"):
        curves.check_fits(space(fixed={"epochs": 20}))
    with pytest.raises(ConfigError, match="no parameter in common"):
        curves.check_fits(space(parameters={"dropout": {"uniform": [0, 0.5]}}))
    pbt = SearchSpace.from_raw({"name": "pbt", "fixed": {"epochs": 9},
                                "scheduler": {"type": "pbt"},
                                "parameters": {"lr": {"loguniform": [1, 40]}}}, "test")  # fmt: skip
    with pytest.raises(ConfigError, match="cannot be replayed"):
        curves.check_fits(pbt)


def test_an_experiments_trial_folders_are_curves_too(tmp_path):
    """Tune's result.json per trial folder: whole epochs kept, mid-epoch ones skipped."""
    for trial, (lr, values) in {"train_trial_a_1": (5.0, [500, 400]),
                                "train_trial_b_2": (20.0, [450, 300, 250])}.items():  # fmt: skip
        folder = tmp_path / "exp" / trial
        folder.mkdir(parents=True)
        lines = []
        for epoch, value in enumerate(values, start=1):
            lines.append({"epoch": epoch - 0.5, "val_ppl": value + 5, "config": {"lr": lr}})
            lines.append({"epoch": float(epoch), "val_ppl": value, "time_this_iter_s": 2.0,
                          "config": {"lr": lr}})  # fmt: skip
        (folder / "result.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    curves = load_curves(tmp_path / "exp")
    assert sorted(t.val_ppl for t in curves.trials) == [(450, 300, 250), (500, 400)]
    assert curves.nearest({"lr": 18.0}).val_ppl == (450, 300, 250)
    assert curves.trials[0].seconds == (2.0, 2.0)


def test_hyperband_runs_asha_in_several_brackets_and_brackets_need_it():
    hyperband = space(scheduler={"type": "hyperband", "brackets": 2})
    assert len(make_scheduler(hyperband)._brackets) == 2
    with pytest.raises(ConfigError, match="only 2 bracket.*below the 9 epochs"):
        space(scheduler={"type": "hyperband", "brackets": 3})  # the third: a rung at 9
    assert len(make_scheduler(space())._brackets) == 1
    with pytest.raises(ConfigError, match="brackets"):
        space(scheduler={"type": "asha", "brackets": 2})


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_replayed_grid_reports_the_recorded_curves_exactly(tmp_path, local_ray):
    from tune_lm.tuning.rehearsal import rehearse

    curves = load_curves(write_pool(tmp_path / "pool.csv"))
    grid = space(searcher={"type": "grid"}, scheduler={"type": "fifo"},
                 parameters={"model": {"grid": ["LSTM", "GRU"]},
                             "emsize": {"grid": [256]}, "lr": {"grid": [20.0, 40.0]}},
                 budget={"max_concurrent": 2})  # fmt: skip
    run = rehearse(grid, curves, str(tmp_path / "grid"))
    curves_seen = {}
    for event in run.events:
        curves_seen.setdefault((event.trial_id, event.replayed_from), []).append(event.val_ppl)
    # (LSTM, 256, 20) and (LSTM, 256, 40) replay trial 1; (GRU, 256, 40) replays trial 3,
    # which diverges at epoch 2 and ends there; (GRU, 256, 20) is nearest trial 3 too.
    assert sorted(curves_seen.values()) == sorted([[float(v) for v in POOL[1][3]]] * 2
                                                  + [[800.0, math.inf]] * 2)  # fmt: skip
    assert sorted(source for _, source in curves_seen) == ["1", "1", "3", "3"]
    assert run.trial_epochs == 9 + 9 + 2 + 2
    assert run.trial_epochs_to_reach(min(POOL[1][3])) is not None


def test_replayed_results_arrive_in_recorded_time_order_whatever_ray_takes(tmp_path, local_ray):
    """The virtual clock: three recorded trials of 3.1, 5.1 and 2.1 s per epoch on two
    slots; the third starts when the first to finish frees its slot. However long Ray
    takes to start trials and pass results, the results arrive in that simulated order."""
    from tune_lm.tuning.rehearsal import rehearse

    pool = {0: ("LSTM", 32, 1.0, [900 - 20 * e for e in range(9)]),
            1: ("LSTM", 64, 1.0, [800 - 20 * e for e in range(9)]),
            2: ("LSTM", 256, 1.0, [700 - 20 * e for e in range(9)])}  # fmt: skip
    curves = load_curves(write_pool(tmp_path / "pool.csv", pool, {0: 3.0, 1: 5.0, 2: 2.0}))
    grid = space(searcher={"type": "grid"}, scheduler={"type": "fifo"},
                 parameters={"model": {"grid": ["LSTM"]}, "emsize": {"grid": [32, 64, 256]},
                             "lr": {"grid": [1.0]}},
                 budget={"max_concurrent": 2})  # fmt: skip
    run = rehearse(grid, curves, str(tmp_path / "grid"), quick=True)
    assert run.trial_epochs == 27
    order = list(dict.fromkeys(e.trial_id for e in run.events))  # trials by first result
    per_epoch = {e.trial_id: next(t for t in curves.trials if t.trial_id == e.replayed_from)
                 .seconds[0] for e in run.events}  # fmt: skip
    finish = {t: 9 * per_epoch[t] for t in order[:2]}
    start = {order[0]: 0.0, order[1]: 0.0, order[2]: min(finish.values())}
    due = [start[e.trial_id] + e.epoch * per_epoch[e.trial_id] for e in run.events]
    assert sorted(per_epoch.values()) == pytest.approx([2.1, 3.1, 5.1])
    assert due == sorted(due), list(zip(due, (e.trial_id for e in run.events), strict=True))


@pytest.mark.slow
def test_a_replayed_asha_search_stops_trials_and_keeps_to_its_budget(tmp_path, local_ray):
    from tune_lm.tuning.rehearsal import rehearse

    curves = load_curves(write_pool(tmp_path / "pool.csv"))
    searched = space(scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 3},
                     budget={"num_samples": 1000, "max_concurrent": 2})  # fmt: skip
    run = rehearse(searched, curves, str(tmp_path / "asha"),
                   budget_trial_epochs=40, quick=True)  # fmt: skip
    assert run.trial_epochs == 40
    epochs_per_trial = {}
    for event in run.events:
        epochs_per_trial[event.trial_id] = event.epoch
        recorded = next(t for t in curves.trials if t.trial_id == event.replayed_from)
        assert event.val_ppl == recorded.val_ppl[event.epoch - 1]
    assert min(epochs_per_trial.values()) < 9  # ASHA stopped some trial early
    assert run.best_within(40) == min(e.val_ppl for e in run.events)


SPACE_YAML = """
name: rehearsed
seed: 4
scheduler: {type: asha, grace_period: 1, reduction_factor: 3}
budget: {num_samples: 12, max_concurrent: 2}
resources: {cpus_per_trial: 0.5}
fixed: {epochs: 9, nlayers: 1}
parameters:
  model: {choice: [LSTM, GRU]}
  emsize: {logint: [32, 256]}
  lr: {loguniform: [1, 40]}
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, says",
    [
        (["--resume"], "--resume cannot go with it"),
        (["--smoke"], "--smoke cannot go with it"),
        (["--tracking-uri", "sqlite:///x.db"], "--tracking-uri cannot go with it"),
        (["--data", "ptb"], "--data cannot go with it"),
        (["--replay-speed", "0"], "--replay-speed must be a positive number"),
        (["--max-epochs", "20"], "end at epoch 9"),
        (["--storage", "s3://bucket/x"], "local folder"),
    ],
)  # fmt: skip
def test_replay_flags_that_cannot_work_are_refused_before_anything_starts(tmp_path, extra, says):
    from cli_run import run_cli

    (tmp_path / "space.yaml").write_text(SPACE_YAML)
    pool = write_pool(tmp_path / "pool.csv")
    done = run_cli("search", "--space", tmp_path / "space.yaml", "--replay", pool,
                   "--storage", tmp_path / "runs", *extra, cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert says in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.csv", "space.yaml"]


@pytest.mark.slow
def test_replay_speed_needs_replay(tmp_path):
    from cli_run import run_cli

    (tmp_path / "space.yaml").write_text(SPACE_YAML)
    done = run_cli("search", "--space", tmp_path / "space.yaml", "--replay-speed", "50",
                   cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "only with --replay" in done.stderr


@pytest.mark.slow
def test_a_replayed_search_from_the_command_line_summarises_and_logs_nothing(tmp_path):
    from cli_run import run_cli

    (tmp_path / "space.yaml").write_text(SPACE_YAML)
    pool = write_pool(tmp_path / "pool.csv")
    done = run_cli("search", "--space", tmp_path / "space.yaml", "--replay", pool,
                   "--storage", tmp_path / "runs", cwd=tmp_path, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replayed:" in done.stdout and "stopped early by ASHA" in done.stdout
    summary = json.loads((tmp_path / "runs" / "rehearsed-replay" / "summary.json").read_text())
    recorded = {round(float(v), 2) for *_, curve in POOL.values() for v in curve}
    assert len(summary["trials"]) == 12
    assert {round(r["best_val_ppl"], 2) for r in summary["trials"]} <= recorded  # replayed
    assert not (tmp_path / "mlflow.db").exists()  # nothing logged to MLflow


def test_a_trial_whose_nearest_curve_ends_early_is_not_blamed_on_the_time_budget(tmp_path):
    from cli_run import run_cli

    pool = write_pool(tmp_path / "pool.csv", {0: ("LSTM", 32, 1.0, [30.0, 20.0]),
                                              1: ("LSTM", 32, 10.0, [25.0])})  # fmt: skip
    (tmp_path / "space.yaml").write_text(
        "data: synthetic\nscheduler: {type: fifo}\nfixed: {epochs: 2, emsize: 32}\n"
        "budget: {num_samples: 2, max_concurrent: 1, time_budget: 600s}\n"
        "parameters:\n  model: {choice: [LSTM]}\n  lr: {loguniform: [5.0, 20.0]}\n")
    done = run_cli("search", "--space", tmp_path / "space.yaml", "--replay", pool,
                   "--storage", tmp_path / "runs", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "space-replay" / "summary.json").read_text())
    assert {r["status"] for r in summary["trials"]} == {
        "stopped at epoch 1, where its recorded curve ends"}, summary["trials"]
    assert "2 stopped where the recorded curve ends" in done.stdout, done.stdout[-2000:]


@pytest.mark.parametrize(
    "baselines, says",
    [
        ([{"model": "GRU", "emsize": 64, "lr": 50.0}], "lr: 50 is outside [1, 40]"),
        ([{"model": "GRU", "emsize": 64}], "no value for ['lr']"),
        ([{"model": "GRU", "emsize": 64, "lr": 5, "bptt": 3}], "names ['bptt']"),
        ([{"model": "RNN", "emsize": 64, "lr": 5}], "'RNN' is not one of"),
        ([{"model": "GRU", "emsize": 64.5, "lr": 5}], "not a whole number"),
    ],
)  # fmt: skip
def test_a_baseline_the_space_cannot_take_is_refused(baselines, says):
    with pytest.raises(ConfigError, match="baselines") as refused:
        space(baselines=baselines)
    assert says in str(refused.value)


@pytest.mark.slow
def test_baselines_are_evaluated_first(tmp_path, local_ray):
    """The known-good configurations run before anything the sampler proposes."""
    from tune_lm.tuning.rehearsal import rehearse

    curves = load_curves(write_pool(tmp_path / "pool.csv"))
    baselines = [{"model": "GRU", "emsize": 64, "lr": 5.0},
                 {"model": "LSTM", "emsize": 32, "lr": 1.0}]  # fmt: skip
    searched = space(baselines=baselines, scheduler={"type": "fifo"},
                     budget={"num_samples": 4, "max_concurrent": 1})  # fmt: skip
    run = rehearse(searched, curves, str(tmp_path / "baselines"), quick=True)
    order = list(dict.fromkeys((e.trial_id, e.replayed_from) for e in run.events))
    assert [source for _, source in order[:2]] == ["2", "0"]
    assert len(order) == 4


@pytest.mark.parametrize("kind", ["asha", "hyperband"])
def test_asha_never_stops_a_baseline_early_but_counts_its_values(tmp_path, kind):
    """The real ASHA scheduler class: a baseline as bad as a trial it stops goes on; its
    value raises the bar for the trials after it."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from tune_lm.tuning.searchers import StopLedger

    baseline = {"model": "LSTM", "emsize": 32, "lr": 1.0}
    brackets = {"brackets": 2} if kind == "hyperband" else {}
    searched = space(baselines=[baseline], scheduler={"type": kind, "grace_period": 1,
                                                      "reduction_factor": 3, **brackets})
    ledger = StopLedger(tmp_path)
    scheduler = make_scheduler(searched, ledger)
    scheduler.set_search_properties("val_ppl", "min")
    trials = {name: SimpleNamespace(trial_id=name, config=config) for name, config in [
        ("good", {"model": "GRU", "emsize": 64, "lr": 5.0}),
        ("base", dict(baseline)), ("like_base", {**baseline, "lr": 1.5}),
        ("after", {"model": "GRU", "emsize": 100, "lr": 3.0})]}  # fmt: skip
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)
    # Hyperband draws each trial's bracket at random: all in the first (rungs 1, 3).
    for name in trials:
        scheduler._trial_info[name] = scheduler._brackets[0]  # noqa: SLF001 (Ray's own)

    def result(name, ppl, epoch=1.0):
        return scheduler.on_trial_result(None, trials[name], {"epoch": epoch, "val_ppl": ppl})

    assert result("good", 300) == TrialScheduler.CONTINUE
    assert result("like_base", 900) == TrialScheduler.STOP  # worse than the best third
    assert result("base", 900) == TrialScheduler.CONTINUE  # as bad, but a baseline
    assert result("base", 850, epoch=3.0) == TrialScheduler.CONTINUE
    assert result("after", 890) == TrialScheduler.STOP  # the baseline's 900 counted
    assert set(ledger.stopped()) == {"like_base", "after"}


@pytest.mark.slow
def test_a_slow_starting_baseline_runs_its_whole_budget_in_a_real_search(tmp_path, local_ray):
    """Through the real Tuner with ASHA: the second baseline starts worse than the first
    and would be stopped at epoch 1; it runs all its epochs, and no stop is recorded."""
    from tune_lm.tuning.rehearsal import rehearse

    curves = load_curves(write_pool(tmp_path / "pool.csv"))
    baselines = [{"model": "LSTM", "emsize": 256, "lr": 20.0},  # 600 at epoch 1
                 {"model": "LSTM", "emsize": 32, "lr": 1.0}]  # 900 at epoch 1  # fmt: skip
    searched = space(baselines=baselines, budget={"num_samples": 2, "max_concurrent": 1},
                     scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 3})
    run = rehearse(searched, curves, str(tmp_path / "slow"), quick=True)
    epochs = {}
    for event in run.events:
        epochs.setdefault(event.replayed_from, []).append(event.epoch)
    assert epochs == {"1": list(range(1, 10)), "0": list(range(1, 10))}


def test_a_replayed_trial_imports_no_torch():
    """A replayed search starts a Ray worker per trial actor, often: the replay trainable
    and the search space must not pull in torch (seconds of CPU per worker)."""
    import subprocess
    import sys

    check = "import sys, tune_lm.tuning.replay; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr

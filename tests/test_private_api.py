"""Canaries for the private Ray and Optuna surfaces tune_lm uses (all of them in
tune_lm/tuning/private_api.py): each fails loudly when an upgrade moves or changes one."""

import importlib.util
import inspect
import json
import os
from pathlib import Path

import pytest

from tune_lm.tuning import private_api
from tune_lm.tuning.private_api import find_cluster_address


def test_auto_finds_the_cluster_recorded_by_the_last_ray_start(tmp_path, monkeypatch):
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:6399")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert find_cluster_address() == "127.0.0.1:6399"


def test_auto_without_any_record_raises_connection_error(tmp_path, monkeypatch):
    """Even while other Ray processes run on the machine: auto is never a guess."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with pytest.raises(ConnectionError):
        find_cluster_address()


def test_ray_address_wins_over_the_recorded_cluster(tmp_path, monkeypatch):
    (Path(tmp_path) / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:6399")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:7000")
    assert find_cluster_address() == "127.0.0.1:7000"


@pytest.mark.slow
def test_tune_names_its_state_file_as_we_look_for_it(asha_search):
    """A finished real search has Tune's experiment_state-*.json; an empty folder has not."""
    from tune_lm.tuning.private_api import is_trial_folder, saved_trial_folders, tune_state_saved

    done, folder = asha_search
    assert done.returncode == 0, done.stderr[-2000:]
    assert tune_state_saved(folder)
    assert not tune_state_saved(folder / "nothing-here")
    # ... and in it each started trial's folder, by trial id (what a resume checks is there)
    saved = saved_trial_folders(folder)
    assert len(saved) == 8, saved
    assert all((folder / name).is_dir() and is_trial_folder(name, trial_id)
               for trial_id, name in saved.items())  # fmt: skip
    assert saved_trial_folders(folder / "nothing-here") == {}


@pytest.mark.slow
def test_tune_saves_the_trial_total_where_extend_raises_it(asha_search, tmp_path):
    """A finished search's saved search state holds (trials created, trials planned), and
    a raised total is what Tune's own loader then reads back."""
    import shutil

    from ray.tune.utils.util import _atomic_save, _load_newest_checkpoint

    from tune_lm.tuning.extend import reapply

    done, folder = asha_search
    assert done.returncode == 0, done.stderr[-2000:]
    assert private_api.trial_total(folder) == (8, 8)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    private_api.set_trial_total(copy, 11)
    state = _load_newest_checkpoint(str(copy), private_api.SEARCH_STATE_PATTERN)
    assert (state["counter"], state["total_samples"], state["finished"]) == (8, 11, False)
    # --extend noted its total, then was killed before Tune's state had it: --resume
    # applies it (extend.reapply), once.
    again = tmp_path / "again"
    shutil.copytree(folder, again)
    (again / "extensions.json").write_text(json.dumps([{"added": 3, "total": 11}]))
    reapply(str(again))
    reapply(str(again))
    assert private_api.trial_total(again) == (8, 11)
    assert private_api.trial_total(tmp_path / "nothing-here") is None
    # The ConcurrencyLimiter's live trials are saved too: one the time budget ended stays.
    newest = max(copy.glob(private_api.SEARCH_STATE_PATTERN))
    state = _load_newest_checkpoint(str(copy), private_api.SEARCH_STATE_PATTERN)
    ended = sorted(private_api.saved_trial_folders(copy))
    state["name:ConcurrencyLimiter"]["live_trials"] = {*ended[:2], "still-running"}
    _atomic_save(state=state, checkpoint_dir=str(copy), file_name=newest.name,
                 tmp_file_name=f"tmp-{newest.name}")  # fmt: skip
    assert private_api.forget_ended_trials(copy) == ended[:2]
    state = _load_newest_checkpoint(str(copy), private_api.SEARCH_STATE_PATTERN)
    assert state["name:ConcurrencyLimiter"]["live_trials"] == {"still-running"}


def test_tune_saves_its_time_budget_with_its_state_where_extend_restarts_it(tmp_path):
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.stopper import CombinedStopper, MaximumIterationStopper, TimeoutStopper
    from ray.tune.utils.serialization import TuneFunctionDecoder, TuneFunctionEncoder

    # The controller's _stopper is saved in its state and set back when it is restored.
    assert '"_stopper"' not in inspect.getsource(TuneController.__getstate__)
    assert 'setstate__(experiment_state["runner_data"])' in inspect.getsource(
        TuneController.resume)
    timeout = TimeoutStopper(40)
    timeout._budget = -3.0  # spent: a restored search would stop at once
    stopper = CombinedStopper(MaximumIterationStopper(5), timeout)
    state = {"trial_data": [], "runner_data": {"_stopper": stopper, "_iteration": 7}}
    newest, older = (tmp_path / f"experiment_state-2026-11-29_{h}-00-00.json" for h in ("10", "09"))
    older.write_text("{}")
    newest.write_text(json.dumps(state, cls=TuneFunctionEncoder))  # as Tune's save_to_dir
    private_api.restart_time_budget(tmp_path)
    restored = json.loads(newest.read_text(), cls=TuneFunctionDecoder, allow_cloudpickle=True)
    kept, budget = restored["runner_data"]["_stopper"]._stoppers
    assert budget._budget == 40 and not budget.stop_all() and kept._max_iter == 5
    assert restored["runner_data"]["_iteration"] == 7 and older.read_text() == "{}"


def test_asha_keeps_its_rungs_and_metric_sign_where_we_read_them():
    from ray.tune.schedulers import ASHAScheduler

    scheduler = ASHAScheduler(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=3)
    scheduler.set_search_properties("val_ppl", "min")
    assert [m for m, recorded in private_api.asha_rungs(scheduler)] == [9, 3, 1]
    assert all(recorded == {} for _, recorded in private_api.asha_rungs(scheduler))
    assert private_api.asha_metric_sign(scheduler) == -1


def test_hyperband_keeps_each_trials_bracket_where_we_read_and_set_it():
    from types import SimpleNamespace

    from ray.tune.schedulers import ASHAScheduler

    scheduler = ASHAScheduler(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=3,
                              brackets=3)  # fmt: skip
    scheduler.set_search_properties("val_ppl", "min")
    assert private_api.asha_bracket_count(scheduler) == 3
    assert [m for m, _ in private_api.asha_rungs(scheduler, 1)] == [9, 3]
    scheduler.on_trial_add(None, SimpleNamespace(trial_id="t"))
    assert private_api.trial_bracket(scheduler, "t") in (0, 1, 2)
    assert private_api.trial_bracket(scheduler, "other") is None
    private_api.put_in_bracket(scheduler, "t", 1)
    assert private_api.trial_bracket(scheduler, "t") == 1
    # Ray then judges the trial in that bracket, whose first rung is epoch 3.
    scheduler.on_trial_result(None, SimpleNamespace(trial_id="t"), {"epoch": 3, "val_ppl": 5})
    assert dict(private_api.asha_rungs(scheduler, 1))[3] == {"t": -5}


def _ray_source_files():
    root = Path(importlib.util.find_spec("ray").origin).parent
    return [p for sub in ("tune", "_private", "train") for p in (root / sub).rglob("*.py")]


@pytest.mark.parametrize("knob", [*private_api.TUNE_ENV_DEFAULTS, private_api.PLAIN_OUTPUT_ENV,
                                  private_api.SIGINT_OPT_OUT_ENV])  # fmt: skip
def test_ray_still_reads_each_environment_knob_we_set(knob):
    """A knob Ray no longer reads would be silently ignored: find it in Ray's source."""
    assert any(knob in path.read_text(errors="ignore") for path in _ray_source_files()), (
        f"Ray no longer mentions {knob}: see tune_lm/tuning/private_api.py"
    )


def test_tune_logs_its_restore_hint_and_handles_sigint_where_we_expect():
    """The logger whose "Tuner.restore(" hint the console filters, and Tune's own SIGINT
    handler (which fit_noting_interrupt relies on to stop trials gracefully)."""
    module = importlib.import_module(private_api.RESTORE_HINT_LOGGER)
    source = inspect.getsource(module)
    assert "Tuner.restore(" in source
    assert "logging.getLogger(__name__)" in source
    assert "signal.SIGINT" in source and private_api.SIGINT_OPT_OUT_ENV in source


def test_a_local_rays_processes_start_in_a_session_of_their_own():
    """Ray starts its local processes through ``services.ConsolePopen``, looked up when each
    starts: replaced within the block, they get a session (and process group) of their own,
    so that a signal to the driver's group does not reach them. Outside it, Ray's own."""
    from ray._private import services

    source = inspect.getsource(services.start_ray_process)
    assert "ConsolePopen(" in source and "preexec_fn" in source
    with private_api.local_ray_in_its_own_session():
        assert _session_of_a_started_process() != os.getsid(0)
    assert services.ConsolePopen.__name__ == "ConsolePopen"  # Ray's own, put back
    assert _session_of_a_started_process() == os.getsid(0)


def _session_of_a_started_process() -> int:
    from ray._private import services

    process = services.ConsolePopen(["sleep", "5"])
    try:
        return os.getsid(process.pid)
    finally:
        process.kill()
        process.wait()


def test_a_tuner_exposes_its_callbacks_through_its_internal_tuner():
    from ray import tune

    class Marker(tune.Callback):
        pass

    marker = Marker()
    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(callbacks=[marker]))
    assert marker in private_api.tuner_callbacks(tuner)
    assert private_api.tuner_callbacks(object()) == []


def test_optuna_search_keeps_its_study_and_trials_where_we_read_them():
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(space={"x": tune.uniform(0.0, 1.0)}, metric="m", mode="min")
    assert isinstance(private_api.optuna_study(searcher), optuna.Study)
    config = searcher.suggest("t1")
    assert 0.0 <= config["x"] <= 1.0
    assert isinstance(private_api.optuna_trials(searcher)["t1"], optuna.Trial)
    assert "t1" not in private_api.closed_trials(searcher)
    searcher.on_trial_complete("t1", {"m": 0.5})
    assert "t1" in private_api.closed_trials(searcher)
    assert private_api.optuna_study(searcher).trials[0].state == optuna.trial.TrialState.COMPLETE


@pytest.mark.slow
def test_tune_names_trial_folders_after_their_trial_ids(asha_search):
    """Each trial folder of a real search holds the results of the trial it is named for,
    and of no other."""
    done, folder = asha_search
    assert done.returncode == 0, done.stderr[-2000:]
    results = list(folder.glob("*/result.json"))
    assert results
    ids = set()
    for result in results:
        first = json.loads(result.read_text().splitlines()[0])
        ids.add(first["trial_id"])
        assert private_api.is_trial_folder(result.parent.name, first["trial_id"])
    for result in results:
        others = ids - {json.loads(result.read_text().splitlines()[0])["trial_id"]}
        assert not any(private_api.is_trial_folder(result.parent.name, i) for i in others)


RESTORE_RACE_SCRIPT = """
import json, shutil, sys, tempfile
from pathlib import Path
from ray import tune
from tune_lm.tuning import private_api

def counting(config):
    checkpoint = tune.get_checkpoint()
    start = 0
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = int(Path(folder, "epoch").read_text())
        Path(config["seen"]).write_text(Path(checkpoint.path).name)
    for epoch in range(start + 1, 4):
        if epoch == 3 and checkpoint is None:
            raise RuntimeError("stands for the killed driver")
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "epoch").write_text(str(epoch))
            tune.report({"epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(folder))

root, wired = Path(sys.argv[1]), sys.argv[2] == "wired"
trainable = private_api.restoring_from_surviving_checkpoints(counting) if wired else counting
tune.Tuner(trainable, param_space={"seen": str(root / "seen")},
           run_config=tune.RunConfig(name="race", storage_path=str(root))).fit()
trial = next(p for p in (root / "race").iterdir() if p.is_dir())
# The race: the snapshot names checkpoint_000001, the trial saved 000002 after it, and
# Tune's keep-the-last-k rule deleted 000001 before the next snapshot reached storage.
shutil.copytree(trial / "checkpoint_000001", trial / "checkpoint_000002")
shutil.rmtree(trial / "checkpoint_000001")
results = tune.Tuner.restore(str(root / "race"), trainable=trainable,
                             resume_errored=True).fit()
print(json.dumps({"errors": len(results.errors),
                  "epoch": results[0].metrics.get("epoch")}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("wired", [True, False])
def test_a_trial_whose_snapshot_checkpoint_was_deleted_resumes_from_the_next_one(
    tmp_path, wired
):
    """Tune restores from a missing checkpoint and fails the trial (the unwired run shows
    the race still exists); through the mixin it resumes from the next one it saved."""
    import subprocess
    import sys

    script = tmp_path / "race.py"
    script.write_text(RESTORE_RACE_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path), "wired" if wired else "-"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    if wired:
        assert outcome == {"errors": 0, "epoch": 3}, done.stderr[-3000:]
        assert (tmp_path / "seen").read_text() == "checkpoint_000002"
        assert "resumes from the next one it saved" in done.stderr
    else:  # Ray unchanged: the day this fails, the mixin may be unnecessary
        assert outcome["errors"] == 1 and not (tmp_path / "seen").exists()
        assert "does not exist on storage anymore" in done.stderr




RESULT_LINES_SCRIPT = """
import json, sys
from pathlib import Path
import ray
from ray import tune
from ray.train._internal.checkpoint_manager import _TrainingResult
from ray.train._internal.storage import StorageContext
from ray.tune.experiment import Trial
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from tune_lm.tuning.tuner import CSVLogger, JsonLogger

ray.init(num_cpus=1, include_dashboard=False)
tune.register_trainable("counting", lambda config: None)
root, epochs = Path(sys.argv[1]), {}
for logger in (JsonLogger(), JsonLoggerCallback(), CSVLogger(), CSVLoggerCallback()):
    name, kind = type(logger).__name__, "json" if isinstance(logger, JsonLoggerCallback) else "csv"
    trial = Trial("counting", config={}, storage=StorageContext(str(root / name), "exp"))
    trial.init_local_path()
    driver = Path(trial.local_path, "result.json" if kind == "json" else "progress.csv")
    stored = Path(trial.storage.trial_fs_path, driver.name)
    logger.log_trial_start(trial)
    for epoch in (1, 2, 3):
        logger.log_trial_result(epoch, trial, {"epoch": epoch})
    # The driver's last upload came after epoch 1 (with the csv header); the trial saved
    # a checkpoint at epoch 3 and died; it starts again and reports epoch 4.
    stored.parent.mkdir(parents=True)
    stored.write_text("".join(driver.read_text().splitlines(True)[:1 if kind == "json" else 2]))
    checkpoint = Path(trial.storage.trial_fs_path, "checkpoint_000002")
    checkpoint.mkdir()
    trial.run_metadata.checkpoint_manager.register_checkpoint(
        _TrainingResult(tune.Checkpoint(str(checkpoint)), {"epoch": 3}))
    logger.log_trial_end(trial, failed=True)
    logger.log_trial_start(trial)
    logger.log_trial_result(4, trial, {"epoch": 4})
    logger.log_trial_end(trial)
    read = (lambda text: [json.loads(line)["epoch"] for line in text.splitlines()]
            if kind == "json" else [int(line) for line in text.splitlines()[1:]])
    epochs[name] = read(driver.read_text())
    # A resumed driver has no copy of its own (a new staging folder): storage's is fetched.
    stored.write_text(driver.read_text())
    driver.unlink()
    logger.log_trial_start(trial)
    logger.log_trial_result(5, trial, {"epoch": 5})
    logger.log_trial_end(trial)
    epochs[name + " resumed"] = read(driver.read_text())
print(json.dumps(epochs))
"""


def test_a_restarted_trial_keeps_the_result_lines_its_driver_wrote(tmp_path):
    """Tune's real loggers and Trial, driven as Tune's controller drives them: a trial
    whose storage copy of result.json/progress.csv is older than its driver's (the last
    upload came before epochs 2 and 3) starts again from its checkpoint. Tune's own
    loggers (the canary) copy storage's lines over the driver's; tune_lm's keep them, and
    still fetch storage's copy for a resumed driver, which has none."""
    import subprocess
    import sys

    script = tmp_path / "lines.py"
    script.write_text(RESULT_LINES_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    epochs = json.loads(done.stdout.strip().splitlines()[-1])
    for kept in ("JsonLogger", "CSVLogger"):
        assert epochs[kept] == [1, 2, 3, 4], epochs
        assert epochs[kept + " resumed"] == [1, 2, 3, 4, 5], epochs
    # Ray unchanged: the day these fail, KeepsDriverResultLines may be unnecessary
    assert epochs["JsonLoggerCallback"] == epochs["CSVLoggerCallback"] == [1, 4], epochs


def test_a_trials_storage_folder_is_where_we_read_it():
    """private_api.local_trial_folder: Ray's session storage context (a developer API),
    with its filesystem and the trial's path on it."""
    import inspect

    from ray.train._internal import session, storage

    assert callable(session.get_storage)
    context = inspect.getsource(storage.StorageContext)
    assert "def trial_fs_path" in context and "self.storage_filesystem" in context


def test_tune_restores_root_json_files_and_uploads_through_the_syncer_we_wrap():
    """private_api.uploads_leaving_out: a restore copies every .json/.pkl of the root into
    the staging folder (so it would upload ours back), and uploads go through
    _FilesystemSyncer._sync_up_command(local_path, uri, exclude)."""
    import inspect

    from ray.train._internal.storage import _FilesystemSyncer
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    down = inspect.getsource(_ExperimentCheckpointManager.sync_down_experiment_state)
    assert 'endswith(".json")' in down
    assert list(inspect.signature(_FilesystemSyncer._sync_up_command).parameters) == [
        "self", "local_path", "uri", "exclude"]  # fmt: skip

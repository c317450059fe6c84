"""Every use of a private or undocumented Ray or Optuna surface, kept in one place (with
:mod:`tune_lm.tuning.private_tune_state`, re-exported here: Tune's saved experiment and
search state, read and rewritten for ``--resume`` and ``--extend``).

Each one has a canary test (tests/test_private_api.py) that fails loudly when a Ray or
Optuna upgrade changes it: Ray's address record and token setup, Tune's state-file and
trial-folder naming, the time budget and the ConcurrencyLimiter's live trials that Tune
saves with its state, Tune's SIGINT handler, ``Tuner._local_tuner``, OptunaSearch's
``_ot_study``/``_ot_trials``/``_completed_trials``, Tune's logger names, the
environment knobs set below, and the ``__mixins__`` hook with Tune's ``_TrainingResult``
through which a trial restores from a checkpoint that survived a killed driver, the
loggers' ``_restore_from_remote``, which lost a restarted trial's result lines, and
``ray._private.services.ConsolePopen``, through which a local Ray's processes get a
session of their own.
Nothing else in tune_lm touches them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tune_lm.tuning.layout import OURS_AT_THE_ROOT
from tune_lm.tuning.private_tune_state import (  # noqa: F401  (Tune's saved state: there)
    SEARCH_STATE_PATTERN,
    forget_ended_trials,
    restart_time_budget,
    saved_trial_folders,
    set_trial_total,
    trial_total,
    tune_state_saved,
)

# Ray's and Tune's environment knobs, read by Ray at start-up or by Tune at fit():
# name -> (value, why). Each is looked up in Ray's source by a canary test.
TUNE_ENV_DEFAULTS = {
    # How often (s) the driver snapshots the experiment's state: what a killed driver loses.
    "TUNE_GLOBAL_CHECKPOINT_S": "5",
    # Tune warns when a snapshot is slow; on a laptop's disk that is noise.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}
PLAIN_OUTPUT_ENV = "RAY_COLOR_PREFIX"  # "0": worker lines without ANSI colour codes
SIGINT_OPT_OUT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"  # set: Tune leaves Ctrl-C alone
RESTORE_HINT_LOGGER = "ray.tune.tune"  # logs "Resume experiment with: Tuner.restore(...)"

log = logging.getLogger(__name__)


def find_cluster_address() -> str:
    """The cluster ``--address auto`` means: RAY_ADDRESS, else the one the last
    ``ray start`` on this machine recorded in Ray's temp folder (the record outlives the
    cluster, so the address may be dead: the caller checks it).

    Unlike ``ray.init(address="auto")`` this never picks some Ray process it finds running
    on the machine. Raises ConnectionError when there is no cluster to name."""
    import os

    from ray._private.utils import read_ray_address

    address = os.environ.get("RAY_ADDRESS") or read_ray_address()
    if not address or address in ("auto", "local"):
        raise ConnectionError("no RAY_ADDRESS, and no cluster recorded by `ray start`")
    return address


@contextlib.contextmanager
def local_ray_in_its_own_session() -> Iterator[None]:
    """Within this block, the processes ``ray.init`` starts (GCS, raylet, and through the
    raylet the trial workers) start in a session of their own, out of the driver's
    process group.

    A signal sent to the driver's whole group (``timeout``, ``kill -TERM -PGID``) reached
    them too; they do not catch SIGTERM, so the raylet died at once, and the driver's Ray
    core then ended the driver (exit 1, "connection to the plasma store failed") before
    its graceful stop could mark the MLflow runs or print the resume command. Ray blocks
    SIGINT in them already, so Ctrl-C was never the problem. They still end with the
    driver: Ray binds them to it with the kernel's parent-death signal."""
    from ray._private import services

    original = services.ConsolePopen

    class OwnSessionPopen(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if os.name == "posix":
                kwargs["start_new_session"] = True
            super().__init__(*args, **kwargs)

    services.ConsolePopen = OwnSessionPopen
    try:
        yield
    finally:
        services.ConsolePopen = original


def token_auth_enabled() -> bool:
    """Whether this process's Ray requires its token on every gRPC call."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    return bool(is_token_auth_enabled())


def require_token_auth() -> None:
    """Token authentication on for the Ray this process starts next, even where the
    shell's RAY_AUTH_MODE turned it off (Ray caches its config, so it is refreshed)."""
    import os

    from ray._private.authentication.authentication_token_setup import _enable_token_auth

    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        _enable_token_auth()


def set_tune_env_defaults() -> None:
    """Tune's knobs at tune_lm's values, unless the user set them."""
    for name, value in TUNE_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)


def plain_ray_output() -> None:
    """Ray's worker lines without colour codes (for a log file or a pipe)."""
    os.environ.setdefault(PLAIN_OUTPUT_ENV, "0")


def is_trial_folder(folder_name: str, trial_id: str) -> bool:
    """Whether a trial folder (Tune names them ``train_trial_<id>_<n>_<params>_<date>``)
    belongs to trial ``trial_id``."""
    return f"_{trial_id}_" in folder_name


def local_trial_folder() -> Path | None:
    """Inside a trial: its folder in the experiment's storage when that storage is a local
    filesystem, else None. (Tune's public ``get_trial_dir()`` is the driver's staging
    folder under Ray's temp folder, often another disk than the storage's.)"""
    import pyarrow.fs
    from ray.train._internal.session import get_storage

    storage = get_storage()
    if not isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
        return None
    return Path(storage.trial_fs_path)


def tuner_callbacks(tuner: Any) -> list:
    """The callbacks a (possibly restored) Tuner runs with: a restored Tuner holds its
    own unpickled copies, reachable only through ``Tuner._local_tuner``."""
    internal = getattr(tuner, "_local_tuner", None)
    run_config = internal.get_run_config() if internal is not None else None
    return list(getattr(run_config, "callbacks", None) or [])


@contextlib.contextmanager
def uploads_leaving_out(names: tuple[str, ...]) -> Iterator[None]:
    """Tune's experiment snapshots upload the driver's staging folder without ``names``
    (files at the experiment's root). On a restore Tune copies every .json and .pkl of the
    experiment's root into that folder, then uploads them all back at each snapshot: a
    stale copy of our files, and not written atomically, so a kill mid-upload left one of
    them empty. Swaps the upload command of Ray's filesystem syncer while active."""
    from ray.train._internal.storage import _FilesystemSyncer

    original = _FilesystemSyncer._sync_up_command

    def sync_up_command(self: Any, local_path: str, uri: str, exclude: list | None = None
                        ) -> Any:  # fmt: skip
        return original(self, local_path, uri, exclude=[*(exclude or []), *names])

    _FilesystemSyncer._sync_up_command = sync_up_command
    try:
        yield
    finally:
        _FilesystemSyncer._sync_up_command = original


def fit_noting_interrupt(tuner: Any) -> tuple[Any, str | None]:
    """``tuner.fit()``, and what interrupted it: "Ctrl-C", "SIGTERM", "SIGHUP" or None.

    On the first SIGINT Tune stops the trials gracefully (state saved) and puts back the
    handler it found installed: finding ours back afterwards is how we know it happened.
    SIGTERM (``kill``, ``timeout``, Kubernetes) and SIGHUP (the terminal closed, an ssh
    session dropped) are turned into that same graceful stop."""
    received: list[str] = []

    def noted(signum: int, frame: Any) -> None:  # only runs on a second Ctrl-C
        raise KeyboardInterrupt

    def terminate(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        signal.raise_signal(signal.SIGINT)  # Tune's own graceful stop

    signal.signal(signal.SIGINT, noted)
    previous = {sig: signal.signal(sig, terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with uploads_leaving_out(OURS_AT_THE_ROOT):
            results = tuner.fit()
    finally:
        interrupted = signal.getsignal(signal.SIGINT) is noted and not int(
            os.environ.get(SIGINT_OPT_OUT_ENV, "0")
        )
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not (interrupted or received):
        return results, None
    return results, received[0] if received else "Ctrl-C"


# Ray's OptunaSearch keeps its study and trials in private attributes; the pruned-aware
# searcher (tuning.searchers) reads and updates them through these three.
def optuna_study(searcher: Any) -> Any:
    """The ``optuna.Study`` behind a Ray OptunaSearch (None before its space is set)."""
    return getattr(searcher, "_ot_study", None)


def optuna_trials(searcher: Any) -> dict[str, Any]:
    """Tune trial id -> the ``optuna.Trial`` OptunaSearch asked for it."""
    return searcher._ot_trials


def closed_trials(searcher: Any) -> set[str]:
    """Tune trial ids that OptunaSearch has already told its study about."""
    return searcher._completed_trials


def set_trial_user_attr(study: Any, number: int, key: str, value: Any) -> None:
    """A user attribute on the study's trial ``number``: Optuna sets them only through
    the ``Trial`` object ``ask()`` returned, which a study loaded later does not have."""
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    storage.set_trial_user_attr(trial_id, key, value)


# Ray's ASHA keeps each bracket's rungs in ``_Bracket._rungs`` (a list of (milestone,
# {trial id: signed value})), each trial's bracket in ``_trial_info`` and the sign in
# ``_metric_op``; a restored ASHA starts with them empty, so tune_lm refills them from the
# earlier trials' results and puts each trial back in its Hyperband bracket.
def asha_rungs(scheduler: Any, bracket: int = 0) -> list[tuple[float, dict[str, float]]]:
    """The rungs of one ASHA bracket: (milestone epoch, {trial id: signed value})."""
    return list(scheduler._brackets[bracket]._rungs)


def asha_bracket_count(scheduler: Any) -> int:
    return len(scheduler._brackets)


def trial_bracket(scheduler: Any, trial_id: str) -> int | None:
    """The index of the bracket ASHA put ``trial_id`` in (None: not added)."""
    bracket = scheduler._trial_info.get(trial_id)
    return None if bracket is None else scheduler._brackets.index(bracket)


def put_in_bracket(scheduler: Any, trial_id: str, bracket: int) -> None:
    scheduler._trial_info[trial_id] = scheduler._brackets[bracket]


def asha_metric_sign(scheduler: Any) -> float:
    """+1 when ASHA maximises its metric, -1 when it minimises it."""
    return float(scheduler._metric_op)


# A race in Tune (2.60): the experiment snapshot on storage names a trial's checkpoint N;
# the trial then saves N+1..N+k and Tune's keep-the-last-k rule deletes N; the driver is
# killed before its next snapshot reaches storage. On --resume, Tune restores the trial from
# N and fails it: "Could not recover from checkpoint as it does not exist on storage
# anymore". Ray's wrap_function puts the classes in a function's ``__mixins__`` before
# FunctionTrainable, so a mixin's ``restore`` sees (and may replace) what Tune restores from.
class RestoreFromSurvivingCheckpoint:
    """Trainable mixin: a trial whose snapshot checkpoint was deleted resumes from the
    oldest later checkpoint of its own folder (complete: the trial saved another after it,
    or Tune registered it), instead of failing."""

    def restore(self, checkpoint_path: Any) -> Any:
        return super().restore(surviving_checkpoint(checkpoint_path))  # type: ignore[misc]


def surviving_checkpoint(result: Any) -> Any:
    """``result`` (Tune's ``_TrainingResult``) unchanged when its checkpoint exists; else
    the same metrics with the oldest later ``checkpoint_*`` folder beside it, if any."""
    import pyarrow.fs
    from ray.train._internal.checkpoint_manager import _TrainingResult
    from ray.train._internal.storage import _exists_at_fs_path
    from ray.tune import Checkpoint

    checkpoint = getattr(result, "checkpoint", None)
    if checkpoint is None or _exists_at_fs_path(checkpoint.filesystem, checkpoint.path):
        return result
    parent, missing = checkpoint.path.rstrip("/").rsplit("/", 1)
    try:
        found = checkpoint.filesystem.get_file_info(pyarrow.fs.FileSelector(parent))
    except OSError:
        return result  # Tune's own error then names the missing checkpoint
    later = sorted(
        (i.path for i in found if i.type == pyarrow.fs.FileType.Directory
         and i.base_name.startswith("checkpoint_") and i.base_name > missing),
    )  # fmt: skip
    if not later:
        return result
    log.warning("checkpoint %s was deleted after the experiment's last snapshot (the driver "
                "was killed); the trial resumes from the next one it saved, %s",
                checkpoint.path, later[0])  # fmt: skip
    return _TrainingResult(Checkpoint(later[0], filesystem=checkpoint.filesystem), result.metrics)


def restoring_from_surviving_checkpoints(trainable: Any) -> Any:
    """A function trainable whose trials restore through RestoreFromSurvivingCheckpoint."""
    trainable.__mixins__ = (RestoreFromSurvivingCheckpoint,)
    return trainable


class KeepsDriverResultLines:
    """Tune logger-callback mixin (its JSON and CSV loggers): a trial that starts again
    within one driver run (a retry after its process died, a PBT exploit, a paused trial)
    keeps the lines the driver already wrote to its ``result.json``/``progress.csv``.

    Ray 2.60's loggers copy the trial's file from storage over the driver's own copy each
    time a trial with a checkpoint starts (``_restore_from_remote``). The storage copy is
    only as new as the driver's last upload (every few seconds; later on a loaded
    machine), so the lines written since were lost: a retried trial's epochs read [2, 3],
    not [1, 2, 3]. Within a run the driver's copy only grows and is what storage receives,
    so it is kept; the storage copy is still fetched where the driver has none (a resumed
    experiment, whose staging folder is new)."""

    def _restore_from_remote(self, file_name: str, trial: Any) -> None:
        if Path(trial.local_path, file_name).exists():
            return
        super()._restore_from_remote(file_name, trial)  # type: ignore[misc]

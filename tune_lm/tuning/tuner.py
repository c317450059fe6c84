"""Driver-side Ray: start or join Ray, build (or restore) the Tuner, score on test."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from tune_lm.lm import metrics as M
from tune_lm.lm.corpus import Corpus
from tune_lm.lm.errors import ConfigError
from tune_lm.tuning import private_api
from tune_lm.tuning.experiment import local_copy_folder
from tune_lm.tuning.private_api import (
    find_cluster_address,
    local_ray_in_its_own_session,
    require_token_auth,
    tune_state_saved,
)
from tune_lm.tuning.results import Conclusion, TrialOutcome
from tune_lm.tuning.searchers import StopLedger, make_scheduler, make_searcher
from tune_lm.tuning.space import SearchSpace, parse_duration
from tune_lm.tuning.trainable import load_state, test_perplexity, train_trial
from tune_lm.tuning.tune_space import to_tune_space

log = logging.getLogger(__name__)
CHECKPOINTS_KEPT = 2  # the latest holds the best weights too; one spare in case of a crash
# PBT copies another trial's checkpoint, which must still be there when it does.
PBT_CHECKPOINTS_KEPT = 5


def connect_ray(address: str | None) -> None:
    """A local Ray sized to this machine (dashboard on loopback), or an existing cluster."""
    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:  # "local": a new Ray of our own, never a cluster a past `ray start` left.
            # Ray's gRPC servers listen on every interface (Ray has no option to bind them
            # to loopback), so token authentication stays on for it, whatever the shell's
            # RAY_AUTH_MODE says; Ray keeps the token in ~/.ray/auth_token.
            require_token_auth()
            with local_ray_in_its_own_session():  # a signal to our group is ours alone
                ray.init(address="local", dashboard_host="127.0.0.1", include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError, OSError) as error:
        if not address:  # OSError: e.g. ~/.ray (Ray's token) cannot be made
            raise ConfigError(
                f"could not start a local Ray ({error}). Check free disk space and memory, "
                "and that Ray's temp folder (/tmp/ray, or RAY_TMPDIR) and your home folder "
                "(Ray keeps its token in ~/.ray) are writable"
            ) from None
        raise ConfigError(
            f"--address {address!r}: cannot connect to a Ray cluster there ({error}). "
            "Check the address (auto, host:6379 or ray://host:10001) and that the "
            "cluster is up (ray status), or leave --address out for a local Ray"
        ) from None


def disconnect() -> None:
    """Leave Ray: a local Ray of ours stops, a cluster stays up."""
    if ray.is_initialized():
        ray.shutdown()


def check_address(address: str | None, timeout_s: float = 5.0) -> str | None:
    """The address to give :func:`connect_ray`, once it accepts connections: ``auto``
    becomes the cluster it names (see :func:`find_cluster_address`).

    ``ray.init`` retries an address where nothing listens for ever, so this fails first.
    Schemes other than ``ray://`` are left to :func:`connect_ray`.
    """
    if not address or address == "local":
        return None
    if address == "auto":  # resolved here, so a dead cluster fails now instead of hanging
        try:
            resolved = find_cluster_address()
        except (ConnectionError, ValueError) as error:
            raise ConfigError(
                f"--address auto: no Ray cluster to join on this machine ({error}). Start "
                "one (ray start --head), give its address, or leave --address out for a "
                "local Ray"
            ) from None
        try:
            check_address(resolved, timeout_s)
        except ConfigError as error:
            raise ConfigError(
                f"--address auto found the cluster at {resolved} (RAY_ADDRESS, or the one a "
                f"past `ray start` on this machine recorded), but {str(error).split(': ', 1)[1]}"
            ) from None
        return resolved
    scheme, _, host_port = address.rpartition("://")
    if scheme in ("http", "https"):  # what `ray job submit --address` takes
        raise ConfigError(
            f"--address {address} is a Ray dashboard's address (the one `ray job submit` "
            "takes), not a cluster to join: use host:6379 (the head node's GCS port), "
            "ray://host:10001 (Ray Client) or auto on a cluster node; or submit the search "
            "as a job (ray job submit --address ... -- python -m tune_lm.search ...)"
        )
    if scheme not in ("", "ray"):
        return address
    host, _, port = host_port.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--address {address!r} is not a Ray address. Use auto, host:6379 (the head "
            "node's GCS port) or ray://host:10001 (Ray Client), or leave --address out for "
            "a local Ray"
        )
    hosts = [host]
    if host in ("localhost", "127.0.0.1", "::1"):  # Ray itself dials this node's own IP
        hosts.append(ray.util.get_node_ip_address())
    problem: OSError | None = None
    for candidate in hosts:
        try:
            with socket.create_connection((candidate, int(port)), timeout=timeout_s):
                return address
        except OSError as error:
            problem = error
    raise ConfigError(
        f"--address {address!r}: nothing answers there ({problem}). Check the address "
        "and that the cluster is up (ray status on the head node), or leave --address "
        "out for a local Ray"
    )


def check_gpus(space: SearchSpace, address: str | None) -> None:
    """Trials that ask for GPUs on a local Ray need a GPU here, or none would ever start."""
    gpus = space.resources.gpus_per_trial
    if address or gpus == 0:
        return
    if not torch.cuda.is_available():
        raise ConfigError(
            f"--gpus-per-trial (resources.gpus_per_trial) is {gpus:g}, but torch finds no "
            "CUDA GPU on this machine, so the local Ray could never start a trial. Set it "
            "to 0, or join a cluster with GPUs (--address)"
        )


class JsonLogger(private_api.KeepsDriverResultLines, JsonLoggerCallback):
    """Tune's ``result.json`` logger that keeps a restarted trial's lines."""


class CSVLogger(private_api.KeepsDriverResultLines, CSVLoggerCallback):
    """Tune's ``progress.csv`` logger that keeps a restarted trial's lines."""


def with_result_loggers(callbacks: list | None) -> list:
    """``callbacks`` and Tune's JSON and CSV loggers, in the versions that keep the lines
    of a trial started again within a run (Tune then adds no default ones of its own)."""
    return [*(callbacks or []), JsonLogger(), CSVLogger()]


def _trainable(space: SearchSpace, corpus: Corpus) -> Any:
    with_data = tune.with_parameters(train_trial, space=space, corpus=corpus)
    return private_api.restoring_from_surviving_checkpoints(tune.with_resources(
        with_data,
        {"cpu": space.resources.cpus_per_trial, "gpu": space.resources.gpus_per_trial},
    ))  # fmt: skip


def restorable(path: str) -> bool:
    """Whether Tune can restore the experiment at ``path``. Killed between Tune's
    tuner.pkl and its first state snapshot, an experiment looks restorable but is not
    (Tune then "restarts" it with a wrong trial count)."""
    return tune.Tuner.can_restore(path) and ("://" in path or tune_state_saved(Path(path)))


def forget_stateless(path: str) -> None:
    """Remove the tuner.pkl of a local experiment killed before Tune saved any state: it
    holds no state, makes the folder look taken, and a new start rewrites it."""
    if "://" not in path:
        (Path(path) / "tuner.pkl").unlink(missing_ok=True)


def check_experiment(path: str, *, resume: bool) -> bool:
    """A new search needs a free name; --resume needs an experiment to resume.

    Returns whether Tune's state is to be restored: a search killed before Tune's first
    snapshot (its folder exists, its state does not) is, on --resume, started again."""
    exists = tune.Tuner.can_restore(path)
    can_restore = restorable(path)
    if resume and not can_restore and "://" not in path and Path(path).is_dir():
        log.warning("--resume: %s stopped before Tune saved any state; starting it again", path)
        forget_stateless(path)
        return False
    if resume and not can_restore:
        raise ConfigError(
            f"--resume: no experiment to resume at {path}. Check --name and --storage, "
            "or drop --resume to start it"
        )
    if not resume and exists:
        raise ConfigError(
            f"experiment {path} exists already. Continue it with --resume, or start "
            "another with --name NEW_NAME"
        )
    if resume and "://" not in path:
        check_trial_folders(Path(path))
    return resume


def check_trial_folders(folder: Path) -> None:
    """Every trial Tune's state says started still has its folder: else Tune fails it
    on restore, and its result reads as never reported (its MLflow run rewritten KILLED,
    a worse trial registered as the best)."""
    missing = sorted(f"{trial_id} ({name})" for trial_id, name in
                     private_api.saved_trial_folders(folder).items()
                     if not (folder / name).is_dir())  # fmt: skip
    if missing:
        raise ConfigError(
            f"--resume/--extend: {len(missing)} trial folder(s) of {folder} are missing "
            f"(deleted or moved?): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. "
            "Their checkpoints and results are gone, so the search cannot go on from them. "
            "Put them back, or start a new search seeded with what is left: --space SPACE "
            f"--warm-start {folder} --name NEW_NAME"
        )


def stop_ledger(path: str) -> StopLedger:
    """Where ASHA's stop decisions are kept: the experiment folder, or ./NAME (where the
    summary goes) when the experiment lives in remote storage."""
    local = Path(path) if "://" not in path else local_copy_folder(path)
    return StopLedger(local)


def build_tuner(
    space: SearchSpace, corpus: Corpus | None, path: str, *, resume: bool,
    callbacks: list | None = None, ledger: StopLedger | None = None, trainable: Any = None,
    stop: Any = None, study_on_disk: bool = True, verbose: int = 1,
    priors: list[dict[str, Any]] | None = None,
) -> tune.Tuner:
    """A new Tuner for ``path``, or the restored one (see :func:`check_experiment`).
    ``trainable`` replaces the training one (a replayed search), ``stop`` is Tune's.

    A restored Tuner keeps the callbacks it was created with (Ray pickles them)."""
    trainable = trainable if trainable is not None else _trainable(space, corpus)
    private_api.set_tune_env_defaults()  # snapshots every 5 s; no "excessive snapshots" noise
    check_experiment(path, resume=resume)
    if resume:
        return tune.Tuner.restore(
            path, trainable=trainable, resume_unfinished=True,
            resume_errored=True,
        )  # fmt: skip
    storage, name = path.rsplit("/", 1)
    # Local storage: the Optuna study is a journal file in the experiment folder. Remote
    # storage: the study lives in memory and Ray saves it with the searcher's state.
    ledger = ledger or stop_ledger(path)
    on_disk = study_on_disk and "://" not in path
    searcher = make_searcher(space, Path(path) if on_disk else None, ledger, priors)
    time_budget = parse_duration(space.budget.time_budget) if space.budget.time_budget else None
    tune_config = tune.TuneConfig(
        metric=M.VAL_PPL,
        mode="min",
        search_alg=searcher,
        scheduler=make_scheduler(space, ledger),
        num_samples=space.budget.num_samples,
        # Optuna is limited by its ConcurrencyLimiter; Tune's grid by this.
        max_concurrent_trials=None if searcher else space.budget.max_concurrent,
        time_budget_s=time_budget,
        # A trial's worker process runs the next trial too (when its thread has ended):
        # no process start, torch import or CUDA context per trial (about 13 s of 37 s
        # in a 4-trial tiny search on 2 cores).
        reuse_actors=True,
    )
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=PBT_CHECKPOINTS_KEPT if space.scheduler.type == "pbt"
            else CHECKPOINTS_KEPT),  # fmt: skip
        failure_config=tune.FailureConfig(max_failures=space.budget.max_failures),
        callbacks=with_result_loggers(callbacks),
        stop=stop,
        verbose=verbose,
    )
    # Optuna holds the space itself (Ray refuses it twice); a grid (or PBT's population) is
    # drawn by Tune, and a grid's repeats are a grid over seeds (Tune's own repeats would
    # all share one seed).
    param_space = {} if searcher else to_tune_space(space)
    if not searcher and space.repeat_seeds:
        param_space["seed"] = tune.grid_search(space.repeat_seeds)
        tune_config.num_samples = 1
    if not searcher:
        seed_driver(space.seed)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune_config,
        run_config=run_config,
    )


def seed_driver(seed: int) -> None:
    """Seed the driver's global generators, from which Tune draws the values of a
    space it samples itself (PBT's population; ``np.random`` unless a generator is
    given) and PBT its perturbations (``random``): Ray's way to reproducible runs."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)


def best_weights(result: Any, space: SearchSpace) -> tuple[Any, dict[str, Any]] | None:
    """(config, best-validation weights) of a trial, from its latest checkpoint."""
    if result.checkpoint is None:
        return None
    state = load_state(result.checkpoint)
    config = space.trial_config(space.searched(result.config))
    return config.replace(device="auto", threads=None), state["best_model"]


def score_on_test(conclusion: Conclusion, outcomes: list[TrialOutcome], space: SearchSpace,
                  corpus: Corpus, known: dict[str, tuple[float, float]] | None = None,
                  ) -> tuple[Any, dict[str, Any]] | None:  # fmt: skip
    """Test perplexity of each trial the conclusion names, once, on its best-validation
    weights (set on its row); returns the winner's (config, weights) for the registry.
    ``known``: trial id -> (best val ppl, test ppl) scored before (an extended search):
    the same weights (same best val ppl) are not scored again."""
    sources = {outcome.trial_id: outcome.source for outcome in outcomes}
    best_model = None
    for row in conclusion.to_test:
        found = best_weights(sources[row.trial_id], space)
        if found:
            before = (known or {}).get(row.trial_id)
            row.test_ppl = (before[1] if before and before[0] == row.best_val_ppl
                            else test_perplexity(found[0], corpus, found[1]))  # fmt: skip
            best_model = found if row is conclusion.best else best_model
    return best_model


def trial_outcomes(results: Any, space: SearchSpace) -> list[TrialOutcome]:
    """Tune's results as plain values for :func:`tune_lm.tuning.results.conclude`. A
    trial Tune created but never started (e.g. after Ctrl-C) has no config: left out."""
    outcomes = []
    for result in results:
        config = result.config or _started_config(result.path)
        if not config:
            continue
        history = _history(result)
        error = str(result.error) if result.error else None
        if error is None and not history:  # cut (time budget, Ctrl-C) while being retried?
            error = _last_attempt_error(result.path)
        outcomes.append(TrialOutcome(trial_id=result.metrics.get("trial_id", result.path),
                                     params=space.searched(config), history=history,
                                     error=error, source=result))  # fmt: skip
    return outcomes


def _started_config(trial_path: str) -> dict[str, Any] | None:
    """The config of a trial that started but never reported, from the ``params.json``
    Tune writes in its folder when it starts. Tune gives its result one only while the
    trial's process lives: restored (--extend, --resume), such a trial (one the time
    budget cut) had none, and dropped out of the summary."""
    try:
        config = json.loads((Path(trial_path) / "params.json").read_text())
    except (OSError, ValueError):  # never started, or remote storage
        return None
    return config if isinstance(config, dict) else None


def _last_attempt_error(trial_path: str) -> str | None:
    """The error of a trial's last failed attempt (Tune's ``error.txt`` in its folder), for a
    trial that never reported: a time budget that stops it between retries leaves Tune no
    error of its own to give, and the trial would read as merely cut short."""
    error_file = Path(trial_path) / "error.txt"
    try:
        text = error_file.read_text(errors="replace").strip()
    except OSError:  # none (it just had not started), or remote storage
        return None
    return text or None


def _history(result: Any) -> list[dict[str, float]]:
    frame = result.metrics_dataframe
    if frame is None or frame.empty:
        return []
    keep = [c for c in frame.columns
            if c in (*M.EVALUATION_METRICS, M.CURVE_ENDS) or M.is_test_at_epoch(c)]
    return frame[keep].to_dict("records")

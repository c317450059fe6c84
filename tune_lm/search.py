"""``python -m tune_lm.search --space cells.yaml``: a Ray Tune search, ASHA + Optuna.

Loads and validates the space (nothing starts on bad input), loads the corpus once,
starts or joins Ray, runs (or ``--resume``s) the experiment, then scores the winner
(every trial, for grid studies) once on test and writes the summary.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tune_lm.cli import run_main
from tune_lm.lm import metrics as M
from tune_lm.lm.atomic import probe_writable
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.errors import ConfigError, TuneLMError
from tune_lm.tuning.console import LOG_FILE, console, say
from tune_lm.tuning.experiment import (
    SPACE_FILE,
    Pinned,
    SearchSettings,
    clean_tracking_uri,
    mark_finished,
    read_finished,
    read_pinned,
    resume_conflicts,
    write_pinned,
)
from tune_lm.tuning.results import pareto_front
from tune_lm.tuning.space import SearchSpace, load_space, parse_duration, resolve_space_path
from tune_lm.tuning.space_checks import grid_warning
from tune_lm.tuning.summary import (
    TrialRow,
    describe,
    make_row,
    outcome_counts,
    top_table,
    write_summary,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
DEFAULT_STORAGE = "tune_lm_runs"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tune_lm.search",
        description="Search RNN language-model hyper-parameters with Ray Tune, ASHA and Optuna.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--space", help="search-space YAML: a path, or a shipped name (cells.yaml); "
        "not needed with --resume (the experiment keeps its own copy)")
    add("--data", help="corpus: wikitext-2, ptb, synthetic, or a folder (overrides the space)")
    add("--num-samples", type=int, help="number of trials (a grid: repeats of the grid)")
    add("--max-epochs", type=int, help="epochs per trial, ASHA's max_t")
    add("--cpus-per-trial", type=float, help="CPUs per trial (torch threads)")
    add("--gpus-per-trial", type=float, help="GPUs per trial; 0.25 packs four trials per GPU")
    add("--max-concurrent", type=int, help="trials running at once")
    add("--time-budget", help="stop starting trials after this long: 90s, 30m, 2h")
    add("--max-failures", type=int,
        help="retries of a failed trial, each from its last checkpoint (default 2)")  # fmt: skip
    add("--seed", type=int, help="seed of the sampler and the trials")
    add("--address", default=os.environ.get("RAY_ADDRESS"),
        help="join a Ray cluster (auto, ray://host:10001); default: a local Ray")  # fmt: skip
    add("--storage", default=DEFAULT_STORAGE,
        help=f"experiment storage: a folder or s3://... (default ./{DEFAULT_STORAGE})")  # fmt: skip
    add("--name", help="experiment name (default: the space's name)")
    add("--resume", action="store_true", help="continue the experiment --name after a stop")
    add("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    add("--log-checkpoints", choices=["best", "all", "none"],
        help="checkpoints logged to each trial's MLflow run (default: best)")  # fmt: skip
    add("--progress-every", type=float, metavar="SECONDS",
        help="print a progress line this often, and when a trial ends (default: 30)")  # fmt: skip
    add("--smoke", action="store_true",
        help="a tiny run of the space on the synthetic corpus, named NAME-smoke")  # fmt: skip
    add("--verbose", action="store_true",
        help=f"show Ray's status tables and Ray's, MLflow's and Optuna's messages here "
             f"(default: in {LOG_FILE} in the experiment folder)")  # fmt: skip
    return parser


def smoke_space(space: SearchSpace, *, gpus: bool = True) -> SearchSpace:
    """The same space shrunk to seconds: synthetic corpus, 2 short epochs, 2 samples of
    one CPU each (and no GPU unless ``gpus``), under its own name (``NAME-smoke``), so it
    never takes the real search's experiment, MLflow experiment or registered model."""
    raw = space.model_dump()
    name = space.name or "search"
    raw["name"] = name if name.endswith("-smoke") else f"{name}-smoke"
    raw["data"] = "synthetic"
    raw["resources"].update(cpus_per_trial=1)
    if not gpus:
        raw["resources"].update(gpus_per_trial=0)
    raw["fixed"].update(epochs=2, max_tokens_per_epoch=2000)
    raw["budget"].update(num_samples=min(2, raw["budget"]["num_samples"]), time_budget=None)
    raw["scheduler"]["grace_period"] = 1
    raw["test_at_epochs"] = [1] if raw["test_at_epochs"] else []
    return SearchSpace(**raw)


def _validate_flags(args: argparse.Namespace) -> None:
    for flag in ("num_samples", "max_epochs", "max_concurrent"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.max_failures is not None and args.max_failures < 0:
        raise ConfigError(f"--max-failures must be 0 or more, got {args.max_failures}")
    if args.progress_every is not None and not 0 < args.progress_every < math.inf:
        raise ConfigError(f"--progress-every must be positive seconds, got {args.progress_every}")
    for flag in ("cpus_per_trial", "gpus_per_trial"):
        value = getattr(args, flag)
        if value is not None and (value < 0 or (flag == "cpus_per_trial" and value == 0)):
            raise ConfigError(f"--{flag.replace('_', '-')} must be positive, got {value}")
    if args.time_budget is not None:
        try:
            parse_duration(args.time_budget)
        except ValueError as error:
            raise ConfigError(f"--time-budget: {error}") from None
    check_storage(args.storage)
    if args.name is not None and (
        not args.name.strip() or args.name in (".", "..") or any(c in args.name for c in "/\\")
    ):
        raise ConfigError(f"--name {args.name!r} must be a plain name (no / or \\, not . or ..): "
                          "it is a folder inside --storage")  # fmt: skip


def check_storage(storage: str) -> None:
    """--storage: a folder that can be made and written, or a URI pyarrow (Ray's
    filesystem layer) can open; checked before anything is written."""
    if "://" in storage:
        import pyarrow.fs

        try:
            filesystem, root = pyarrow.fs.FileSystem.from_uri(storage)
            filesystem.get_file_info(root)
        except Exception as error:  # pyarrow's errors: unknown scheme, no bucket, no access
            raise ConfigError(
                f"--storage {storage}: cannot use it ({str(error).splitlines()[0]}). Give a "
                "local folder, or a URI Ray can write to (s3://bucket/path, gs://bucket/path) "
                "with its credentials set"
            ) from None
        return
    try:  # (a probe file inside the storage folder: its nearest existing ancestor)
        probe_writable(Path(storage).expanduser() / "probe")
    except OSError as error:
        raise ConfigError(f"--storage {storage}: cannot write there ({error.strerror or error}); "
                          "give a folder you can write to (it is made if missing)") from None


def experiment_path(storage: str, name: str) -> str:
    if "://" in storage:
        return f"{storage.rstrip('/')}/{name}"
    return str(Path(storage).expanduser().resolve() / name)


def _space_from_args(args: argparse.Namespace) -> SearchSpace:
    space = load_space(args.space).with_overrides(**_overrides(args))
    if not args.smoke:
        return space
    if args.address or not space.resources.gpus_per_trial:
        return smoke_space(space)
    import torch  # a smoke run on a CPU-only machine drops the space's GPU requests

    return smoke_space(space, gpus=torch.cuda.is_available())


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return dict(data=args.data, num_samples=args.num_samples, max_epochs=args.max_epochs,
                cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                max_concurrent=args.max_concurrent, time_budget=args.time_budget,
                seed=args.seed, max_failures=args.max_failures)  # fmt: skip


def _resolve_experiment(args: argparse.Namespace) -> tuple[str, str, SearchSpace, Pinned | None]:
    """(name, path, space, what the experiment pinned): on --resume the space and the
    settings the experiment started with, and a refusal of any flag that disagrees."""
    if not args.resume:
        if not args.space:
            raise ConfigError("--space is required (a YAML file or a shipped name, e.g. "
                              "quick.yaml); only --resume can do without it")  # fmt: skip
        space = _space_from_args(args)
        name = args.name or space.name or "search"
        return name, experiment_path(args.storage, name), _absolute_data(space), None
    name = args.name or (_space_from_args(args).name if args.space else None)
    if not name:
        raise ConfigError("--resume needs --name (the experiment's name), or the --space "
                          "it was started with")  # fmt: skip
    path = experiment_path(args.storage, name)
    pinned = read_pinned(path)
    if pinned is None:  # stopped before it pinned anything: start-up is repeated
        if not args.space:
            raise ConfigError(
                f"--resume: no experiment with a saved space at {path}. Check --name and "
                "--storage; if it was stopped during start-up, give its --space too"
            )
        return name, path, _absolute_data(_space_from_args(args)), None
    _refuse_changes(args, pinned)
    return name, path, pinned.space, pinned


def _refuse_changes(args: argparse.Namespace, pinned: Pinned) -> None:
    """--resume continues an experiment as it started: a flag given anew that disagrees
    would be applied by half of it (Ray restores its own copy), so it is refused."""
    space, conflicts = pinned.space, []
    for key, value in _overrides(args).items():
        if value is None:
            continue
        if key == "data" and Path(value).expanduser().is_dir():
            value = str(Path(value).expanduser().resolve())
        try:
            same = space.with_overrides(**{key: value}) == space
        except TuneLMError:
            same = False
        if not same:
            conflicts.append(f"--{key.replace('_', '-')} {value}")
    if args.smoke and smoke_space(space) != space:
        conflicts.append("--smoke")
    if args.space:
        try:
            same_space = _absolute_data(_space_from_args(args)) == space
        except TuneLMError:
            same_space = False
        if not same_space:
            conflicts.append(f"--space {args.space} (it differs from the experiment's own "
                             f"copy, {SPACE_FILE})")  # fmt: skip
    settings = pinned.settings
    if settings is not None:
        uri = clean_tracking_uri(args.tracking_uri) if args.tracking_uri else None
        conflicts += resume_conflicts({
            "--tracking-uri": (uri, settings.tracking_uri),
            "--log-checkpoints": (args.log_checkpoints, settings.log_checkpoints),
            "--progress-every": (args.progress_every, settings.progress_every),
        })  # fmt: skip
    if conflicts:
        raise ConfigError(
            "--resume continues the experiment exactly as it started (same space, corpus "
            f"and MLflow store), but these flags disagree with it: {'; '.join(conflicts)}. "
            "Leave them out (the experiment keeps its own copy of each), or start a new "
            "search with --name NEW_NAME"
        )


def _absolute_data(space: SearchSpace) -> SearchSpace:
    """A corpus given as a folder, made absolute: a resume from elsewhere finds it."""
    if space.data and Path(space.data).expanduser().is_dir():
        return space.with_overrides(data=str(Path(space.data).expanduser().resolve()))
    return space


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _validate_flags(args)
    name, path, space, pinned = _resolve_experiment(args)
    settings = pinned.settings if pinned else None
    finished = read_finished(path) if args.resume else None
    if finished is not None:  # nothing to continue: change nothing, start nothing
        say(f"experiment {path} finished on {finished.get('finished_at', '?')}: nothing to "
            f"resume, nothing was changed. Best trial {finished.get('best_trial')} "
            f"({finished.get('best')}); model {finished.get('model') or 'not registered'}; "
            f"summary in {finished.get('summary')}. To search further, start a new search "
            "with --name NEW_NAME")  # fmt: skip
        return 0
    notice = grid_warning(space)
    if notice:
        log.warning("%s", notice)
    # Bad flags and spaces have failed by now, in a fraction of a second: Ray, MLflow and
    # torch take seconds to import (importing them starts nothing).
    from tune_lm.lm.data import load_corpus
    from tune_lm.tracking.parent_run import (
        check_tracking_server,
        check_tracking_uri,
        default_tracking_uri,
        move_credentials,
    )
    from tune_lm.tracking.trial_runs import limit_http_retries
    from tune_lm.tuning import tuner as ray_side

    # Everything that can be wrong is checked before anything is written or started.
    restore = ray_side.check_experiment(path, resume=args.resume)
    address = ray_side.check_address(args.address)  # "auto" resolved to what it names
    ray_side.check_gpus(space, args.address)
    limit_http_retries()
    tracking_uri = move_credentials(args.tracking_uri or default_tracking_uri())
    if settings is not None:
        tracking_uri = settings.tracking_uri
    tracking_uri = clean_tracking_uri(tracking_uri)
    check_tracking_uri(tracking_uri)
    check_tracking_server(tracking_uri)
    corpus = load_corpus(space.data or TrainConfig.model_fields["data"].default)
    say(f"corpus {corpus.name}: {corpus.ntokens} words, {corpus.train.numel()} train tokens")
    batch_size = space.largest("batch_size")
    if corpus.train.numel() < 2 * batch_size:  # what every trial's fit() would refuse
        raise ConfigError(
            f"corpus {corpus.name!r} has {corpus.train.numel()} training tokens, fewer than "
            f"one batch of the largest batch_size in the space ({batch_size}) needs "
            f"({2 * batch_size}). Lower batch_size in the space, or use a larger corpus"
        )
    if settings is not None and corpus.fingerprint != settings.fingerprint:
        raise ConfigError(
            f"--resume: the corpus {settings.data!r} is not the one this experiment started "
            f"with (its files changed: fingerprint {corpus.fingerprint[:12]} now, "
            f"{settings.fingerprint[:12]} then). A resumed search must train on the corpus "
            "it started with: restore those files, or start a new search with --name"
        )
    log_checkpoints = settings.log_checkpoints if settings else args.log_checkpoints or "best"
    progress_every = settings.progress_every if settings else args.progress_every or 30.0
    folder = _local_folder(path)
    log_file = folder / LOG_FILE
    # The topmost folder the log will create (None: the experiment folder exists).
    made = next((f for f in (folder, *folder.parents) if not f.exists() and f.parent.exists()),
                None)  # fmt: skip
    say(f"experiment: {path}")
    if not args.verbose:
        say(f"log: {log_file.resolve()} (Ray's, MLflow's and Optuna's output; --verbose "
            "shows it here)")  # fmt: skip
    try:
        with console.capture(log_file, verbose=args.verbose):
            try:
                return _run(args, name, path, space, corpus, pinned, restore=restore,
                            address=address, tracking_uri=tracking_uri,
                            log_checkpoints=log_checkpoints,
                            progress_every=progress_every)  # fmt: skip
            finally:
                ray_side.disconnect()  # Ray's last worker lines go to the log, not after it
    except ConfigError:  # refused before the search began: leave no folder behind
        if made is not None and made.is_dir():
            left = [p for p in made.rglob("*") if p.is_file()]
            if all(p == log_file for p in left):
                shutil.rmtree(made, ignore_errors=True)
        raise


def _plan(space: SearchSpace) -> str:
    """What the search will do, in one line."""
    if space.searcher.type == "grid":
        searcher = "every combination of the grid"
    else:
        searcher = f"Optuna {space.searcher.sampler.upper()} proposing"
    if space.scheduler.type == "asha":
        rungs = ", ".join(f"{r:g}" for r in space.asha_rungs)
        at = f"epoch{'s' if len(space.asha_rungs) > 1 else ''} {rungs}"
        scheduler = (f"ASHA keeping the best 1/{space.scheduler.reduction_factor:g} at {at}"
                     if rungs else "ASHA (no rung before the last epoch)")  # fmt: skip
    else:
        scheduler = "every trial runs to the end (FIFO)"
    budget = space.budget
    parts = [f"{space.total_trials} trials of {space.epochs} epochs ({searcher}; {scheduler})"]
    if budget.max_concurrent:
        parts.append(f"{budget.max_concurrent} at a time")
    if budget.time_budget:
        parts.append(f"time budget {budget.time_budget}")
    return ", ".join(parts)


def _run(
    args: argparse.Namespace, name: str, path: str, space: SearchSpace, corpus: Any,
    pinned: Pinned | None, *, restore: bool, address: str | None, tracking_uri: str,
    log_checkpoints: str, progress_every: float,
) -> int:  # fmt: skip
    """Start or join Ray, pin the experiment, open its MLflow run, and search."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from tune_lm.tracking.parent_run import start_parent_run
    from tune_lm.tuning import tuner as ray_side

    settings = pinned.settings if pinned else None
    ray_side.connect_ray(address)
    ray_side.check_trial_fits(space)
    if pinned is None or settings is None:
        write_pinned(path, space, SearchSettings(
            data=space.data or corpus.name, corpus_name=corpus.name,
            fingerprint=corpus.fingerprint, ntokens=corpus.ntokens, tracking_uri=tracking_uri,
            log_checkpoints=log_checkpoints, progress_every=progress_every))  # fmt: skip

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment_id, parent_id = start_parent_run(
        client, name, path, space, corpus, resolve_space_path(args.space) if args.space else None,
        resume=args.resume,
    )
    try:
        return _search_and_report(
            args, name, path, space, corpus, restore=restore, client=client,
            experiment_id=experiment_id, parent_id=parent_id, tracking_uri=tracking_uri,
            log_checkpoints=log_checkpoints, progress_every=progress_every,
        )  # fmt: skip
    except BaseException as error:  # never leave the search's run RUNNING
        _end_parent_run(client, parent_id, killed=isinstance(error, KeyboardInterrupt))
        raise


def _end_parent_run(client: MlflowClient, parent_id: str, *, killed: bool) -> None:
    try:
        if client.get_run(parent_id).info.status == "RUNNING":
            client.set_terminated(parent_id, "KILLED" if killed else "FAILED")
    except Exception as error:  # the tracking server may be the thing that failed
        log.warning("MLflow: could not end the search's run %s: %s", parent_id, error)


def _search_and_report(
    args: argparse.Namespace, name: str, path: str, space: SearchSpace, corpus: Any, *,
    restore: bool, client: MlflowClient, experiment_id: str, parent_id: str,
    tracking_uri: str, log_checkpoints: str, progress_every: float,
) -> int:  # fmt: skip
    """Run (or resume) the trials, score on test, write the summary and the report, and
    finish the search's MLflow run."""
    from tune_lm.tracking.parent_run import record_results
    from tune_lm.tracking.trial_runs import MLflowTrialLogger
    from tune_lm.tuning import tuner as ray_side
    from tune_lm.tuning.progress import ProgressPrinter
    from tune_lm.tuning.searchers import STUDY_FILE, fail_unfinished_trials
    from tune_lm.tuning.trainable import test_perplexity

    ledger = ray_side.stop_ledger(path)
    trial_logger = MLflowTrialLogger(
        tracking_uri, experiment_id, parent_id, space, corpus.vocab, log_checkpoints, ledger
    )
    progress = ProgressPrinter(space, interval_s=progress_every, ledger=ledger)
    tuner = ray_side.build_tuner(
        space, corpus, path, resume=restore, callbacks=[trial_logger, progress], ledger=ledger
    )
    say(f"MLflow: {tracking_uri} (experiment {name!r}, run {parent_id}); browse it with: "
        f"mlflow ui --backend-store-uri {tracking_uri}")
    say(f"search: {_plan(space)}")
    results, interrupted = _fit_noting_interrupt(tuner)
    loggers = [c for c in ray_side.tuner_callbacks(tuner) if isinstance(c, MLflowTrialLogger)]

    # A trial Tune created but never started (e.g. after Ctrl-C) has no config: no row.
    started = [r for r in results if r.config]
    asha_stops = ledger.stopped()
    rows = [
        make_row(
            r.metrics.get("trial_id", r.path),
            space.searched(r.config),
            _history(r),
            str(r.error) if r.error else None,
            space,
            asha_stopped=r.metrics.get("trial_id") in asha_stops,
            interrupted=interrupted,
        )  # fmt: skip
        for r in started
    ]
    by_id = dict(zip((row.trial_id for row in rows), started, strict=True))
    finished = [row for row in rows if math.isfinite(row.best_val_ppl)]
    best = min(finished, key=lambda row: row.best_val_ppl) if finished else None
    best_model = None
    to_test = finished if space.searcher.type == "grid" else [best] if best else []
    pareto: list[TrialRow] = []
    if len(space.objectives) > 1:  # several objectives: the non-dominated trials, not one
        pareto = [finished[i] for i in pareto_front([_point(r, space) for r in finished])]
        to_test = pareto
    if interrupted:  # the user wants out: test scoring waits for the resumed search
        to_test = []
    if to_test:
        which = "the best trial" if len(to_test) == 1 else f"{len(to_test)} trials"
        say(f"scoring {which} on the test split (once, on the best-validation weights) ...")
    for row in to_test:
        found = ray_side.best_weights(by_id[row.trial_id], space)
        if found:
            row.test_ppl = test_perplexity(found[0], corpus, found[1])
            best_model = found if row is best else best_model
    say(top_table(rows))
    paths = write_summary(_local_folder(path), rows, space, best, pareto)
    if pareto:
        say(f"Pareto-optimal trials ({', '.join(space.objectives)}):")
        say(top_table(pareto, limit=len(pareto)))
    say("writing the report and logging the results to MLflow ...")
    paths.update(_write_report(_local_folder(path), path))
    study = _local_folder(path) / STUDY_FILE
    if study.is_file():  # logged with the summary: the report can then be rebuilt from MLflow
        paths["study"] = study
    if not interrupted:  # every trial Ray knows has finished: the rest are ghosts
        _delete_lost_runs(client, experiment_id, parent_id, [Path(r.path).name for r in results])
        if "://" not in path:
            fail_unfinished_trials(Path(path))
    model_uri, failures = record_results(
        client, name=name, experiment_id=experiment_id, parent_id=parent_id,
        plan=_plan(space), corpus=corpus, rows=rows, best=best, best_model=best_model,
        paths=paths, interrupted=bool(interrupted),
    )  # fmt: skip
    failures = [f for logger in loggers for f in logger.failures] + failures
    if failures:
        say(f"MLflow: {len(failures)} call(s) failed; not logged: " + "; ".join(failures[:10]))
    resume_hint = _resume_command(args, path)
    if interrupted:
        say(f"interrupted ({interrupted}): {len(finished)} trial(s) with results, summary "
              f"in {paths['md']}; running trials stopped at their last checkpoint. "
              f"Continue with: {resume_hint}")  # fmt: skip
        return 143 if interrupted == "SIGTERM" else 130
    if best is None:
        raise TuneLMError(
            f"every trial failed ({len(rows)}); see the errors above and the trial logs "
            f"under {path}"
        )
    test = f"{best.test_ppl:.2f}" if best.test_ppl is not None else "n/a"
    say(f"best trial {best.trial_id}: val ppl {best.best_val_ppl:.2f}, test ppl {test} | "
        f"{describe(best.params)}")  # fmt: skip
    say(f"trials: {outcome_counts(rows)}")
    if model_uri:
        say(f"best model: {model_uri} (try: python -m tune_lm.generate --model {model_uri})")
    if "grid" in paths:
        say(paths["grid"].read_text().rstrip())
    say("summary: " + ", ".join(str(p) for k, p in paths.items() if ":" not in k))
    report = [p for k, p in paths.items() if k.startswith("report:")]
    if report:
        say(f"report: {report[0].parent} ({len(report)} tables and pictures)")
    unfinished = [row for row in rows if row.status.startswith(("stopped at", "stopped by",
                                                                 "stopped before"))]  # fmt: skip
    if unfinished and not space.budget.time_budget:
        say(f"{len(unfinished)} trial(s) did not finish; continue with: {resume_hint}")
        return 0
    mark_finished(path, {
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), "best_trial": best.trial_id,
        "best": f"val ppl {best.best_val_ppl:.2f}, test ppl {test} | {describe(best.params)}",
        "model": model_uri, "summary": str(paths["md"]), "trials": outcome_counts(rows),
    })  # fmt: skip
    return 0


def _resume_command(args: argparse.Namespace, path: str) -> str:
    """The whole command that continues this experiment (the experiment pins the space,
    the corpus and the MLflow store; a cluster address is not pinned, so it is repeated)."""
    storage, name = path.rsplit("/", 1)
    command = f"python -m tune_lm.search --resume --storage {storage} --name {name}"
    return command + (f" --address {args.address}" if args.address else "")


def _delete_lost_runs(client: MlflowClient, experiment_id: str, parent_id: str,
                      trial_folders: list[str]) -> None:  # fmt: skip
    from tune_lm.tracking.trial_runs import delete_lost_trial_runs

    try:
        lost = delete_lost_trial_runs(client, experiment_id, parent_id, trial_folders)
    except Exception as error:  # the tracking server may be gone: the search stands
        log.warning("MLflow: could not look for runs of lost trials: %s", error)
        return
    if lost:
        say(f"MLflow: deleted {len(lost)} run(s) of trials lost with a killed driver "
              f"(run again after --resume): {', '.join(lost)}")  # fmt: skip


def _fit_noting_interrupt(tuner: Any) -> tuple[Any, str | None]:
    """``tuner.fit()``, and what interrupted it: "Ctrl-C", "SIGTERM" or None.

    On the first SIGINT Tune stops the trials gracefully (state saved) and puts back the
    handler it found installed: finding ours back afterwards is how we know it happened.
    SIGTERM (``kill``, ``timeout``, Kubernetes) is turned into that same graceful stop."""
    received: list[str] = []

    def noted(signum: int, frame: Any) -> None:  # only runs on a second Ctrl-C
        raise KeyboardInterrupt

    def terminate(signum: int, frame: Any) -> None:
        received.append("SIGTERM")
        signal.raise_signal(signal.SIGINT)  # Tune's own graceful stop

    signal.signal(signal.SIGINT, noted)
    previous_term = signal.signal(signal.SIGTERM, terminate)
    try:
        results = tuner.fit()
    finally:
        interrupted = signal.getsignal(signal.SIGINT) is noted and not int(
            os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0")
        )
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous_term)
    if not (interrupted or received):
        return results, None
    return results, received[0] if received else "Ctrl-C"


def _point(row: TrialRow, space: SearchSpace) -> tuple[float, ...]:
    """A trial's objectives, each to be minimised."""
    values = {M.VAL_PPL: row.best_val_ppl, M.EPOCH_TIME_S: row.epoch_time_s,
              M.TOKENS_PER_S: -row.tokens_per_s}  # fmt: skip
    return tuple(values[name] for name in space.objectives)


def _write_report(folder: Path, path: str) -> dict[str, Path]:
    """The report's tables and pictures (a failure there never fails the search). With
    remote storage the trials' results are copied beside the summary first."""
    from tune_lm.reporting.report import write_report

    try:
        if "://" in path:
            from tune_lm.reporting.sources import fetch_trial_results

            fetch_trial_results(path, folder)
        return {f"report:{p.name}": p for p in write_report(folder)}
    except Exception as error:
        log.warning("the report could not be written: %s", error)
        return {}


def _history(result: Any) -> list[dict[str, float]]:
    frame = result.metrics_dataframe
    if frame is None or frame.empty:
        return []
    keep = [c for c in frame.columns if c in M.EVALUATION_METRICS or c.startswith("test_ppl")]
    return frame[keep].to_dict("records")


def _local_folder(path: str) -> Path:
    """Where the summary goes: the experiment folder, or ./NAME for remote storage."""
    return Path(path) if "://" not in path else Path(path.rsplit("/", 1)[-1])


def cli() -> None:
    run_main(main)


if __name__ == "__main__":
    cli()

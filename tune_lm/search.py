"""``python -m tune_lm.search --space cells.yaml``: a Ray Tune search, ASHA + Optuna.

The steps, in order (nothing is written or started until every check has passed):
validate the flags and the space, prepare (Ray address, GPUs, MLflow store, corpus), run
the trials (Ray, the pinned experiment, its MLflow run), conclude (winner, Pareto set,
test scores), record (summary, report, MLflow, registered model), and print the outcome.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune_lm.cli import parse_args, run_main
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.errors import ConfigError, RefusedAtStart
from tune_lm.tuning import extend as extension
from tune_lm.tuning import warm_start
from tune_lm.tuning.compute import compute_ledger, describe_compute
from tune_lm.tuning.console import console, say
from tune_lm.tuning.driver_lock import ExperimentBusy, driving
from tune_lm.tuning.experiment import (
    REMOTE_MARK,
    Pinned,
    SearchSettings,
    clean_tracking_uri,
    local_copy_folder,
    mark_local_copy,
    read_extensions,
    read_finished,
    remove_lost_trial_folders,
    sqlite_file,
    write_pinned,
)
from tune_lm.tuning.extend import check_tune_state
from tune_lm.tuning.flags import check_flags
from tune_lm.tuning.layout import DRIVER_LOCK, LOG_FILE, SETTINGS_FILE, SPACE_FILE, STUDY_FILE
from tune_lm.tuning.outcome import print_outcome
from tune_lm.tuning.request import (
    build_parser,
    check_corpus,
    check_experiment_folder,
    check_pinned_store,
    continues,
    resolve_experiment,
    resume_command,
)
from tune_lm.tuning.results import Conclusion, conclude
from tune_lm.tuning.space import SearchSpace, grid_warning
from tune_lm.tuning.space_yaml import resolve_space_path
from tune_lm.tuning.summary import describe_plan, scored_before, top_table, write_summary
from tune_lm.tuning.warm_start import say_warm_start, warm_started

log = logging.getLogger(__name__)


@dataclass
class Job:
    """Everything a search needs, resolved and checked before anything starts."""

    args: argparse.Namespace
    name: str
    path: str  # the experiment: a folder, or a storage URI
    space: SearchSpace
    pinned: Pinned | None  # what a resumed experiment started with
    restore: bool  # Tune restores its experiment state
    address: str | None
    tracking_uri: str
    log_checkpoints: str
    progress_every: float
    corpus: Any = None
    warm: Any = None  # a WarmStart (tuning/warm_start.py): --warm-start's priors
    default_store: str = ""  # the store generate/evaluate would use from this folder

    @property
    def local(self) -> bool:
        """The experiment is a local folder (not in remote storage)."""
        return "://" not in self.path

    @property
    def folder(self) -> Path:
        """Where the summary goes: the experiment folder, or ./NAME for remote storage."""
        return Path(self.path) if self.local else local_copy_folder(self.path)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if args.replay is not None:
        from tune_lm.tuning.replay_command import replay

        return replay(args)
    job = validate(args)
    if job is None:  # a finished experiment: nothing to resume
        return 0
    prepare(job)
    return run(job)


def validate(args: argparse.Namespace) -> Job | None:
    """The flags, the space and the experiment they name (exit 2 on any problem, in a
    fraction of a second: nothing heavy is imported yet). None: ``--resume`` of a
    finished search, said and left untouched."""
    check_flags(args)
    name, path, space, pinned = resolve_experiment(args)
    check_experiment_folder(path)
    space, warm = warm_started(args.warm_start, space)
    finished = read_finished(path) if args.resume and not args.extend else None
    if finished is not None:
        say(f"experiment {path} finished on {finished.get('finished_at', '?')}: nothing to "
            f"resume, nothing was changed. Best trial {finished.get('best_trial')} "
            f"({finished.get('best')}); model {finished.get('model') or 'not registered'}; "
            f"summary in {finished.get('summary')}. To search further: --extend N --name "
            f"{name} adds N trials to it, or start a new search with --name NEW_NAME")
        return None
    if notice := grid_warning(space):
        log.warning("%s", notice)
    settings = pinned.settings if pinned else None
    return Job(
        args=args, name=name, path=path, space=space, pinned=pinned, restore=False, warm=warm,
        address=None, tracking_uri="",
        log_checkpoints=settings.log_checkpoints if settings else args.log_checkpoints or "best",
        progress_every=settings.progress_every if settings else args.progress_every or 30.0,
    )  # fmt: skip


def prepare(job: Job) -> None:
    """Everything else that can be wrong, before anything is written or started, cheapest
    first: the disk reserve, the corpus's files and the tracking URI before torch, Ray and
    MLflow are imported (seconds); then the experiment, Ray, the store, the corpus."""
    from tune_lm.lm.corpus_files import check_corpus_files
    from tune_lm.tracking import store
    from tune_lm.tuning import faults
    from tune_lm.tuning.disk_reserve import check_reserve_fits, reserve_bytes

    args, space = job.args, job.space
    settings = job.pinned.settings if job.pinned else None
    reserve_bytes()  # TUNE_LM_MIN_FREE_MB, which every trial reads
    faults.check_env()  # TUNE_LM_FAULTS, which every trial reads
    if job.local:
        check_reserve_fits(job.path)
    data = space.data or TrainConfig.model_fields["data"].default
    given_as = "--data" if args.data else f"{args.space or 'the space'}: field 'data'"
    check_corpus_files(data, given_as=given_as)
    store.limit_http_retries()
    uri = store.move_credentials(args.tracking_uri or store.default_tracking_uri())
    job.tracking_uri = clean_tracking_uri(settings.tracking_uri if settings else uri)
    if settings:
        check_pinned_store(job.tracking_uri)
    store.check_tracking_uri(job.tracking_uri)
    store.check_tracking_server(job.tracking_uri)

    from tune_lm.lm.data import load_corpus
    from tune_lm.tracking.parent_run import check_name_free
    from tune_lm.tuning import capacity
    from tune_lm.tuning import tuner as ray_side

    if args.extend:  # before check_experiment, which restarts a stateless experiment
        check_tune_state(job.path)
    job.restore = ray_side.check_experiment(job.path, resume=continues(args))
    say_warm_start(job.warm)  # once the name is known to be free
    job.address = ray_side.check_address(args.address)  # "auto" resolved to what it names
    ray_side.check_gpus(space, args.address)
    if (settings and not args.tracking_uri and os.environ.get("MLFLOW_TRACKING_URI")
            and clean_tracking_uri(uri) != job.tracking_uri):  # fmt: skip
        say(f"note: MLFLOW_TRACKING_URI ({clean_tracking_uri(uri)}) is not used: this "
            f"experiment logs to the store it started with, {job.tracking_uri}")  # fmt: skip
    job.default_store = clean_tracking_uri(store.move_credentials(store.default_tracking_uri()))
    gone = sqlite_file(job.tracking_uri)
    if not continues(args) and (gone is None or gone.is_file()):
        check_name_free(job.tracking_uri, job.name, job.path)
    corpus = load_corpus(data, given_as=given_as)
    say(f"corpus {corpus.name}: {corpus.ntokens} words, {corpus.train.numel()} train tokens")
    check_corpus(corpus, space, settings, source=space_source(job))
    if job.address is None:
        capacity.check_trial_memory(space, corpus.ntokens, space_source(job), on_cluster=False)
    job.corpus = corpus


def space_source(job: Job) -> str:
    """The space's file, for messages (a resumed experiment's own copy has none)."""
    return job.args.space or "the experiment's space"


def run(job: Job) -> int:
    """The search with every other library's output in the experiment's log (unless
    --verbose); a search refused before it began leaves no folder behind."""
    from tune_lm.tuning import tuner as ray_side

    log_file = job.folder / LOG_FILE
    # The topmost folder the log will create (None: the experiment folder exists).
    made = next((f for f in (job.folder, *job.folder.parents)
                 if not f.exists() and f.parent.exists()), None)  # fmt: skip
    say(f"experiment: {job.path}")
    if not job.args.verbose:
        say(f"log: {log_file.resolve()} (Ray's, MLflow's and Optuna's output; --verbose "
            "shows it here)")  # fmt: skip
    try:  # (a remote experiment is locked through its local copy, ./NAME)
        with driving(job.folder), console.capture(log_file, verbose=job.args.verbose):
            if not job.local:
                mark_local_copy(job.path)
            try:
                return _run_tracked(job)
            finally:
                ray_side.disconnect()  # Ray's last worker lines go to the log, not after it
    except (ConfigError, KeyboardInterrupt) as error:  # before the search began: no folder
        if made is not None and made.is_dir() and not isinstance(error, ExperimentBusy):
            ours = (LOG_FILE, DRIVER_LOCK, REMOTE_MARK, *(
                (SPACE_FILE, SETTINGS_FILE) if isinstance(error, RefusedAtStart) else ()))
            if all(p.name in ours for p in made.rglob("*") if p.is_file()):
                shutil.rmtree(made, ignore_errors=True)
        raise


def _run_tracked(job: Job) -> int:
    """Start or join Ray, pin the experiment, open its MLflow run, and search; the run
    never stays RUNNING when the search fails or is killed."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from tune_lm.tracking.parent_run import end_parent_run, start_parent_run
    from tune_lm.tracking.sqlite_store import create_sqlite_store
    from tune_lm.tracking.store import connect_uri
    from tune_lm.tuning import capacity
    from tune_lm.tuning import tuner as ray_side

    settings = job.pinned.settings if job.pinned else None
    ray_side.connect_ray(job.address)
    capacity.check_trial_fits(job.space)
    if job.address is not None:  # a local Ray's machine was checked before it started
        capacity.check_trial_memory(job.space, job.corpus.ntokens, space_source(job),
                                    on_cluster=True)
    corpus = job.corpus
    # The store first: a driver killed in between leaves no search.json that pins a store
    # which was never made (its --resume was refused as "moved or deleted?").
    create_sqlite_store(job.tracking_uri)  # whole or not at all, even if killed meanwhile
    if settings is None:
        write_pinned(job.path, job.space, SearchSettings(
            data=job.space.data or corpus.name, corpus_name=corpus.name,
            fingerprint=corpus.fingerprint, ntokens=corpus.ntokens,
            tracking_uri=job.tracking_uri, log_checkpoints=job.log_checkpoints,
            progress_every=job.progress_every, experiment=job.path))  # fmt: skip
    mlflow.set_tracking_uri(connect_uri(job.tracking_uri))  # the password back, if any
    client = MlflowClient(connect_uri(job.tracking_uri))
    space_file = resolve_space_path(job.args.space) if job.args.space else None
    experiment_id, parent_id = start_parent_run(client, job.name, job.path, job.space, corpus,
                                                space_file, resume=continues(job.args))  # fmt: skip
    try:
        return search(job, client, experiment_id, parent_id)
    except BaseException as error:
        interrupted = isinstance(error, KeyboardInterrupt)
        if interrupted:  # a second Ctrl-C (`timeout` passes on its group's) must not leave
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run RUNNING: it ends now
        end_parent_run(client, parent_id, killed=interrupted)
        if not interrupted:
            raise
    # A Ctrl-C that Tune's graceful stop did not take: a second one during that stop, or
    # one while the results were being scored and recorded. What the trials saved stays.
    say(f"interrupted (Ctrl-C) before the search had recorded its results; the trials keep "
        f"what they saved. Continue with: {resume_command(job.args, job.path)}")
    return 130


def search(job: Job, client: Any, experiment_id: str, parent_id: str) -> int:
    """Run (or resume) the trials, conclude, record, and print the outcome."""
    from tune_lm.tracking.trial_runs import MLflowTrialLogger
    from tune_lm.tuning import capacity, private_api
    from tune_lm.tuning import tuner as ray_side
    from tune_lm.tuning.progress import ProgressPrinter

    if job.args.extend:
        entry = extension.begin(job.path, job.args.extend)
        job.space = job.space.with_overrides(num_samples=entry["total"])
        say(f"extending {job.name} by {entry['added']} trial(s), to {entry['total']} in all; "
            "the Optuna study, ASHA's rungs and the MLflow run go on from the earlier trials")
    elif job.restore and job.local:
        extension.reapply(job.path)
    space, corpus = job.space, job.corpus
    ledger = ray_side.stop_ledger(job.path)
    trial_logger = MLflowTrialLogger(job.tracking_uri, experiment_id, parent_id, space,
                                     corpus.vocab, job.log_checkpoints, ledger)  # fmt: skip
    progress = ProgressPrinter(space, interval_s=job.progress_every, ledger=ledger)
    tuner = ray_side.build_tuner(space, corpus, job.path, resume=job.restore,
                                 callbacks=[trial_logger, progress], ledger=ledger,
                                 priors=job.warm.priors if job.warm else None)  # fmt: skip
    if job.warm:  # a --resume or --extend does not warm-start again, but keeps the record
        warm_start.keep_record(job.folder, job.warm)
    say(f"MLflow: {job.tracking_uri} (experiment {job.name!r}, run {parent_id}); browse it "
        f"with: mlflow ui --backend-store-uri {shlex.quote(job.tracking_uri)}")
    say(f"search: {describe_plan(space, fits=capacity.trials_at_once(space))}")
    for callback in private_api.tuner_callbacks(tuner):  # a restored Tuner's own copies
        if isinstance(callback, ProgressPrinter):
            callback.retarget(space)  # the trials --extend added count
    results, interrupted = private_api.fit_noting_interrupt(tuner)
    loggers = [c for c in private_api.tuner_callbacks(tuner) if isinstance(c, MLflowTrialLogger)]

    outcomes = ray_side.trial_outcomes(results, space)
    conclusion = conclude(outcomes, space, asha_stops=ledger.stopped(), interrupted=interrupted)
    confirmed, confirm_spend = None, None
    if space.confirm is not None and not interrupted and conclusion.finished:
        from tune_lm.tracking.confirm_runs import confirm_finalists

        confirmed, interrupted, confirm_loggers, confirm_spend = confirm_finalists(
            job, conclusion, experiment_id, parent_id)
        loggers += confirm_loggers
    if conclusion.to_test:
        which = ("the best trial" if len(conclusion.to_test) == 1
                 else f"{len(conclusion.to_test)} trials")  # fmt: skip
        say(f"scoring {which} on the test split (once, on the best-validation weights) ...")
    started = time.monotonic()
    best_model = ray_side.score_on_test(conclusion, outcomes, space, corpus,
                                        known=scored_before(job.folder))  # fmt: skip
    tested = time.monotonic() - started
    spent = compute_ledger([o.history for o in outcomes], space, test_seconds=tested,
                           confirm=confirm_spend)  # fmt: skip
    paths, model_uri, failures = record(job, conclusion, best_model, client, experiment_id,
                                        parent_id, [Path(r.path).name for r in results],
                                        interrupted, confirmed, spent)  # fmt: skip
    failures = [f for logger in loggers for f in logger.failures] + failures
    if failures:
        say(f"MLflow: {len(failures)} call(s) failed; not logged: " + "; ".join(failures[:10]))
    winner = None if interrupted else next((e for e in confirmed or [] if e.get("winner")), None)
    if winner is not None:
        say(f"confirmed winner {winner['trial_id']}: val ppl {winner['val_ppl_mean']:.2f} "
            f"± {winner['val_ppl_sd']:.2f}, test ppl {winner['test_ppl_mean']:.2f} ± "
            f"{winner['test_ppl_sd']:.2f} over seeds {winner['seeds']}")  # fmt: skip
    store = ("" if job.tracking_uri == job.default_store
             else f" --tracking-uri {shlex.quote(job.tracking_uri)}")  # fmt: skip
    return print_outcome(conclusion, paths, model_uri, interrupted, space=job.space,
                         path=job.path, hint=resume_command(job.args, job.path),
                         store_flag=store, confirmed_winner=winner and winner["trial_id"])


def record(job: Job, conclusion: Conclusion, best_model: Any, client: Any,
           experiment_id: str, parent_id: str, trial_folders: list[str],
           interrupted: str | None,
           confirmed: list[dict[str, Any]] | None = None, spent: dict[str, Any] | None = None,
           ) -> tuple[dict[str, Path], str | None, list[str]]:  # fmt: skip
    """The summary (printed and written), the report, and MLflow: lost runs removed,
    trial runs settled, the best model registered, the search's run finished."""
    from tune_lm.reporting.report import write_search_report
    from tune_lm.tracking.parent_run import log_compute, record_results
    from tune_lm.tracking.trial_runs import delete_lost_trial_runs
    from tune_lm.tuning.study_end import fail_unfinished_trials

    space, rows, best, pareto = job.space, conclusion.rows, conclusion.best, conclusion.pareto
    say(top_table(rows))
    warm = job.warm.describe() if job.warm else warm_start.kept_record(job.folder)
    extra = {"warm_start": warm} if warm else {}
    extensions = read_extensions(job.path) if job.local else []
    if extensions:  # --extend: how the experiment grew
        extra["extensions"] = [{k: e.get(k) for k in ("added", "total", "at")}
                               for e in extensions]  # fmt: skip
    paths = write_summary(job.folder, rows, space, best, pareto,
                          confirmed=None if interrupted else confirmed, compute=spent,
                          extra=extra or None)  # fmt: skip
    if spent:
        say(f"compute: {describe_compute(spent)}")
        log_compute(client, parent_id, spent)
    if pareto:
        say(f"Pareto-optimal trials ({', '.join(space.objectives)}):")
        say(top_table(pareto, limit=len(pareto)))
    if not interrupted and job.local:  # before the report, which reads these
        fail_unfinished_trials(Path(job.path))  # every trial Ray knows has finished
        remove_lost_trial_folders(job.path, trial_folders)
    say("writing the report and logging the results to MLflow ...")
    paths.update(write_search_report(job.folder, job.path))
    study = job.folder / STUDY_FILE
    if study.is_file():  # logged with the summary: the report can then be rebuilt from MLflow
        paths["study"] = study
    if not interrupted:  # every trial Ray knows has finished: the rest are ghosts
        lost = delete_lost_trial_runs(client, experiment_id, parent_id, trial_folders)
        if lost:
            say(f"MLflow: deleted {len(lost)} run(s) of trials lost with a killed driver "
                f"(run again after --resume): {', '.join(lost)}")  # fmt: skip
    model_uri, failures = record_results(
        client, name=job.name, experiment_id=experiment_id, parent_id=parent_id,
        plan=describe_plan(space), corpus=job.corpus, rows=rows, best=best,
        best_model=best_model, paths=paths, interrupted=bool(interrupted),
        known_model=extension.unchanged_model(job.path, best.trial_id if best else None)
        if job.local else None,
    )  # fmt: skip
    return paths, model_uri, failures


def cli() -> None:
    """Console-script entry point (``tune-lm-search``)."""
    run_main(main, whole_process=True)


if __name__ == "__main__":
    cli()

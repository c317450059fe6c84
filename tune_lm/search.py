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
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tune_lm import metrics as M
from tune_lm.cli import run_main
from tune_lm.config import TrainConfig, describe_validation_error
from tune_lm.errors import ConfigError, TuneLMError
from tune_lm.report import pareto_front
from tune_lm.space import SearchSpace, load_space, parse_duration, resolve_space_path
from tune_lm.space_checks import grid_warning
from tune_lm.summary import TrialRow, make_row, top_table, write_summary

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
    add("--space", required=True, help="search-space YAML: a path, or a shipped name (cells.yaml)")
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
    add("--log-checkpoints", choices=["best", "all", "none"], default="best",
        help="checkpoints logged to each trial's MLflow run (default: best)")  # fmt: skip
    add("--progress-every", type=float, default=30.0, metavar="SECONDS",
        help="print a progress line this often, and when a trial ends (default: 30)")  # fmt: skip
    add("--smoke", action="store_true", help="a tiny run on the synthetic corpus")
    return parser


def smoke_space(space: SearchSpace) -> SearchSpace:
    """The same space shrunk to seconds: synthetic corpus, 2 short epochs, 2 samples."""
    raw = space.model_dump()
    raw["data"] = "synthetic"
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
    if args.progress_every <= 0:
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


def experiment_path(storage: str, name: str) -> str:
    if "://" in storage:
        return f"{storage.rstrip('/')}/{name}"
    return str(Path(storage).expanduser().resolve() / name)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _validate_flags(args)
    space = load_space(args.space).with_overrides(
        data=args.data, num_samples=args.num_samples, max_epochs=args.max_epochs,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent, time_budget=args.time_budget, seed=args.seed,
        max_failures=args.max_failures,
    )  # fmt: skip
    if args.smoke:
        space = smoke_space(space)
    notice = grid_warning(space)
    if notice:
        log.warning("%s", notice)
    name = args.name or space.name or "search"
    path = experiment_path(args.storage, name)
    # Bad flags and spaces have failed by now, in a fraction of a second: Ray, MLflow and
    # torch take seconds to import (importing them starts nothing).
    import mlflow
    from mlflow.tracking import MlflowClient

    from tune_lm import tuner as ray_side
    from tune_lm.data import load_corpus
    from tune_lm.parent_run import (
        check_tracking_server,
        default_tracking_uri,
        move_credentials,
        start_parent_run,
    )
    from tune_lm.progress import ProgressPrinter
    from tune_lm.searchers import STUDY_FILE
    from tune_lm.tracking import MLflowTrialLogger, limit_http_retries
    from tune_lm.trainable import test_perplexity

    # Everything that can be wrong is checked before anything is written or started.
    restore = ray_side.check_experiment(path, resume=args.resume)
    ray_side.check_address(args.address)
    ray_side.check_gpus(space, args.address)
    limit_http_retries()
    tracking_uri = move_credentials(args.tracking_uri or default_tracking_uri())
    check_tracking_server(tracking_uri)
    corpus = load_corpus(space.data or TrainConfig.model_fields["data"].default)
    print(f"corpus {corpus.name}: {corpus.ntokens} words, {corpus.train.numel()} train tokens")
    ray_side.connect_ray(args.address)  # before the first write: "auto" may find no cluster
    space = _pin_space(space, path, resume=args.resume)

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment_id, parent_id = start_parent_run(
        client, name, path, space, corpus, resolve_space_path(args.space), resume=args.resume
    )
    trial_logger = MLflowTrialLogger(
        tracking_uri, experiment_id, parent_id, space, corpus.vocab, args.log_checkpoints
    )
    progress = ProgressPrinter(space, interval_s=args.progress_every)
    tuner = ray_side.build_tuner(
        space, corpus, path, resume=restore, callbacks=[trial_logger, progress]
    )
    print(f"experiment: {path}\nMLflow: {tracking_uri} (experiment {name!r}, run {parent_id})")
    results, interrupted = _fit_noting_interrupt(tuner)
    loggers = [c for c in ray_side.tuner_callbacks(tuner) if isinstance(c, MLflowTrialLogger)]

    # A trial Tune created but never started (e.g. after Ctrl-C) has no config: no row.
    started = [r for r in results if r.config]
    rows = [
        make_row(
            r.metrics.get("trial_id", r.path),
            space.searched(r.config),
            _history(r),
            str(r.error) if r.error else None,
            space,
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
    for row in to_test:
        found = ray_side.best_weights(by_id[row.trial_id], space)
        if found:
            row.test_ppl = test_perplexity(found[0], corpus, found[1])
            best_model = found if row is best else best_model
    print(top_table(rows))
    paths = write_summary(_local_folder(path), rows, space, best, pareto)
    if pareto:
        print(f"Pareto-optimal trials ({', '.join(space.objectives)}):")
        print(top_table(pareto, limit=len(pareto)))
    paths.update(_write_report(_local_folder(path)))
    study = _local_folder(path) / STUDY_FILE
    if study.is_file():  # logged with the summary: the report can then be rebuilt from MLflow
        paths["study"] = study
    if not interrupted:  # every trial Ray knows has finished: the rest are ghosts
        _delete_lost_runs(client, experiment_id, parent_id, [Path(r.path).name for r in results])
    _report_to_mlflow(client, parent_id, name, best, best_model, paths, corpus, loggers,
                      interrupted=interrupted)  # fmt: skip
    resume_hint = (f"python -m tune_lm.search --space {args.space} --storage {args.storage} "
                   f"--name {name} --resume")  # fmt: skip
    if interrupted:
        print(f"interrupted (Ctrl-C): {len(finished)} trial(s) with results, summary in "
              f"{paths['md']}; running trials stopped at their last checkpoint. "
              f"Continue with: {resume_hint}")  # fmt: skip
        return 130
    if best is None:
        raise TuneLMError(
            f"every trial failed ({len(rows)}); see the errors above and the trial logs "
            f"under {path}"
        )
    test = f"{best.test_ppl:.2f}" if best.test_ppl is not None else "n/a"
    print(f"best trial {best.trial_id}: val ppl {best.best_val_ppl:.2f}, test ppl {test} | "
          f"{best.params}")  # fmt: skip
    if "grid" in paths:
        print(paths["grid"].read_text())
    print("summary: " + ", ".join(str(p) for k, p in paths.items() if ":" not in k))
    report = [p for k, p in paths.items() if k.startswith("report:")]
    if report:
        print(f"report: {report[0].parent} ({len(report)} tables and pictures)")
    unfinished = [row for row in rows if row.status.startswith("stopped at")
                  or row.status.startswith("stopped before")]  # fmt: skip
    if unfinished and not space.budget.time_budget:
        print(f"{len(unfinished)} trial(s) did not finish; continue with: {resume_hint}")
    return 0


def _delete_lost_runs(client: MlflowClient, experiment_id: str, parent_id: str,
                      trial_folders: list[str]) -> None:  # fmt: skip
    from tune_lm.tracking import delete_lost_trial_runs

    try:
        lost = delete_lost_trial_runs(client, experiment_id, parent_id, trial_folders)
    except Exception as error:  # the tracking server may be gone: the search stands
        log.warning("MLflow: could not look for runs of lost trials: %s", error)
        return
    if lost:
        print(f"MLflow: deleted {len(lost)} run(s) of trials lost with a killed driver "
              f"(run again after --resume): {', '.join(lost)}")  # fmt: skip


def _fit_noting_interrupt(tuner: Any) -> tuple[Any, bool]:
    """``tuner.fit()``, and whether Ctrl-C (SIGINT) ended it. On the first SIGINT Tune
    stops the trials gracefully (state saved) and puts back the handler it found
    installed: finding ours back afterwards is how we know it happened."""

    def noted(signum: int, frame: Any) -> None:  # only runs on a second Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, noted)
    try:
        results = tuner.fit()
    finally:
        interrupted = signal.getsignal(signal.SIGINT) is noted and not int(
            os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0")
        )
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return results, interrupted


def _report_to_mlflow(
    client: MlflowClient, parent_id: str, name: str, best: TrialRow | None,
    best_model: tuple | None, paths: dict[str, Path], corpus: Any, loggers: list,
    *, interrupted: bool = False,
) -> None:  # fmt: skip
    """Summary, best trial and registered best model into the parent run; then say
    what could not be logged (a tracking server that went away does not lose the search)."""
    from tune_lm.mlflow_model import log_best_model, registered_name
    from tune_lm.parent_run import finish_parent_run

    failures = [failure for logger in loggers for failure in logger.failures]
    try:
        if best is not None and best_model is not None:
            metrics = {M.BEST_VAL_PPL: best.best_val_ppl, M.TEST_PPL: best.test_ppl}
            uri = log_best_model(parent_id, name, best_model[0], corpus.vocab, best_model[1],
                                 metrics)  # fmt: skip
            print(f"best model: {uri} (registered as {registered_name(name)!r})")
        # Interrupted: the best so far is not the search's answer (params are write-once).
        finish_parent_run(
            client, parent_id, None if interrupted else best, list(paths.values()),
            failed=best is None, interrupted=interrupted,
        )  # fmt: skip
    except Exception as error:  # keep the search's own results; say what is missing
        failures.append(f"finish the search's run: {type(error).__name__}: {error}")
    if failures:
        print(f"MLflow: {len(failures)} call(s) failed; not logged: " + "; ".join(failures[:10]))


def _point(row: TrialRow, space: SearchSpace) -> tuple[float, ...]:
    """A trial's objectives, each to be minimised."""
    values = {M.VAL_PPL: row.best_val_ppl, M.EPOCH_TIME_S: row.epoch_time_s,
              M.TOKENS_PER_S: -row.tokens_per_s}  # fmt: skip
    return tuple(values[name] for name in space.objectives)


def _write_report(folder: Path) -> dict[str, Path]:
    """The report's tables and pictures (a failure there never fails the search)."""
    from tune_lm.report import write_report

    try:
        return {f"report:{p.name}": p for p in write_report(folder)}
    except Exception as error:
        log.warning("the report could not be written: %s", error)
        return {}


SPACE_FILE = "space.json"  # the validated space, as the experiment started with it


def _pin_space(space: SearchSpace, path: str, *, resume: bool) -> SearchSpace:
    """A resumed search runs with the space it started with, whatever --space says now."""
    if "://" in path:
        return space
    saved = Path(path) / SPACE_FILE
    if resume and saved.is_file():
        try:
            original = SearchSpace.model_validate_json(saved.read_text())
        except ValidationError as error:  # saved by a version that checked less (e.g. R < 2)
            raise ConfigError(
                f"--resume: the space saved with the experiment, {saved}, is not valid for "
                f"this version of tune_lm ({describe_validation_error(error)}); start a new "
                "experiment with another --name"
            ) from None
        if original != space:
            log.warning("--resume: using the space the experiment started with (%s)", saved)
        return original
    if not resume and not saved.exists():
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(space.model_dump_json(indent=2) + "\n")
    return space


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

"""What a search command asks for: its flags checked, the experiment it names (new, or
resumed exactly as it started), and the command that continues it. Nothing here starts
Ray or MLflow; every refusal names the flag and the fix."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Any

from tune_lm.lm.atomic import probe_writable
from tune_lm.lm.errors import ConfigError, TuneLMError
from tune_lm.tuning.experiment import (
    Pinned,
    check_local_copy,
    clean_tracking_uri,
    plain_sqlite,
    read_pinned,
    resume_conflicts,
    sqlite_file,
)
from tune_lm.tuning.extend import check_extendable, extended
from tune_lm.tuning.layout import LOG_FILE, REPLAY_MARK, SPACE_FILE
from tune_lm.tuning.smoke import smoke_space
from tune_lm.tuning.space import SearchSpace
from tune_lm.tuning.space_yaml import load_space

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
    add("--confirm", type=confirm_flag, metavar="K,S",
        help="after the search, train its K best configurations again with S fresh seeds "
             "each and compare them with their noise (the space's confirm: {top_k: K, "
             "seeds: S})")  # fmt: skip
    add("--address", default=os.environ.get("RAY_ADDRESS"),
        help="join a Ray cluster (auto, ray://host:10001); default: a local Ray")  # fmt: skip
    add("--storage", default=DEFAULT_STORAGE,
        help=f"experiment storage: a folder or s3://... (default ./{DEFAULT_STORAGE})")  # fmt: skip
    add("--name", help="experiment name (default: the space's name)")
    add("--resume", action="store_true", help="continue the experiment --name after a stop")
    add("--extend", type=positive_count, metavar="N",
        help="add N trials to the experiment --name, finished or not: same Ray "
             "experiment, Optuna study (its sampler learns from the earlier trials) and "
             "MLflow run")  # fmt: skip
    add("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    add("--log-checkpoints", choices=["best", "all", "none"],
        help="checkpoints logged to each trial's MLflow run (default: best)")  # fmt: skip
    add("--progress-every", type=float, metavar="SECONDS",
        help="print a progress line this often, and when a trial ends (default: 30)")  # fmt: skip
    add("--smoke", action="store_true",
        help="a tiny run of the space on the synthetic corpus, named NAME-smoke")  # fmt: skip
    add("--warm-start", metavar="EXPERIMENT",
        help="seed a new search with an earlier one's results (its folder): its best "
             "configurations run first, its trials inform Optuna's sampler where the "
             "spaces agree; what cannot transfer is listed")  # fmt: skip
    add("--replay", metavar="CURVES",
        help="rehearse the search on recorded learning curves instead of training: a table "
             "(CSV/Parquet, as benchmarks/record_curves.py writes) or an earlier experiment's "
             "folder. The real scheduler and searcher run; each trial replays the nearest "
             "recorded configuration in simulated time; nothing is logged to MLflow")  # fmt: skip
    add("--replay-speed", type=float, metavar="X",
        help="with --replay: replay in wall-clock time, X recorded seconds per real second "
             "(default: a virtual clock, results in recorded-time order as fast as Ray "
             "takes them)")  # fmt: skip
    add("--verbose", action="store_true",
        help=f"show Ray's status tables and Ray's, MLflow's and Optuna's messages here "
             f"(default: in {LOG_FILE} in the experiment folder)")  # fmt: skip
    return parser


def positive_count(text: str) -> int:
    """A whole number of at least 1 (``--extend N``)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of trials to add: give a "
                                         "whole number of at least 1, e.g. --extend 8")  # fmt: skip
    return int(text)


def continues(args: argparse.Namespace) -> bool:
    """Whether the command goes on with an existing experiment (--resume or --extend)."""
    return bool(args.resume or getattr(args, "extend", None))


def confirm_flag(text: str) -> dict[str, int]:
    """``--confirm K,S`` -> the space's ``confirm: {top_k: K, seeds: S}``."""
    parts = text.replace(" ", "").split(",")
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not K,S: give the number of best configurations to confirm and "
            f"the fresh seeds for each, e.g. --confirm 3,2")  # fmt: skip
    return {"top_k": int(parts[0]), "seeds": int(parts[1])}


def check_storage(storage: str) -> None:
    """--storage: a folder that can be made and written, or a URI pyarrow (Ray's
    filesystem layer) can open; checked before anything is written."""
    if not storage.strip():
        raise ConfigError("--storage '' is empty: give a folder (default ./tune_lm_runs) or a "
                          "URI such as s3://bucket/path")  # fmt: skip
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


def check_experiment_folder(path: str) -> None:
    """An experiment folder that is already there must be a folder this user can write
    (its log is the first thing a search writes)."""
    folder = Path(path)
    if "://" in path:
        check_local_copy(path)
        return
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ConfigError(f"the experiment's path {path} is a file, not a folder; give another "
                          "--name or --storage")  # fmt: skip
    try:
        probe_writable(folder / "probe")
    except OSError as error:
        raise ConfigError(f"the experiment folder {path} exists but cannot be written "
                          f"({error.strerror or error}); fix its permissions, or give another "
                          "--name or --storage") from None  # fmt: skip


def check_pinned_store(uri: str) -> None:
    """A resumed experiment's SQLite store (pinned in its search.json) is still there:
    MLflow would start an empty one in its place."""
    gone = sqlite_file(uri)
    if gone is not None and not gone.is_file():
        raise ConfigError(
            f"this experiment logs to MLflow at {uri} (pinned in its search.json, not from a "
            f"flag), and {gone} is not there any more: moved or deleted? An experiment and "
            "its store cannot be moved yet (Ray Tune's and Optuna's saved state name their "
            "absolute paths): put them back where they were to continue it, or start a new "
            "search with --name NEW_NAME")  # fmt: skip


def experiment_path(storage: str, name: str) -> str:
    if "://" in storage:
        return f"{storage.rstrip('/')}/{name}"
    return str(Path(storage).expanduser().resolve() / name)


def space_from_args(args: argparse.Namespace) -> SearchSpace:
    space = load_space(args.space).with_overrides(**overrides(args))
    if not args.smoke:
        return space
    if args.address or not space.resources.gpus_per_trial:
        return smoke_space(space)
    import torch  # a smoke run on a CPU-only machine drops the space's GPU requests

    return smoke_space(space, gpus=torch.cuda.is_available())


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return dict(data=args.data, num_samples=args.num_samples, max_epochs=args.max_epochs,
                cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                max_concurrent=args.max_concurrent, time_budget=args.time_budget,
                seed=args.seed, max_failures=args.max_failures,
                confirm=args.confirm)  # fmt: skip


def resolve_experiment(args: argparse.Namespace) -> tuple[str, str, SearchSpace, Pinned | None]:
    """(name, path, space, what the experiment pinned): on --resume the space and the
    settings the experiment started with, and a refusal of any flag that disagrees."""
    if not continues(args):
        if not args.space:
            raise ConfigError("--space is required (a YAML file or a shipped name, e.g. "
                              "quick.yaml); only --resume can do without it")  # fmt: skip
        space = space_from_args(args)
        name = args.name or space.name or "search"
        if args.replay and not name.endswith("-replay"):  # never a real search's experiment
            name = f"{name}-replay"
        return name, experiment_path(args.storage, name), absolute_data(space), None
    flag = "--resume" if args.resume else "--extend"
    name = args.name or (space_from_args(args).name if args.space else None)
    if not name:
        raise ConfigError(f"{flag} needs --name (the experiment's name), or the --space "
                          "it was started with")  # fmt: skip
    path = experiment_path(args.storage, name)
    if "://" not in path and (Path(path) / REPLAY_MARK).is_file():
        raise ConfigError(f"{flag}: {path} is a rehearsal (--replay): it trained nothing, so "
                          "there is nothing to continue. Rehearse again with --replay (a new "
                          "--name, or remove that folder), or run the search itself without "
                          "--replay")  # fmt: skip
    pinned = read_pinned(path)
    if pinned is None and args.extend:
        raise ConfigError(f"--extend: no experiment with a saved space at {path}. Check "
                          "--name and --storage, or start it without --extend")  # fmt: skip
    if pinned is None:  # stopped before it pinned anything: start-up is repeated
        if not args.space:
            raise ConfigError(
                f"--resume: no experiment with a saved space at {path}. Check --name and "
                "--storage; if it was stopped during start-up, give its --space too"
            )
        return name, path, absolute_data(space_from_args(args)), None
    check_not_copied(pinned, path, flag)
    if pinned.edited:
        raise ConfigError(
            f"{flag}: {path}/{SPACE_FILE} was changed after the search started. Ray Tune and "
            "Optuna go on with their own saved copy of the space, so the change would be "
            "reported but not searched. Put the file back as it was, or start a new search "
            f"with the changed space, seeded with this one: --space SPACE --warm-start {path} "
            "--name NEW_NAME")
    refuse_changes(args, pinned)
    if args.extend:
        check_extendable(pinned.space, path)
    return name, path, extended(pinned.space, path), pinned


def check_not_copied(pinned: Pinned, path: str, flag: str) -> None:
    """An experiment continues where it was made: a copy's trials would log into the
    original's MLflow runs (the pinned store and run ids), mixing the two."""
    made_at = pinned.settings.experiment if pinned.settings else ""
    if made_at and made_at != path:
        raise ConfigError(
            f"{flag}: the experiment at {path} was made at {made_at} and copied or moved "
            f"here. It cannot be continued from here: its trials would log into the MLflow "
            f"runs of the original (in {pinned.settings.tracking_uri}), mixing the two. "
            f"Continue it where it was made, or start a new search seeded with this one's "
            f"trials: --space SPACE --warm-start {path} --name NEW_NAME")


def refuse_changes(args: argparse.Namespace, pinned: Pinned) -> None:
    """--resume (and --extend) continue an experiment as it started: a flag given anew
    that disagrees would be applied by half of it (Ray restores its own copy): refused."""
    space, conflicts = pinned.space, []
    for key, value in overrides(args).items():
        if value is None:
            continue
        if key == "data" and Path(value).expanduser().is_dir():
            value = str(Path(value).expanduser().resolve())
        try:
            same = space.with_overrides(**{key: value}) == space
        except TuneLMError:
            same = False
        if not same:
            shown = (f"{value['top_k']},{value['seeds']}" if key == "confirm"
                     else value)  # as typed (K,S), not as a dict  # fmt: skip
            conflicts.append(f"--{key.replace('_', '-')} {shown}")
    if args.smoke and smoke_space(space) != space:
        conflicts.append("--smoke")
    if args.space:
        try:
            same_space = absolute_data(space_from_args(args)) == space
        except TuneLMError:
            same_space = False
        if not same_space:
            conflicts.append(f"--space {args.space} (it differs from the experiment's own "
                             f"copy, {SPACE_FILE})")  # fmt: skip
    settings = pinned.settings
    if settings is not None:
        uri = clean_tracking_uri(plain_sqlite(args.tracking_uri)) if args.tracking_uri else None
        conflicts += resume_conflicts({
            "--tracking-uri": (uri, settings.tracking_uri),
            "--log-checkpoints": (args.log_checkpoints, settings.log_checkpoints),
            "--progress-every": (args.progress_every, settings.progress_every),
        })  # fmt: skip
    if conflicts:
        raise ConfigError(
            f"{'--resume' if args.resume else '--extend'} continues the experiment exactly "
            "as it started (same space, corpus "
            f"and MLflow store), but these flags disagree with it: {'; '.join(conflicts)}. "
            "Leave them out (the experiment keeps its own copy of each), or start a new "
            "search with --name NEW_NAME"
        )


def absolute_data(space: SearchSpace) -> SearchSpace:
    """A corpus given as a folder, made absolute: a resume from elsewhere finds it."""
    if space.data and Path(space.data).expanduser().is_dir():
        return space.with_overrides(data=str(Path(space.data).expanduser().resolve()))
    return space


def resume_command(args: argparse.Namespace, path: str) -> str:
    """The whole command that continues this experiment (the experiment pins the space,
    the corpus and the MLflow store; a cluster address is not pinned, so it is repeated)."""
    storage, name = path.rsplit("/", 1)
    command = ["python", "-m", "tune_lm.search", "--resume", "--storage", storage, "--name", name]
    command += ["--address", args.address] if args.address else []
    return shlex.join(command)  # pasted into a shell as it is: spaces and quotes quoted


def check_corpus(corpus: Any, space: SearchSpace, settings: Any, source: str = "the space"
                 ) -> None:  # fmt: skip
    """The corpus can feed the space's largest batch and take its adaptive cutoffs, and a
    resumed search trains on the corpus it started with (``settings``: what the experiment
    pinned, or None; ``source``: the space file, for messages)."""
    batch_size = space.largest("batch_size")
    if corpus.train.numel() < 2 * batch_size:  # what every trial's fit() would refuse
        raise ConfigError(
            f"corpus {corpus.name!r} has {corpus.train.numel()} training tokens, fewer than "
            f"one batch of the largest batch_size in the space ({batch_size}) needs "
            f"({2 * batch_size}). Lower batch_size in the space, or use a larger corpus"
        )
    from tune_lm.lm.model import adaptive_problem  # torch: the corpus has loaded it

    for sampled in space.corners():  # cutoffs the vocabulary cannot take fail every trial
        config = space.trial_config(sampled)
        if config.decoder == "adaptive" and config.adaptive_cutoffs:
            problem = adaptive_problem(list(config.adaptive_cutoffs), corpus.ntokens,
                                       config.nhid)  # fmt: skip
            if problem:
                where = "parameters" if "adaptive_cutoffs" in space.parameters else "fixed"
                raise ConfigError(
                    f"{source}: field '{where}.adaptive_cutoffs': with corpus {corpus.name!r} "
                    f"({corpus.ntokens} words), {problem}. Change the cutoffs, or leave them out "
                    "(tune_lm then picks them from the vocabulary)")  # fmt: skip
    if settings is not None and corpus.fingerprint != settings.fingerprint:
        raise ConfigError(
            f"--resume: the corpus {settings.data!r} is not the one this experiment started "
            f"with (its files changed: fingerprint {corpus.fingerprint[:12]} now, "
            f"{settings.fingerprint[:12]} then). A resumed search must train on the corpus "
            "it started with: restore those files, or start a new search with --name"
        )

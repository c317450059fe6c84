"""A search command's flags checked on their own, before any space is read: each that
overrides a space field by that field's own limits, and the combinations that cannot go
together (``--replay`` with what it does not do, ``--smoke`` with what it sets itself)."""

from __future__ import annotations

import argparse
import math

from tune_lm.lm.errors import ConfigError, short_repr
from tune_lm.tuning.layout import experiment_name_problem
from tune_lm.tuning.request import check_storage, continues
from tune_lm.tuning.smoke import SMOKE_SETS
from tune_lm.tuning.space import check_override

OVERRIDE_FLAGS = ("num_samples", "max_epochs", "max_concurrent", "max_failures",
                  "cpus_per_trial", "gpus_per_trial", "time_budget", "seed")  # fmt: skip


def check_flags(args: argparse.Namespace) -> None:
    """Every flag, before any space is read: the ones that override a space field by that
    field's own limits (one source of the limits), the others here."""
    for key in OVERRIDE_FLAGS:  # each against the limits of the space field it sets
        if getattr(args, key) is not None:
            check_override(key, getattr(args, key))
    if args.progress_every is not None and not 1 <= args.progress_every < math.inf:
        raise ConfigError(f"--progress-every is the seconds between progress lines: at least 1, "
                          f"got {args.progress_every}")  # fmt: skip
    if args.resume and args.extend:
        raise ConfigError("--resume and --extend cannot go together: --resume continues an "
                          "interrupted search as it was, --extend adds trials (and continues "
                          "it too). Give one of them")  # fmt: skip
    check_replay_flags(args)
    if args.warm_start is not None and continues(args):
        flag = "--resume" if args.resume else "--extend"
        raise ConfigError(f"--warm-start seeds a new search; {flag} goes on with one that was "
                          "seeded when it started (its study holds the earlier trials). Drop "
                          "--warm-start, or start a new search with --name NEW_NAME")  # fmt: skip
    if args.extend and args.smoke:
        raise ConfigError("--extend adds trials to an experiment; --smoke starts a new tiny "
                          "one. Drop one of them")  # fmt: skip
    if args.smoke:  # what --smoke sets itself: a flag for it would be dropped unsaid
        dropped = [flag for flag, value in SMOKE_SETS.items() if getattr(args, value) is not None]
        if dropped:
            raise ConfigError(f"--smoke runs the space shrunk to seconds (2 trials of 2 epochs "
                              f"on the synthetic corpus, no time budget), so {', '.join(dropped)} "
                              "would have no effect: drop them, or drop --smoke")  # fmt: skip
    check_storage(args.storage)
    if args.tracking_uri is not None and not args.tracking_uri.strip():
        raise ConfigError("--tracking-uri '' is empty: give sqlite:///PATH/mlflow.db or "
                          "http(s)://HOST:PORT, or leave the flag out for MLFLOW_TRACKING_URI "
                          "or ./mlflow.db")  # fmt: skip
    if args.data is not None and not args.data.strip():
        raise ConfigError("--data '' is empty: give wikitext-2, ptb, synthetic or a corpus "
                          "folder, or leave the flag out to use the space's data")  # fmt: skip
    problem = experiment_name_problem(args.name) if args.name is not None else None
    if problem:
        raise ConfigError(f"--name {short_repr(args.name)} {problem}")


NOT_WITH_REPLAY = {"resume": "--resume", "extend": "--extend", "smoke": "--smoke",
                   "tracking_uri": "--tracking-uri", "log_checkpoints": "--log-checkpoints",
                   "data": "--data", "confirm": "--confirm"}  # fmt: skip


def check_replay_flags(args: argparse.Namespace) -> None:
    """--replay rehearses a new search: no training, data, MLflow or resume."""
    if args.replay is None:
        if args.replay_speed is not None:
            raise ConfigError("--replay-speed takes effect only with --replay CURVES; add "
                              "--replay or remove it")  # fmt: skip
        return
    given = [flag for key, flag in NOT_WITH_REPLAY.items() if getattr(args, key, None)]
    if given:
        raise ConfigError(f"--replay rehearses a new search on recorded curves: it trains "
                          f"nothing, reads no corpus, logs nothing to MLflow and cannot be "
                          f"resumed, so {', '.join(given)} cannot go with it. Remove "
                          f"{'it' if len(given) == 1 else 'them'}, or drop --replay")  # fmt: skip
    if "://" in args.storage:
        raise ConfigError(f"--replay writes its experiment to a local folder; --storage "
                          f"{args.storage} is remote. Give a local folder")  # fmt: skip
    speed = args.replay_speed
    if speed is not None and not 0 < speed < math.inf:
        raise ConfigError(f"--replay-speed must be a positive number (recorded seconds per "
                          f"replayed second, e.g. 100), got {speed}")  # fmt: skip

"""Shared command-line plumbing: config flags from TrainConfig, user errors -> exit 2."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import sys
import threading
import typing
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from tune_lm.lm.config import TrainConfig
from tune_lm.lm.errors import ConfigError, TuneLMError


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One flag per TrainConfig field (``batch_size`` -> ``--batch-size``).

    Flags default to None so that only the ones given override the config defaults;
    the help shows each field's real default.
    """
    for name, info in TrainConfig.model_fields.items():
        if name in skip:
            continue
        help_text = f"{info.description} (default: {info.default})"
        annotation = info.annotation
        if annotation is bool:
            parser.add_argument(flag_name(name), action="store_true", default=None, help=help_text)
            continue
        if any(typing.get_origin(arg) is list for arg in typing.get_args(annotation)):
            parser.add_argument(
                flag_name(name), type=int, nargs="+", default=None, metavar="N", help=help_text
            )
            continue
        is_choice = typing.get_origin(annotation) is typing.Literal
        choices = typing.get_args(annotation) if is_choice else None
        parser.add_argument(
            flag_name(name),
            type=_scalar_type(annotation),
            choices=choices,
            default=None,
            metavar=None if choices else name.upper(),
            help=help_text,
        )


def _scalar_type(annotation: Any) -> Callable[[str], Any]:
    if typing.get_origin(annotation) is typing.Literal:
        return str
    for candidate in (int, float):
        if annotation is candidate or candidate in typing.get_args(annotation):
            return candidate
    return str


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> TrainConfig:
    """TrainConfig from ``base`` overridden by the config flags that were given."""
    values = dict(base or {})
    for name in TrainConfig.model_fields:
        given = getattr(args, name, None)
        if given is not None:
            values[name] = given
    config = TrainConfig.from_dict(values, source="command line", label=flag_name)
    if getattr(args, "adaptive_cutoffs", None) is not None and config.decoder != "adaptive":
        raise ConfigError(f"--adaptive-cutoffs applies to --decoder adaptive only (the "
                          f"{config.decoder} softmax has no clusters, so it would be ignored): "
                          "add --decoder adaptive, or drop it")  # fmt: skip
    return config


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that a value beginning with a dash is the value
    of the flag before it, as ``--flag=VALUE`` is (``--time-budget -5m``, ``--name -x``).
    argparse takes such a value for a flag and answers "expected one argument", so the
    flag's own check never gets to say what is wrong with the value. A known flag after
    a flag is still a missing value (``--name --resume``). Flags are never abbreviated in
    tune_lm (``allow_abbrev=False``), so a flag is exactly one of the parser's strings."""
    argv = list(sys.argv[1:] if argv is None else argv)
    known = parser._option_string_actions  # noqa: SLF001 - argparse's table of flags
    takes_one = {flag for flag, action in known.items() if action.nargs is None}
    joined: list[str] = []
    while argv:
        token = argv.pop(0)
        if token == "--":
            joined += [token, *argv]
            break
        value = argv[0] if argv else ""
        if (token in takes_one and value.startswith("-") and value != "--"
                and value.split("=", 1)[0] not in known):  # fmt: skip
            joined.append(f"{token}={argv.pop(0)}")
        else:
            joined.append(token)
    return _home_expanded(parser.parse_args(joined))


# Flags whose value is a path (a file, a folder, or a name that may be one).
PATH_FLAGS = ("save", "metrics_json", "space", "checkpoint", "storage", "data", "out",
              "replay", "warm_start", "experiment")  # fmt: skip


def _home_expanded(args: argparse.Namespace) -> argparse.Namespace:
    """``~`` and ``~user`` at the start of a path flag mean the home folder, as the shell
    would have made them: a quoted ``'~/m.pt'`` or ``--save=~/m.pt`` reaches tune_lm as it
    is (the shell expands neither). Every check and every write then sees one path; a
    literal ``./~`` folder is never made."""
    for name in PATH_FLAGS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value.startswith("~"):
            setattr(args, name, os.path.expanduser(value))
    return args


def run_main(
    main: Callable[[Sequence[str] | None], int],
    argv: Sequence[str] | None = None,
    *,
    whole_process: bool = False,
) -> None:
    """Run a CLI ``main``: a :class:`TuneLMError` prints one paragraph and exits 2; a
    Ctrl-C that ``main`` does not handle itself (during start-up or the last clean-up)
    prints one line and exits 130, without a traceback. ``whole_process`` (the console
    scripts and ``python -m``): the process then ends through :func:`exit_process`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("torch").setLevel(logging.WARNING)  # its INFO statistics at exit
    # MLflow 3's usage telemetry writes ~/.config/mlflow/telemetry.json when MLflow loads
    # (even for a command refused as bad input, which must write nothing) and reports to
    # MLflow's servers: off unless the user turns it on (MLFLOW_DISABLE_TELEMETRY=false).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        code = main(argv)
    except TuneLMError as error:
        print(f"error: {error}", file=sys.stderr)
        code = error.exit_code
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        code = 130
    if whole_process:
        exit_process(code)
    sys.exit(code)


def exit_process(code: int) -> NoReturn:
    """End a command's process once its work is done: the exit handlers run (logging's
    flush, MLflow's, Ray's, temporary folders' clean-up), the console is flushed, and then
    the process ends without the interpreter's teardown of every loaded module, which
    costs 1-2 s with torch and MLflow loaded (measured after a search) and does nothing
    a user can see. A non-daemon thread still running gets the normal exit, which waits
    for it."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.main_thread()):  # fmt: skip
        sys.exit(code)
    atexit._run_exitfuncs()  # noqa: SLF001 - CPython's own exit handlers, run as at exit
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed console (SIGHUP, a pipe)
            stream.flush()
    os._exit(code)

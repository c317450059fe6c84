"""``search --replay CURVES``: the search rehearsed on recorded curves (no training, no
MLflow), in a folder of its own (``NAME-replay``, marked as a rehearsal: nothing there
can be resumed or extended)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tune_lm.lm.errors import ConfigError
from tune_lm.tuning.console import console, say
from tune_lm.tuning.flags import check_flags
from tune_lm.tuning.layout import LOG_FILE, REPLAY_MARK
from tune_lm.tuning.request import resolve_experiment
from tune_lm.tuning.summary import describe_plan
from tune_lm.tuning.warm_start import say_warm_start, warm_started


def replay(args: argparse.Namespace) -> int:
    """The rehearsal's summary and what the search would have cost."""
    check_flags(args)
    name, path, space, _ = resolve_experiment(args)
    space, warm = warm_started(args.warm_start, space)
    if (Path(path) / REPLAY_MARK).is_file():
        raise ConfigError(f"the rehearsal {path} exists already (an earlier --replay). "
                          "Rehearse again under another --name, or remove that folder")
    from tune_lm.tuning.replay import load_curves

    curves = load_curves(args.replay)
    curves.check_fits(space)
    from tune_lm.tuning.rehearsal import report_rehearsal, run_rehearsal  # Ray: seconds
    from tune_lm.tuning.tuner import check_address, check_experiment

    check_experiment(path, resume=False)
    address = check_address(args.address)
    say_warm_start(warm)
    say(f"replaying {space.name or name} on {len(curves.trials)} recorded trials from "
        f"{curves.source} (nearest configuration; nothing is trained or logged to MLflow)")
    say(f"experiment: {path}")
    say(f"search: {describe_plan(space)}")
    if space.confirm is not None:
        say("note: the space's confirm: section is not rehearsed (a replay trains nothing "
            "with fresh seeds)")  # fmt: skip
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REPLAY_MARK).write_text(json.dumps({"curves": str(curves.source)}) + "\n")
    with console.capture(folder / LOG_FILE, verbose=args.verbose):
        rehearsal, rows = run_rehearsal(space, curves, path, address=address,
                                        priors=warm.priors if warm else None,
                                        speed=args.replay_speed,
                                        progress_every=args.progress_every or 30.0)  # fmt: skip
    for line in report_rehearsal(rehearsal, rows, space, folder,
                                 warm.describe() if warm else None):  # fmt: skip
        say(line)
    return 0

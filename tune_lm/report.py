"""``python -m tune_lm.report EXPERIMENT``: tables and pictures that answer "which cell,
at what cost?" from a finished search: its folder, its storage URI (``s3://...``), or
its MLflow experiment (``--mlflow NAME``).

Writes into ``EXPERIMENT/report/``: ``trials.md``/``.csv`` (every trial), one grouped
table per ``--by`` parameter (cell type always), and PNGs: validation perplexity per
epoch, best perplexity against seconds per epoch with the Pareto front, best-so-far
against wall-clock time, and Optuna's parameter importances.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from tune_lm.cli import parse_args, run_main
from tune_lm.lm.atomic import write_atomic
from tune_lm.lm.errors import ConfigError
from tune_lm.reporting.report import (
    REPORT_DIR,
    SUMMARY_JSON,
    check_by,
    check_writable,
    parse_summary,
    write_report,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tune_lm.report", description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
    )  # fmt: skip
    parser.add_argument("experiment", nargs="?",
                        help="a search's folder (tune_lm_runs/quick) or storage URI "
                        "(s3://bucket/runs/quick)")  # fmt: skip
    parser.add_argument("--mlflow", metavar="NAME", help="instead: the finished search "
                        "logged as MLflow experiment NAME")  # fmt: skip
    parser.add_argument("--tracking-uri",
                        help="with --mlflow: MLflow tracking URI (default: MLFLOW_TRACKING_URI "
                        "or ./mlflow.db)")  # fmt: skip
    parser.add_argument("--out", help="for a URI or --mlflow: local folder for the copied "
                        "results and the report (default: ./NAME)")  # fmt: skip
    parser.add_argument("--by", nargs="*", default=[], help="also group by these parameters")
    args = parse_args(parser, argv)
    if (args.experiment is None) == (args.mlflow is None):
        parser.error("give either an experiment folder/URI or --mlflow NAME")
    if args.tracking_uri is not None and args.mlflow is None:
        parser.error("--tracking-uri goes with --mlflow NAME only")
    for flag, value in (("--out", args.out), ("--tracking-uri", args.tracking_uri)):
        if value is not None and not value.strip():
            parser.error(f"{flag} '' is empty: give a value, or leave the flag out for its "
                         "default")  # fmt: skip
    local = args.mlflow is None and "://" not in args.experiment
    if local and args.out is not None:
        parser.error(f"--out is for a URI or --mlflow; the report of a local folder is written "
                     f"into {Path(args.experiment) / REPORT_DIR}")  # fmt: skip
    if local and Path(args.experiment).name == SUMMARY_JSON and Path(args.experiment).is_file():
        args.experiment = str(Path(args.experiment).parent)  # the summary's own folder
    folder = Path(args.experiment) if local else _local_copy(args)
    for path in write_report(folder, args.by):
        print(path)
    return 0


def _local_copy(args: argparse.Namespace) -> Path:
    """A local copy of a remote or MLflow experiment, made only once its summary has been
    read and the flags checked against it."""
    from tune_lm.reporting import sources as report_sources

    name = args.mlflow or args.experiment.rstrip("/").rsplit("/", 1)[-1]
    out = Path(args.out or name)
    source = f"mlflow:{args.mlflow}" if args.mlflow is not None else args.experiment
    _check_out_is_ours(out, source)
    check_writable(out, "--out")

    def check(summary_text: bytes, source: str) -> None:
        check_by(parse_summary(summary_text, source), args.by)

    if args.mlflow is not None:
        from tune_lm.tracking.store import default_tracking_uri, move_credentials

        uri = move_credentials(args.tracking_uri or default_tracking_uri())
        copied = report_sources.fetch_mlflow(args.mlflow, uri, out, check)
    else:
        copied = report_sources.fetch_uri(args.experiment, out, check)
    write_atomic(copied / COPY_MARK, (json.dumps({"source": source}) + "\n").encode())
    return copied


COPY_MARK = "report_copy.json"  # in an --out folder: which source the copy came from


def _check_out_is_ours(out: Path, source: str) -> None:
    """--out is new, empty, or an earlier copy of the same source: never a folder that holds
    other files (an experiment's own folder would lose its summary and study)."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        earlier = json.loads((out / COPY_MARK).read_text())["source"]
    except (OSError, ValueError, KeyError, TypeError):
        earlier = None
    if earlier != source:
        what = f"a copy of {earlier}" if earlier else "files this command did not copy there"
        raise ConfigError(f"--out {out} already holds {what}; copying {source} there would "
                          "overwrite them. Give a new or empty folder")  # fmt: skip


def cli() -> None:
    """Console-script entry point (``tune-lm-report``)."""
    run_main(main, whole_process=True)


if __name__ == "__main__":
    cli()

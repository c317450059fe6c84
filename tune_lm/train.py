"""``python -m tune_lm.train``: train one language model from the command line.

The flags, names and defaults follow the PyTorch word-language-model example
(hyphenated: ``--batch-size``). The loop itself is :func:`tune_lm.lm.fit.fit`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tune_lm.cli import add_config_flags, config_from_args, parse_args, run_main
from tune_lm.lm import metrics as M
from tune_lm.lm.atomic import probe_writable
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.corpus_files import check_corpus_files
from tune_lm.lm.errors import ConfigError

if TYPE_CHECKING:
    from tune_lm.lm.fit import FitResult
    from tune_lm.lm.train_state import TrainState

__all__ = ["main"]

# --smoke: a few seconds on a CPU, offline, end to end.
SMOKE_CONFIG = {
    "data": "synthetic",
    "emsize": 32,
    "nhid": 32,
    "nlayers": 1,
    "epochs": 2,
    "batch_size": 10,
    "bptt": 20,
    "lr": 10.0,
    "dropout": 0.0,
    "max_tokens_per_epoch": 4000,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tune_lm.train",
        description="Train an embedding + RNN word-level language model with truncated BPTT.",
        allow_abbrev=False,  # a mistyped or shortened flag is an error, never a guess
    )
    add_config_flags(parser)
    parser.add_argument(
        "--save",
        default="model.pt",
        metavar="PATH",
        help="checkpoint of the best weights (default: model.pt; '' = none)",
    )
    parser.add_argument("--metrics-json", metavar="PATH", help="write the metrics as JSON here")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny offline run on the synthetic corpus (flags still override)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no info logs")
    return parser


def _print_evaluation(epoch: float, result: dict[str, float], _state: TrainState) -> None:
    print(
        f"| epoch {epoch:6.2f} | {result[M.EPOCH_TIME_S]:7.1f} s/epoch | lr {result[M.LR]:7.4g}"
        f" | train loss {result[M.TRAIN_LOSS]:6.3f} | valid ppl {result[M.VAL_PPL]:9.2f}"
        f" | {result[M.TOKENS_PER_S]:8.0f} tok/s |",
        flush=True,
    )


def _write_outputs(args: argparse.Namespace, config: TrainConfig, result: FitResult) -> None:
    if args.save:
        from tune_lm.lm.checkpoint import save_model
        from tune_lm.lm.model import RNNLanguageModel

        model = RNNLanguageModel.from_config(config, len(result.vocab))
        save_model(args.save, model, config, result.vocab, result.metrics, result.best_model_state)
        print(f"saved the best weights to {args.save}")
    if args.metrics_json:
        from tune_lm.lm.atomic import atomic_file

        path = Path(args.metrics_json)
        payload = dict(zip(METRICS_KEYS, (config.to_dict(), result.metrics, result.history,
                                          result.interrupted), strict=True))  # fmt: skip
        with atomic_file(path, "w") as out:
            out.write(json.dumps(payload, indent=2, allow_nan=True) + "\n")
        print(f"wrote metrics to {path}")


def check_output_path(flag: str, value: str | None) -> None:
    """An output file must be writable *before* training: a model trained for hours is
    not to be lost at the end to a typo. Nothing is created here (a probe file in the
    target folder is removed at once)."""
    if not value:
        return
    path = Path(value)  # as it will be written: cli.parse_args has expanded a leading ~
    example = path / ("model.pt" if flag == "--save" else "metrics.json")
    if path.is_dir() or os.path.basename(value) in ("", ".", ".."):  # dir/, dir/. name a folder
        raise ConfigError(f"{flag} {value} is a folder; give a file path, e.g. {example}")
    if value == "-":
        raise ConfigError(f"{flag} -: {flag} writes a file, not to standard output; give a "
                          "file path, e.g. metrics.json")  # fmt: skip
    if path.exists() and not path.is_file():  # written by renaming a new file over it
        nothing = " (or --save '' to save no checkpoint)" if flag == "--save" else ""
        raise ConfigError(f"{flag} {value} is not a regular file (a device, pipe or socket), "
                          f"which writing it would replace: give a file path{nothing}")
    if path.is_file() and not _written_by_us(flag, path):
        raise ConfigError(f"{flag} {value} exists and is not a {_OUTPUTS[flag]} written by "
                          "tune_lm (it would be overwritten): give a new path, or remove the "
                          "file first")  # fmt: skip
    try:
        probe_writable(path)
    except OSError as error:
        raise ConfigError(f"{flag} {value}: cannot write there ({error.strerror or error}); "
                          "give a path in a folder you can write to") from None


_OUTPUTS = {"--save": "model checkpoint", "--metrics-json": "metrics file"}
METRICS_KEYS = ("config", "final", "history", "interrupted")  # --metrics-json's object


def _written_by_us(flag: str, path: Path) -> bool:
    """Whether ``path`` is what ``flag`` writes, so that replacing it loses nothing the
    user did not make with this command: a tune_lm model checkpoint, or a metrics file
    (a JSON object with train's keys)."""
    if flag == "--save":
        from tune_lm.lm.checkpoint import is_model_file

        return is_model_file(path)
    try:
        written = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(written, dict) and set(METRICS_KEYS) <= set(written)


def check_distinct_outputs(save: str | None, metrics_json: str | None) -> None:
    if save and metrics_json and Path(save).resolve() == Path(metrics_json).resolve():
        raise ConfigError(f"--save and --metrics-json are the same file ({save}): the metrics "
                          "would overwrite the weights; give two paths")  # fmt: skip


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # kill / timeout end training like Ctrl-C: best weights kept


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if args.quiet:
        logging.getLogger().setLevel(logging.WARNING)
    config = config_from_args(args, base=SMOKE_CONFIG if args.smoke else None)
    check_distinct_outputs(args.save, args.metrics_json)
    check_output_path("--save", args.save)
    check_output_path("--metrics-json", args.metrics_json)
    check_corpus_files(config.data)  # missing, empty, binary or not UTF-8
    # Bad flags and files have failed by now, in a fraction of a second: torch takes seconds.
    from tune_lm.lm.data import load_corpus
    from tune_lm.lm.device import resolve_device
    from tune_lm.lm.fit import fit

    resolve_device(config.device)  # --device cuda without a GPU: before the corpus loads
    corpus = load_corpus(config.data)
    print(
        f"corpus {corpus.name}: {corpus.ntokens} words, {corpus.train.numel()} train / "
        f"{corpus.valid.numel()} valid / {corpus.test.numel()} test tokens"
    )
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    result = fit(
        config,
        corpus=corpus,
        on_epoch_end=_print_evaluation,
        progress=sys.stderr.isatty() and not args.quiet,
        stop_on_interrupt=True,
    )
    final = result.metrics
    if result.interrupted:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the files are written whole
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not result.history:
            print("| interrupted before the first evaluation | nothing to save |")
            return 130
        print(
            f"| interrupted at epoch {final['epochs_run']:g} | best valid ppl "
            f"{final[M.BEST_VAL_PPL]:.2f} | no test score: training did not finish |"
        )
        _write_outputs(args, config, result)
        return 130
    print(
        f"| end of training | best valid ppl {final[M.BEST_VAL_PPL]:.2f}"
        f" | test ppl {final[M.TEST_PPL]:.2f} |"
    )
    _write_outputs(args, config, result)
    return 0


def cli() -> None:
    """Console-script entry point (``tune-lm-train``)."""
    run_main(main, whole_process=True)


if __name__ == "__main__":
    cli()

"""``python -m tune_lm.train``: train one language model from the command line.

The flags, names and defaults follow the PyTorch word-language-model example
(hyphenated: ``--batch-size``). The loop itself is :func:`tune_lm.fit.fit`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tune_lm import metrics as M
from tune_lm.cli import add_config_flags, config_from_args, run_main
from tune_lm.config import TrainConfig

if TYPE_CHECKING:
    from tune_lm.fit import FitResult, TrainState

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
        from tune_lm.checkpoint import save_model
        from tune_lm.model import RNNLanguageModel

        model = RNNLanguageModel.from_config(config, len(result.vocab))
        save_model(args.save, model, config, result.vocab, result.metrics, result.best_model_state)
        print(f"saved the best weights to {args.save}")
    if args.metrics_json:
        path = Path(args.metrics_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"config": config.to_dict(), "final": result.metrics, "history": result.history}
        path.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
        print(f"wrote metrics to {path}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quiet:
        logging.getLogger().setLevel(logging.WARNING)
    config = config_from_args(args, base=SMOKE_CONFIG if args.smoke else None)
    # Bad flags have failed by now, in a fraction of a second: torch takes seconds to import.
    from tune_lm.data import load_corpus
    from tune_lm.fit import fit

    corpus = load_corpus(config.data)
    print(
        f"corpus {corpus.name}: {corpus.ntokens} words, {corpus.train.numel()} train / "
        f"{corpus.valid.numel()} valid / {corpus.test.numel()} test tokens"
    )
    result = fit(
        config,
        corpus=corpus,
        on_epoch_end=_print_evaluation,
        progress=sys.stderr.isatty() and not args.quiet,
    )
    final = result.metrics
    print(
        f"| end of training | best valid ppl {final[M.BEST_VAL_PPL]:.2f}"
        f" | test ppl {final[M.TEST_PPL]:.2f} |"
    )
    _write_outputs(args, config, result)
    return 0


def cli() -> None:
    """Console-script entry point (``tune-lm-train``)."""
    run_main(main)


if __name__ == "__main__":
    cli()

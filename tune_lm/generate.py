"""``python -m tune_lm.generate``: sample text from a trained model.

python -m tune_lm.generate --checkpoint model.pt --words 100 --temperature 1.0 --seed 1
python -m tune_lm.generate --model models:/tune_lm-quick/1 --words 50
python -m tune_lm.generate --checkpoint tune_lm_runs/quick/TRIAL/checkpoint_000003/train_state.pt
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import torch

from tune_lm import inference
from tune_lm.cli import parse_args, run_main
from tune_lm.lm.corpus import EOS
from tune_lm.lm.errors import ConfigError
from tune_lm.lm.model import RNNLanguageModel


@torch.no_grad()
def sample_words(
    model: RNNLanguageModel, vocab: Sequence[str], words: int, temperature: float, seed: int
) -> list[str]:
    """``words`` tokens sampled one at a time, starting after an ``<eos>``; the same
    seed gives the same text."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    hidden = model.init_hidden(1)
    token = torch.tensor([[list(vocab).index(EOS)]])  # (1, 1): a text starts after <eos>
    out = []
    for _ in range(words):
        features, hidden = model(token, hidden)  # (1, 1, nhid)
        log_probs = model.log_probs(features)[0, 0] / temperature  # (ntokens,)
        choice = torch.multinomial(torch.softmax(log_probs, dim=-1), 1, generator=generator)
        out.append(vocab[int(choice)])
        token = choice.view(1, 1)
    return out


MAX_WORDS = 1_000_000
TEMPERATURE_RANGE = (1e-3, 1e3)  # below, log-probs / T overflow float32; above, uniform noise
SEED_LIMIT = 2**32  # seeds 0 .. 2**32 - 1, as the search's --seed


def check_sampling_flags(words: int, temperature: float, seed: int) -> None:
    """Refuse what would fail or hang mid-sampling, naming the flag and its range."""
    low, high = TEMPERATURE_RANGE
    if not 1 <= words <= MAX_WORDS:
        raise ConfigError(f"--words {words}: give a number of words from 1 to {MAX_WORDS:,}")
    if not (math.isfinite(temperature) and low <= temperature <= high):
        raise ConfigError(
            f"--temperature {temperature}: give a number from {low:g} to {high:g} (1 samples "
            "as the model learned; lower is safer and more repetitive, higher more random)"
        )
    if not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"--seed {seed}: give a whole number from 0 to {SEED_LIMIT - 1} "
                          "(the same seed gives the same text)")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tune_lm.generate", allow_abbrev=False,
                                     description="Sample text from a trained model.")  # fmt: skip
    inference.add_model_flags(parser)
    parser.add_argument("--words", type=int, default=100, help="tokens to sample")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="0.001 to 1000; lower = safer (default 1)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="0 to 2**32-1 (default 1)")
    args = parse_args(parser, argv)
    inference.check_model_flags(args)
    check_sampling_flags(args.words, args.temperature, args.seed)
    model, _, vocab = inference.load_for_inference(
        args.checkpoint, args.model, args.tracking_uri, smoke=args.smoke)
    if EOS not in vocab:
        raise ConfigError(f"{args.checkpoint or args.model}: its vocabulary has no {EOS}, "
                          "which every tune_lm corpus has; it is not a tune_lm model")  # fmt: skip
    words = sample_words(model.cpu(), vocab, args.words, args.temperature, args.seed)
    print(" ".join(words).replace(f" {EOS} ", "\n").replace(EOS, "\n").strip())
    return 0


def cli() -> None:
    """Console-script entry point (``tune-lm-generate``)."""
    run_main(main, whole_process=True)


if __name__ == "__main__":
    cli()

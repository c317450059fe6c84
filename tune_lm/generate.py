"""``python -m tune_lm.generate``: sample text from a trained model.

python -m tune_lm.generate --checkpoint model.pt --words 100 --temperature 1.0 --seed 1
python -m tune_lm.generate --model models:/tune_lm-quick/1 --words 50
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from tune_lm.cli import run_main
from tune_lm.data import EOS
from tune_lm.errors import ConfigError
from tune_lm.model import RNNLanguageModel


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tune_lm.generate", allow_abbrev=False,
                                     description="Sample text from a trained model.")  # fmt: skip
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a tune_lm checkpoint (model.pt)")
    source.add_argument("--model", help="a registered MLflow model, models:/NAME/VERSION")
    parser.add_argument("--words", type=int, default=100, help="tokens to sample")
    parser.add_argument("--temperature", type=float, default=1.0, help="> 0; lower = safer")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.words < 1 or args.temperature <= 0:
        raise ConfigError("--words must be at least 1 and --temperature above 0")
    from tune_lm.mlflow_model import load_for_inference

    model, _, vocab = load_for_inference(args.checkpoint, args.model)
    words = sample_words(model.cpu(), vocab, args.words, args.temperature, args.seed)
    print(" ".join(words).replace(f" {EOS} ", "\n").replace(EOS, "\n").strip())
    return 0


if __name__ == "__main__":
    run_main(main)

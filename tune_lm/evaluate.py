"""Perplexity of a model on a split: every token scored exactly once."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from tune_lm.batching import eval_layout, eval_windows
from tune_lm.model import RNNLanguageModel, detach_hidden


class EvalSplit:
    """A split laid out for evaluation once, then reused at every evaluation."""

    def __init__(
        self, tokens: torch.Tensor, batch_size: int, eos_id: int, device: torch.device
    ) -> None:
        inputs, targets = eval_layout(tokens, batch_size, eos_id)
        self.inputs, self.targets = inputs.to(device), targets.to(device)  # (rows, batch)
        self.batch_size = inputs.size(1)
        self.token_count = tokens.numel()


@torch.no_grad()
def evaluate_loss(model: RNNLanguageModel, split: EvalSplit, bptt: int) -> float:
    """Mean NLL per token over the whole split (perplexity = exp of it).

    The hidden state starts at zero in each column and is carried across windows,
    as in training; dropout is off.
    """
    was_training = model.training
    model.eval()
    hidden = model.init_hidden(split.batch_size)
    total_nll = torch.zeros((), dtype=torch.float64, device=split.inputs.device)
    for rows in eval_windows(split.inputs.size(0), bptt):
        features, hidden = model(split.inputs[rows], hidden)  # (L, batch, nhid)
        total_nll += model.nll_sum(features, split.targets[rows])
        hidden = detach_hidden(hidden)
    model.train(was_training)
    return total_nll.item() / split.token_count  # one host sync per evaluation


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tune_lm.evaluate``: perplexity of a checkpoint on a corpus split."""
    parser = argparse.ArgumentParser(
        prog="python -m tune_lm.evaluate", allow_abbrev=False,
        description="Perplexity of a trained model on a split of any corpus.",
    )  # fmt: skip
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a tune_lm checkpoint (model.pt)")
    source.add_argument("--model", help="a registered MLflow model, models:/NAME/VERSION")
    parser.add_argument("--data", required=True, help="wikitext-2, ptb, synthetic or a folder")
    parser.add_argument("--split", choices=["train", "valid", "test"], default="test")
    args = parser.parse_args(argv)
    from tune_lm.data import load_corpus
    from tune_lm.errors import DataError
    from tune_lm.metrics import perplexity
    from tune_lm.mlflow_model import load_for_inference

    model, config, vocab = load_for_inference(args.checkpoint, args.model)
    corpus = load_corpus(args.data)
    if list(corpus.vocab) != list(vocab):
        # Ids must mean the same words: map the corpus through the model's vocabulary.
        index = {word: i for i, word in enumerate(vocab)}
        unk = index.get("<unk>")
        words = [corpus.vocab[i] for i in corpus.split(args.split).tolist()]
        if unk is None and any(word not in index for word in words):
            raise DataError(f"{args.data}: words outside the model's vocabulary and no <unk>")
        tokens = torch.tensor([index.get(word, unk) for word in words], dtype=torch.int64)
    else:
        tokens = corpus.split(args.split)
    split = EvalSplit(tokens, config.eval_batch_size, vocab.index("<eos>"), torch.device("cpu"))
    loss = evaluate_loss(model.cpu(), split, config.bptt)
    print(f"{args.split} perplexity {perplexity(loss):.2f} ({tokens.numel()} tokens)")
    return 0


if __name__ == "__main__":
    from tune_lm.cli import run_main

    run_main(main)

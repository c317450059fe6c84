"""``python -m tune_lm.evaluate``: a trained model's perplexity on a split of a corpus
(every token scored exactly once, by :func:`tune_lm.lm.evaluate.evaluate_loss`)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence

import torch

from tune_lm.lm.corpus import EOS, UNK, Corpus
from tune_lm.lm.errors import DataError
from tune_lm.lm.evaluate import EvalSplit, evaluate_loss

# Above this share of a split's tokens unknown to the model, its perplexity says nothing
# about the model: those words all become <unk>, an easy, frequent token.
MAX_UNKNOWN_SHARE = 0.01


def tokens_for_model(
    corpus: Corpus, split: str, vocab: Sequence[str], model_name: str, force: bool
) -> torch.Tensor:
    """The ids of ``corpus``'s ``split`` in the model's vocabulary (the same words must get
    the same ids). Words the model never saw become its ``<unk>``; more than
    :data:`MAX_UNKNOWN_SHARE` of them is refused unless ``force``."""
    tokens = corpus.split(split)
    if list(corpus.vocab) == list(vocab):
        return tokens
    index = {word: i for i, word in enumerate(vocab)}
    unk = index.get(UNK)
    words = [corpus.vocab[i] for i in tokens.tolist()]
    unknown = Counter(word for word in words if word not in index)
    count = sum(unknown.values())
    if count:
        share = count / len(words)
        common = len(set(corpus.vocab) & set(vocab))
        examples = ", ".join(word for word, _ in unknown.most_common(5))
        problem = (
            f"the model ({model_name}: {len(vocab)} words) and --data {corpus.name} "
            f"({corpus.ntokens} words, {common} of them the model's) have different "
            f"vocabularies: {count} of the {len(words)} {split} tokens ({share:.1%}) are "
            f"words the model never saw (e.g. {examples})"
        )
        if unk is None:
            forced = " (--force cannot help: there is no word to score them as)" if force else ""
            raise DataError(f"{problem}, and it has no {UNK} to score them as{forced}. Evaluate "
                            "it on the corpus it was trained on")  # fmt: skip
        if share > MAX_UNKNOWN_SHARE and not force:
            raise DataError(
                f"{problem}. Scored as {UNK} they make a perplexity that looks plausible but "
                f"says nothing about the model. Evaluate it on the corpus it was trained on, "
                f"or pass --force to score them as {UNK} anyway"
            )
        print(f"warning: {problem}; they are scored as {UNK}, so this perplexity is not "
              "comparable with the model's own", file=sys.stderr)  # fmt: skip
    return torch.tensor([index.get(word, unk) for word in words], dtype=torch.int64)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tune_lm.evaluate``: perplexity of a checkpoint on a corpus split."""
    from tune_lm.inference import add_model_flags, check_model_flags, load_for_inference

    parser = argparse.ArgumentParser(
        prog="python -m tune_lm.evaluate", allow_abbrev=False,
        description="Perplexity of a trained model on a split of any corpus.",
    )  # fmt: skip
    add_model_flags(parser)
    parser.add_argument("--data", help="wikitext-2, ptb, synthetic or a folder (required, "
                        "except with --smoke: synthetic)")  # fmt: skip
    parser.add_argument("--split", choices=["train", "valid", "test"], default="test")
    share = f"{MAX_UNKNOWN_SHARE:.0%}%"  # argparse expands % in help texts: 5% is "5%%"
    parser.add_argument("--force", action="store_true",
                        help=f"score a corpus even when over {share} of its tokens are "
                        "words the model never saw (as <unk>)")  # fmt: skip
    from tune_lm.cli import parse_args

    args = parse_args(parser, argv)
    check_model_flags(args)
    if args.data is None and not args.smoke:
        parser.error("--data is required: the corpus to score (wikitext-2, ptb, synthetic or "
                     "a folder holding train.txt, valid.txt and test.txt)")  # fmt: skip
    from tune_lm.lm.data import load_corpus
    from tune_lm.lm.metrics import perplexity

    # --smoke trains its model (on the synthetic corpus, so its vocabulary is known): a
    # --data that cannot be read, or whose words it cannot score, is said before that
    corpus = load_corpus(args.data or "synthetic") if args.smoke else None
    if corpus is not None:
        tokens_for_model(corpus, args.split, list(load_corpus("synthetic").vocab), "--smoke",
                         args.force)  # fmt: skip
    model, config, vocab = load_for_inference(args.checkpoint, args.model, args.tracking_uri,
                                              smoke=args.smoke)  # fmt: skip
    corpus = corpus or load_corpus(args.data or "synthetic")
    model_name = (f"--checkpoint {args.checkpoint}" if args.checkpoint
                  else "--smoke" if args.smoke else f"--model {args.model}")  # fmt: skip
    tokens = tokens_for_model(corpus, args.split, vocab, model_name, args.force)
    split = EvalSplit(tokens, config.eval_batch_size, vocab.index(EOS), torch.device("cpu"))
    loss = evaluate_loss(model.cpu(), split, config.bptt)
    print(f"{args.split} perplexity {perplexity(loss):.2f} ({tokens.numel()} tokens)")
    return 0


def cli() -> None:
    """Console-script entry point (``tune-lm-evaluate``)."""
    from tune_lm.cli import run_main

    run_main(main, whole_process=True)


if __name__ == "__main__":
    cli()

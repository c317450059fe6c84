"""A tokenised corpus and the tokeniser: every line split on whitespace, one ``<eos>``
per line (the PyTorch word-language-model convention)::

    " the cat\\n\\nsat"  ->  the cat <eos> <eos> sat <eos>
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from tune_lm.lm.corpus_files import SPLITS
from tune_lm.lm.errors import DataError

EOS = "<eos>"
UNK = "<unk>"


@dataclass(frozen=True, eq=False)
class Corpus:
    """A tokenised corpus: one vocabulary (from train only) and three id tensors."""

    name: str  # "ptb", "wikitext-2", "synthetic", or the folder path given
    vocab: tuple[str, ...]  # id -> word, in order of first appearance in train
    train: torch.Tensor  # (n_train_tokens,) int64
    valid: torch.Tensor  # (n_valid_tokens,) int64
    test: torch.Tensor  # (n_test_tokens,) int64
    fingerprint: str  # sha256 hex of the contents
    unk_counts: Mapping[str, int]  # {"valid": n, "test": n} words mapped to <unk>

    @property
    def ntokens(self) -> int:
        """Vocabulary size (the model's input and output width)."""
        return len(self.vocab)

    def split(self, name: str) -> torch.Tensor:
        """The token ids of split ``name`` ("train", "valid" or "test")."""
        if name not in SPLITS:
            raise DataError(f"unknown corpus split {name!r}; use one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def word_to_id(self) -> dict[str, int]:
        """A fresh word -> id dict (built on demand; the dataclass is frozen)."""
        return {word: index for index, word in enumerate(self.vocab)}


def tokenize(text: str) -> list[str]:
    """Split ``text`` into words plus one ``<eos>`` per line, empty lines included.

    A last line without a trailing newline still counts; a trailing newline does not
    start an extra empty line, and an empty text has no lines.
    """
    if not text:
        return []
    words: list[str] = []
    for line in text.removesuffix("\n").split("\n"):
        words += line.split()
        words.append(EOS)
    return words

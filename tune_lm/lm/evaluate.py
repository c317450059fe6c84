"""Perplexity of a model on a split: every token scored exactly once."""

from __future__ import annotations

import torch

from tune_lm.lm.batching import eval_layout, eval_windows
from tune_lm.lm.model import RNNLanguageModel, detach_hidden


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

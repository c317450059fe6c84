"""How a token stream is cut into batches and truncated-BPTT windows.

Training lays the stream out in ``batch_size`` columns (the remainder that does not
fill a whole row is dropped) and walks down the rows ``bptt`` at a time::

    stream a b c d e f g h i j k l m, batch_size 4  ->   a d g j
                                                          b e h k
                                                          c f i l      (rows, batch)
    window at row r: inputs rows [r, r+L), targets rows [r+1, r+1+L)

Evaluation must score *every* token of a split exactly once, so it does not trim:
the split is prefixed with the ``<eos>`` that ended the previous text (so its first
token is predicted too), cut into ``eval_batch_size`` columns of equal length, and
the tail of the last column is padded with :data:`IGNORE` targets that the loss skips.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

IGNORE = -100  # F.cross_entropy's default ignore_index


def batchify(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(n,) token ids -> (n // batch_size, batch_size), column j = j-th contiguous slice."""
    rows = tokens.numel() // batch_size
    return tokens[: rows * batch_size].view(batch_size, rows).t().contiguous()


def window_starts(rows: int, bptt: int) -> list[int]:
    """First row of each training window; together they predict rows 1..rows-1 once."""
    return list(range(0, rows - 1, bptt))


def get_window(source: torch.Tensor, start: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (L, batch) and next-token targets (L, batch) of the window at ``start``."""
    length = min(bptt, source.size(0) - 1 - start)
    return source[start : start + length], source[start + 1 : start + 1 + length]


def eval_layout(
    tokens: torch.Tensor, batch_size: int, eos_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets, each (rows, batch_size), that cover every token of ``tokens``.

    Target k is ``tokens[k]``; its input is ``tokens[k-1]`` (``eos_id`` for k = 0).
    Column j holds targets [j*rows, (j+1)*rows); padding targets are :data:`IGNORE`.
    """
    count = tokens.numel()
    rows = -(-count // batch_size)  # ceil
    padding = rows * batch_size - count
    inputs = torch.cat([tokens.new_tensor([eos_id]), tokens[:-1], tokens.new_zeros(padding)])
    targets = torch.cat([tokens, tokens.new_full((padding,), IGNORE)])
    return (
        inputs.view(batch_size, rows).t().contiguous(),
        targets.view(batch_size, rows).t().contiguous(),
    )


def eval_windows(rows: int, bptt: int) -> Iterator[slice]:
    """Row slices of the evaluation windows: [0, bptt), [bptt, 2 bptt), ..."""
    for start in range(0, rows, bptt):
        yield slice(start, min(start + bptt, rows))

"""Batch layout and windows: every token is a target exactly once."""

import pytest
import torch

from tune_lm.lm.batching import (
    IGNORE,
    batchify,
    eval_layout,
    eval_windows,
    get_window,
    window_starts,
)


def test_batchify_lays_contiguous_slices_in_columns():
    stream = torch.arange(13)
    batched = batchify(stream, 4)
    assert batched.shape == (3, 4)
    assert batched[:, 0].tolist() == [0, 1, 2]
    assert batched[:, 3].tolist() == [9, 10, 11]  # token 12 does not fill a row: trimmed


@pytest.mark.parametrize("rows,bptt", [(2, 35), (10, 3), (36, 35), (100, 7), (71, 35)])
def test_training_windows_cover_each_target_row_once(rows, bptt):
    source = torch.arange(rows * 3).view(rows, 3)
    seen_inputs, seen_targets = [], []
    for start in window_starts(rows, bptt):
        inputs, targets = get_window(source, start, bptt)
        assert inputs.shape == targets.shape
        assert torch.equal(targets, source[start + 1 : start + 1 + inputs.size(0)])
        seen_inputs += inputs[:, 0].tolist()
        seen_targets += targets[:, 0].tolist()
    assert seen_targets == source[1:, 0].tolist()  # rows 1..rows-1, once each, in order
    assert seen_inputs == source[:-1, 0].tolist()


@pytest.mark.parametrize("count,batch", [(1, 10), (7, 10), (10, 10), (11, 10), (1000, 10), (97, 3)])
def test_eval_layout_scores_every_token_once(count, batch):
    tokens = torch.arange(5, 5 + count)
    eos = 0
    inputs, targets = eval_layout(tokens, batch, eos)
    assert inputs.shape == targets.shape and targets.size(1) == batch
    # Column-major order (column j after column j-1) is the original stream.
    flat_targets = targets.t().reshape(-1)
    flat_inputs = inputs.t().reshape(-1)
    real = flat_targets != IGNORE
    assert flat_targets[real].tolist() == tokens.tolist()
    assert int(real.sum()) == count
    # Each target's input is the token before it; the first one follows an <eos>.
    assert flat_inputs[real].tolist() == [eos] + tokens[:-1].tolist()
    # Padding only after the last real target, so it never feeds a real prediction.
    assert not real[int(real.nonzero().max()) + 1 :].any()


def test_eval_windows_partition_rows():
    rows = list(range(23))
    covered = [row for window in eval_windows(23, 5) for row in rows[window]]
    assert covered == rows

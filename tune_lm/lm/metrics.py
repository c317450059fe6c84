"""Metric names, defined once and used by training, Tune, MLflow and reports."""

from __future__ import annotations

import math

# Reported after every evaluation.
EPOCH = "epoch"  # epochs done, fractional when evaluating within an epoch
STEP = "step"  # 1-based evaluation index
TRAIN_LOSS = "train_loss"  # mean training NLL per token since the previous evaluation
VAL_LOSS = "val_loss"  # mean validation NLL per token (every token, <eos> included)
VAL_PPL = "val_ppl"  # exp(VAL_LOSS): the objective
LR = "lr"  # learning rate used since the previous evaluation
EPOCH_TIME_S = "epoch_time_s"  # training seconds per epoch (evaluation excluded)
TOKENS_PER_S = "tokens_per_s"  # training tokens per second since the previous evaluation
TRAIN_TIME_S = "train_time_s"  # training seconds so far

# Reported once, at the end of a run.
BEST_VAL_PPL = "best_val_ppl"
EPOCHS_RUN = "epochs_run"  # epochs a trial trained before it ended
BEST_VAL_LOSS = "best_val_loss"
TEST_LOSS = "test_loss"
TEST_PPL = "test_ppl"  # on the weights with the best validation loss

# A replayed trial (search --replay): its recorded curve has no later epoch.
CURVE_ENDS = "curve_ends"

# Grid studies: test perplexity at chosen epochs (the space's test_at_epochs).
TEST_AT_EPOCH_PREFIX = "test_ppl_epoch"

EVALUATION_METRICS = (
    EPOCH,
    STEP,
    TRAIN_LOSS,
    VAL_LOSS,
    VAL_PPL,
    LR,
    EPOCH_TIME_S,
    TOKENS_PER_S,
    TRAIN_TIME_S,
)


def perplexity(mean_nll: float) -> float:
    """exp(mean NLL per token); inf for a diverged (nan/inf/huge) loss."""
    if not math.isfinite(mean_nll) or mean_nll > 700:  # exp(710) overflows a float
        return math.inf
    return math.exp(mean_nll)


def test_at_epoch(epoch: int) -> str:
    """Name of the test perplexity recorded at ``epoch`` (grid studies): test_ppl_epoch20."""
    return f"{TEST_AT_EPOCH_PREFIX}{epoch}"


def is_test_at_epoch(name: str) -> bool:
    return name.startswith(TEST_AT_EPOCH_PREFIX)

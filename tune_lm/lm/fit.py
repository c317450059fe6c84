"""The training loop: truncated BPTT, evaluation callbacks, exact resume.

:func:`fit` is a pure function of its config (plus an optional pre-loaded corpus and
a saved :class:`TrainState`): no globals, nothing at import time. Ray Tune's adapter
and the ``python -m tune_lm.train`` command both call it.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from tune_lm.lm import metrics as M
from tune_lm.lm.batching import batchify, get_window, window_starts
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.corpus import Corpus
from tune_lm.lm.data import load_corpus
from tune_lm.lm.device import resolve_device, training_autocast
from tune_lm.lm.errors import ConfigError, DataError
from tune_lm.lm.evaluate import EvalSplit, evaluate_loss
from tune_lm.lm.memory import check_fits_in_memory
from tune_lm.lm.model import Hidden, RNNLanguageModel, detach_hidden
from tune_lm.lm.step import GraphedStep, eager_step
from tune_lm.lm.train_state import (
    TrainState,
    check_resumable,
    hidden_from_list,
    hidden_to_list,
    reseed,
    rng_state,
)

log = logging.getLogger(__name__)

@dataclass
class FitResult:
    metrics: dict[str, float]  # best_val_ppl, test_ppl, ... (see tune_lm.lm.metrics)
    history: list[dict[str, float]]  # one dict of EVALUATION_METRICS per evaluation
    best_model_state: dict[str, torch.Tensor]
    vocab: tuple[str, ...]
    interrupted: bool = False  # stopped by Ctrl-C (stop_on_interrupt): no test score


# on_epoch_end(epoch, metrics, state) is called after every evaluation.
EpochCallback = Callable[[float, dict[str, float], TrainState], None]


def _check_corpus(corpus: Corpus, config: TrainConfig) -> None:
    needed = 2 * config.batch_size
    if corpus.train.numel() < needed:
        raise DataError(
            f"the train split of corpus {corpus.name!r} has {corpus.train.numel()} tokens, "
            f"fewer than one batch needs (2 x batch_size = {needed}); lower batch_size or "
            "use a larger corpus"
        )


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW over ``model``; on a GPU the fused (one-kernel) implementation, and
    AdamW capturable in a CUDA graph when ``cuda_graph`` is on."""
    fused = next(model.parameters()).is_cuda or None  # None: torch's default (foreach)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused,
            capturable=_capturable(config, model),
        )  # fmt: skip
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused
    )


def _capturable(config: TrainConfig, model: torch.nn.Module) -> bool:
    return config.cuda_graph and next(model.parameters()).is_cuda


def _keep_this_runs_kernels(optimizer: torch.optim.Optimizer) -> None:
    """After loading a saved state: its param groups bring the fused/capturable flags of the
    run that saved it (another device, or no CUDA graph); this run's choice is put back, and
    AdamW's step counters go to the parameters' device where fused or capturable kernels
    read them there (a state saved on a CPU keeps them on the CPU)."""
    for group in optimizer.param_groups:
        for flag in ("fused", "capturable"):
            if flag in group:
                group[flag] = optimizer.defaults.get(flag)
        if not (group.get("fused") or group.get("capturable")):
            continue
        for param in group["params"]:
            step = optimizer.state.get(param, {}).get("step")
            if isinstance(step, torch.Tensor):
                optimizer.state[param]["step"] = step.to(param.device, torch.float32)


def fit(
    config: TrainConfig,
    *,
    on_epoch_end: EpochCallback | None = None,
    state: TrainState | dict[str, Any] | None = None,
    corpus: Corpus | None = None,
    evaluate_test: bool = True,
    progress: bool = False,
    stop_on_interrupt: bool = False,
) -> FitResult:
    """Train ``config`` to its epoch limit and return the final metrics.

    Evaluates on validation after every epoch (and every ``eval_every_tokens``);
    the lr is divided by ``lr_decay`` whenever validation loss does not improve.
    ``state`` resumes a run saved from a callback; ``corpus`` skips loading
    ``config.data``. With ``evaluate_test`` the test split is scored once, on the
    weights with the best validation loss. With ``stop_on_interrupt`` a Ctrl-C ends
    training and returns what the evaluations so far found (``interrupted``, no test).
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    corpus = corpus if corpus is not None else load_corpus(config.data)
    _check_corpus(corpus, config)

    check_fits_in_memory(config, corpus.ntokens, device)  # before allocating any of it
    torch.manual_seed(config.seed)
    counts = torch.bincount(corpus.train, minlength=corpus.ntokens)  # adaptive softmax order
    try:
        model = RNNLanguageModel.from_config(config, corpus.ntokens, counts).to(device)
    except ValueError as error:  # a combination only the vocabulary size reveals
        raise ConfigError(f"corpus {corpus.name!r}: {error}") from None
    optimizer = make_optimizer(config, model)
    train_data = batchify(corpus.train, config.batch_size).to(device)  # (rows, batch)
    starts = window_starts(train_data.size(0), config.bptt)
    eos_id = corpus.vocab.index("<eos>")
    valid = EvalSplit(corpus.valid, config.eval_batch_size, eos_id, device)
    windows_per_epoch = len(starts)
    if config.max_tokens_per_epoch:
        tokens_per_window = config.bptt * config.batch_size
        windows_per_epoch = min(
            len(starts), max(1, math.ceil(config.max_tokens_per_epoch / tokens_per_window))
        )

    if state is None:
        state = TrainState(
            model={},
            optimizer={},
            lr=config.lr,
            epoch=0,
            window=0,
            cursor=0,
            hidden=None,
            best_val_loss=math.inf,
            best_model=None,
            train_time_s=0.0,
            config=config.to_dict(),
        )
        hidden = None
    else:
        state = state if isinstance(state, TrainState) else TrainState.from_dict(state)
        check_resumable(state, config)
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        hidden = hidden_from_list(state.hidden, device)
        reseed(config.seed, len(state.history))
        _keep_this_runs_kernels(optimizer)
    for group in optimizer.param_groups:
        group["lr"] = state.lr

    model.train()
    try:
        _train(config, model, optimizer, train_data, starts, windows_per_epoch, valid, state,
               hidden, on_epoch_end, progress)  # fmt: skip
        interrupted = False
    except KeyboardInterrupt:
        if not stop_on_interrupt:
            raise
        log.warning("interrupted: training stops here; the best weights so far are kept")
        interrupted = True

    best_state = state.best_model if state.best_model is not None else model.state_dict()
    final = {
        M.BEST_VAL_LOSS: state.best_val_loss,
        M.BEST_VAL_PPL: M.perplexity(state.best_val_loss),
        M.TRAIN_TIME_S: state.train_time_s,
        M.EPOCHS_RUN: state.history[-1][M.EPOCH] if state.history else 0.0,
    }
    if evaluate_test and not interrupted:
        model.load_state_dict(best_state)
        test = EvalSplit(corpus.test, config.eval_batch_size, eos_id, device)
        final[M.TEST_LOSS] = evaluate_loss(model, test, config.bptt)
        final[M.TEST_PPL] = M.perplexity(final[M.TEST_LOSS])
    return FitResult(final, list(state.history), best_state, corpus.vocab, interrupted)


def _train(
    config: TrainConfig, model: RNNLanguageModel, optimizer: torch.optim.Optimizer,
    train_data: torch.Tensor, starts: list[int], windows_per_epoch: int, valid: EvalSplit,
    state: TrainState, hidden: Hidden | None, on_epoch_end: EpochCallback | None,
    progress: bool,
) -> None:  # fmt: skip
    """The truncated-BPTT loop: trains ``model`` in place and advances ``state``."""
    device = train_data.device
    autocast = training_autocast(config, device)
    graphed = GraphedStep(model, optimizer, config, device) if config.cuda_graph else None
    segment = _Segment()
    bar = None
    stop = False
    while state.epoch < config.epochs and not stop:
        if bar is None:
            bar = tqdm(
                total=windows_per_epoch,
                initial=state.window,
                disable=not progress,
                desc=f"epoch {state.epoch + 1}",
                unit="batch",
                leave=False,
            )
        inputs, targets = get_window(train_data, starts[state.cursor], config.bptt)
        if graphed is not None:
            loss, hidden = graphed(inputs, targets, hidden)
        else:
            loss, hidden = eager_step(model, optimizer, config, autocast, inputs, targets, hidden)
        segment.add(loss, targets.numel())  # no host sync here
        bar.update()

        state.cursor += 1
        state.window += 1
        if state.cursor == len(starts):  # end of the data: start again with a fresh state
            state.cursor, hidden = 0, None
        end_of_epoch = state.window == windows_per_epoch
        due = config.eval_every_tokens and segment.tokens >= config.eval_every_tokens
        if not (end_of_epoch or due):
            continue

        train_loss, seconds = segment.finish()  # syncs the device once
        val_loss = evaluate_loss(model, valid, config.bptt)
        state.train_time_s += seconds
        epoch_progress = state.epoch + state.window / windows_per_epoch
        result = {
            M.EPOCH: round(epoch_progress, 6),
            M.STEP: len(state.history) + 1,
            M.TRAIN_LOSS: train_loss,
            M.VAL_LOSS: val_loss,
            M.VAL_PPL: M.perplexity(val_loss),
            M.LR: state.lr,
            M.EPOCH_TIME_S: seconds * windows_per_epoch / segment.windows,
            M.TOKENS_PER_S: segment.tokens / max(seconds, 1e-9),
            M.TRAIN_TIME_S: state.train_time_s,
        }
        state.history.append(result)
        if val_loss < state.best_val_loss:
            state.best_val_loss = val_loss
            state.best_model = copy.deepcopy(model.state_dict())
        elif end_of_epoch:  # the usual schedule: anneal on a plateau, once per epoch at
            # most (with eval_every_tokens, mid-epoch evaluations only keep the best weights)
            state.lr /= config.lr_decay
            for group in optimizer.param_groups:
                group["lr"] = state.lr
        if not math.isfinite(result[M.VAL_PPL]):  # (a finite loss over ~709 nats too)
            log.warning("validation loss is %s: training diverged, stopping", val_loss)
            stop = True
        if end_of_epoch:
            state.epoch += 1
            state.window = 0
            bar.close()
            bar = None
        state.model, state.optimizer = model.state_dict(), optimizer.state_dict()
        state.hidden = hidden_to_list(detach_hidden(hidden) if hidden is not None else None)
        reseed(config.seed, len(state.history))
        state.rng = rng_state()  # kept for inspection; resuming re-seeds as above
        if on_epoch_end is not None:
            on_epoch_end(result[M.EPOCH], result, state)
        segment = _Segment()
    if bar is not None:
        bar.close()


class _Segment:
    """Training loss, tokens and seconds since the previous evaluation."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.loss_sum: torch.Tensor | float = 0.0
        self.tokens = 0
        self.windows = 0

    def add(self, mean_loss: torch.Tensor, tokens: int) -> None:
        self.loss_sum = self.loss_sum + mean_loss * tokens
        self.tokens += tokens
        self.windows += 1

    def finish(self) -> tuple[float, float]:
        """(mean training loss, seconds); reading the loss waits for the device."""
        loss_sum = float(self.loss_sum)
        return loss_sum / max(self.tokens, 1), time.perf_counter() - self.start



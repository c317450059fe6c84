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
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from tune_lm.lm import metrics as M
from tune_lm.lm.batching import batchify, get_window, window_starts
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.corpus import Corpus
from tune_lm.lm.data import load_corpus
from tune_lm.lm.errors import ConfigError, DataError
from tune_lm.lm.evaluate import EvalSplit, evaluate_loss
from tune_lm.lm.model import Hidden, RNNLanguageModel, detach_hidden

log = logging.getLogger(__name__)

STATE_FORMAT = "tune_lm.train_state/1"
# Fields that may differ between a saved state and the config that resumes it.
_RESUMABLE_CHANGES = {"epochs", "device", "threads", "data"}


@dataclass
class TrainState:
    """Everything needed to continue a run exactly where an evaluation left it."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    lr: float
    epoch: int  # completed epochs
    window: int  # windows done in the current epoch
    cursor: int  # index of the next training window in the corpus (wraps when capped)
    hidden: list[torch.Tensor] | None  # training hidden state at the cursor
    best_val_loss: float
    best_model: dict[str, torch.Tensor] | None
    train_time_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    rng: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of plain tensors/primitives, safe to ``torch.save`` and to load
        with ``weights_only=True``. Call it inside the callback: the live state moves on."""
        return copy.deepcopy({"format": STATE_FORMAT, **self.__dict__})

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainState:
        if saved.get("format") != STATE_FORMAT:
            raise ConfigError(f"not a tune_lm training state (expected {STATE_FORMAT})")
        return cls(**{key: value for key, value in saved.items() if key != "format"})


@dataclass
class FitResult:
    metrics: dict[str, float]  # best_val_ppl, test_ppl, ... (see tune_lm.lm.metrics)
    history: list[dict[str, float]]  # one dict of EVALUATION_METRICS per evaluation
    best_model_state: dict[str, torch.Tensor]
    vocab: tuple[str, ...]
    interrupted: bool = False  # stopped by Ctrl-C (stop_on_interrupt): no test score


# on_epoch_end(epoch, metrics, state) is called after every evaluation.
EpochCallback = Callable[[float, dict[str, float], TrainState], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def training_autocast(config: TrainConfig, device: torch.device) -> TrainingPrecision:
    """bf16 autocast for the training forward pass (``precision: bf16``), else a no-op.

    Weights, optimizer state and gradients stay fp32; evaluation is not autocast, so the
    reported perplexities are fp32 scores of the trained weights. Reusable: enter it once
    per batch."""
    enabled = config.precision == "bf16"
    emulated = enabled and not bf16_is_fast(device)
    if emulated:
        log.warning("precision=bf16 on %s without native bf16 support: expect it slower", device)
    return TrainingPrecision(device, enabled, keep_onednn=not (emulated and device.type == "cpu"))


class TrainingPrecision:
    """torch.autocast, plus oneDNN switched off while it is active on a CPU without native
    bf16: oneDNN has no bf16 LSTM there (it fails to build the primitive), while torch's
    own kernels run the recurrent layers in fp32 and the rest in emulated bf16."""

    def __init__(self, device: torch.device, enabled: bool, keep_onednn: bool = True) -> None:
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
        self.keep_onednn = keep_onednn
        self._onednn_was = True

    def __enter__(self) -> TrainingPrecision:
        if not self.keep_onednn:
            self._onednn_was = torch.backends.mkldnn.enabled
            torch.backends.mkldnn.enabled = False
        self.autocast.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.autocast.__exit__(*exc_info)
        if not self.keep_onednn:
            torch.backends.mkldnn.enabled = self._onednn_was


def bf16_is_fast(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def _check_corpus(corpus: Corpus, config: TrainConfig) -> None:
    needed = 2 * config.batch_size
    if corpus.train.numel() < needed:
        raise DataError(
            f"the train split of corpus {corpus.name!r} has {corpus.train.numel()} tokens, "
            f"fewer than one batch needs (2 x batch_size = {needed}); lower batch_size or "
            "use a larger corpus"
        )


def _hidden_to_list(hidden: Hidden | None) -> list[torch.Tensor] | None:
    if hidden is None:
        return None
    return [hidden] if isinstance(hidden, torch.Tensor) else list(hidden)


def _hidden_from_list(parts: list[torch.Tensor] | None, device: torch.device) -> Hidden | None:
    if parts is None:
        return None
    parts = [part.to(device) for part in parts]
    return parts[0] if len(parts) == 1 else tuple(parts)


def _rng_state() -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def _reseed(seed: int, evaluations: int) -> None:
    """Seed every generator from (seed, evaluations done) at each evaluation boundary.

    A run resumed from a boundary then draws exactly the random numbers an unbroken run
    draws after it: restoring saved generator states would not do that on a GPU, where
    cuDNN keeps its own dropout stream between layers that torch re-initialises only
    after a manual seed."""
    torch.manual_seed((seed * 1_000_003 + evaluations) % 2**63)


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW over ``model``; on a GPU the fused (one-kernel) implementation."""
    fused = next(model.parameters()).is_cuda or None  # None: torch's default (foreach)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused
        )
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused
    )


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
        _check_resumable(state, config)
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        hidden = _hidden_from_list(state.hidden, device)
        _reseed(config.seed, len(state.history))
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
        if hidden is None:
            hidden = model.init_hidden(config.batch_size)
        hidden = detach_hidden(hidden)  # truncate BPTT at the window boundary
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            features, hidden = model(inputs, hidden)  # (L, batch, nhid)
            loss = model.loss(features, targets)  # fp32: autocast keeps losses in fp32
        loss.backward()
        if config.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        segment.add(loss.detach(), targets.numel())  # no host sync here
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
        if not math.isfinite(val_loss):
            log.warning("validation loss is %s: training diverged, stopping", val_loss)
            stop = True
        if end_of_epoch:
            state.epoch += 1
            state.window = 0
            bar.close()
            bar = None
        state.model, state.optimizer = model.state_dict(), optimizer.state_dict()
        state.hidden = _hidden_to_list(detach_hidden(hidden) if hidden is not None else None)
        _reseed(config.seed, len(state.history))
        state.rng = _rng_state()  # kept for inspection; resuming re-seeds as above
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


def _check_resumable(state: TrainState, config: TrainConfig) -> None:
    current = config.to_dict()
    changed = sorted(
        key
        for key in current
        if key not in _RESUMABLE_CHANGES and state.config.get(key) != current[key]
    )
    if changed:
        details = ", ".join(f"{k}: {state.config.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ConfigError(
            f"cannot resume: the saved state was trained with a different config ({details}). "
            "Resume with the original values, or start a new run"
        )

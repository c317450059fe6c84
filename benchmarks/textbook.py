"""The baseline of the benchmarks: the PyTorch word-language-model example's training
loop (decoder, log-softmax + NLLLoss, ``model.zero_grad()``, clip, manual SGD update,
a ``loss.item()`` per batch), on tune_lm's model and batches so only the loop differs."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from tune_lm.lm.batching import batchify, get_window, window_starts
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.corpus import Corpus
from tune_lm.lm.model import RNNLanguageModel, detach_hidden


def textbook_train(
    config: TrainConfig,
    corpus: Corpus,
    max_tokens: int | None = None,
    *,
    device: str | torch.device = "cpu",
    warmup_batches: int = 0,
) -> tuple[RNNLanguageModel, int, float]:
    """Train one epoch (or ``max_tokens``); returns (model, tokens, training seconds).

    As in the example, the model and the batched data live on ``device``. The first
    ``warmup_batches`` batches are neither timed nor counted; on a GPU the clock reads
    after a device synchronisation at both ends."""
    device = torch.device(device)
    torch.manual_seed(config.seed)
    model = RNNLanguageModel.from_config(config, corpus.ntokens).to(device)
    model.train()
    train_data = batchify(corpus.train, config.batch_size).to(device)
    hidden = model.init_hidden(config.batch_size)
    criterion = torch.nn.NLLLoss()
    tokens, total_loss = 0, 0.0
    start = time.perf_counter()
    for batch, begin in enumerate(window_starts(train_data.size(0), config.bptt)):
        if batch == warmup_batches and batch > 0:
            _synchronize(device)
            tokens, start = 0, time.perf_counter()
        inputs, targets = get_window(train_data, begin, config.bptt)
        hidden = detach_hidden(hidden)
        model.zero_grad()
        features, hidden = model(inputs, hidden)
        log_probs = F.log_softmax(model.decoder(features).view(-1, corpus.ntokens), dim=1)
        loss = criterion(log_probs, targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        for parameter in model.parameters():
            parameter.data.add_(parameter.grad, alpha=-config.lr)
        total_loss += loss.item()
        tokens += targets.numel()
        if max_tokens is not None and tokens >= max_tokens:
            break
    _synchronize(device)
    return model, tokens, time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

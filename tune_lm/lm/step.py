"""One truncated-BPTT training step: forward, backward, gradient clipping, update.

:func:`eager_step` runs it op by op. :class:`GraphedStep` (``cuda_graph: true``) runs it
on fixed buffers so that, on CUDA, the whole step is captured once as a CUDA graph and
then replayed: one launch per step instead of one per kernel, which is what bounds a small
RNN on a fast GPU (an H200 ran 2x200 and 2x650 models alike at ~110k tokens/s eagerly).
The recipe is torch's whole-network capture: a few eager warm-up steps on a side stream,
gradients set to None before capture so that the graph's backward writes them, autocast's
cast cache off. Learning rates are baked into the captured kernels, so a changed lr (the
anneal) means a new capture. A window shorter than ``bptt`` (the end of the data) runs
eagerly. On a CPU the same buffered step runs without a graph, so its plumbing (hidden
state carried and reset, windows, anneals) is tested against :func:`eager_step` there.

cuDNN's dropout between recurrent layers keeps its random state in a buffer of its own,
which torch replaces (drawing a seed with a host sync) at the first training step after a
manual seed; ``fit`` seeds at every evaluation, for exact resumes. A graph captured before
that would go on using the old buffer after it is freed, and a capture right after a seed
would fail on the sync. So, for a model with dropout between layers, a changed CUDA seed
means one eager step first (it makes the new buffer, as the eager loop would) and then a
new capture.
"""

from __future__ import annotations

import logging

import torch

from tune_lm.lm.config import TrainConfig
from tune_lm.lm.device import training_autocast
from tune_lm.lm.model import Hidden, RNNLanguageModel, detach_hidden

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager steps on a side stream before the first capture (torch's advice)


def eager_step(
    model: RNNLanguageModel, optimizer: torch.optim.Optimizer, config: TrainConfig,
    autocast, inputs: torch.Tensor, targets: torch.Tensor, hidden: Hidden | None,
) -> tuple[torch.Tensor, Hidden]:  # fmt: skip
    """Train on one window; returns (mean loss, still on the device) and the next hidden."""
    if hidden is None:
        hidden = model.init_hidden(inputs.size(1))
    optimizer.zero_grad(set_to_none=True)
    # detached: truncate BPTT at the window boundary
    return _train_on(model, optimizer, config, autocast, inputs, targets, detach_hidden(hidden))


def _train_on(
    model: RNNLanguageModel, optimizer: torch.optim.Optimizer, config: TrainConfig,
    autocast, inputs: torch.Tensor, targets: torch.Tensor, hidden: Hidden,
) -> tuple[torch.Tensor, Hidden]:  # fmt: skip
    """Forward, backward, clipping and update into gradients the caller has set to None."""
    with autocast:
        features, hidden = model(inputs, hidden)  # (L, batch, nhid)
        loss = model.loss(features, targets)  # fp32: autocast keeps losses in fp32
    loss.backward()
    if config.clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
    optimizer.step()
    return loss.detach(), hidden


def _parts(hidden: Hidden) -> tuple[torch.Tensor, ...]:
    """(h, c) of an LSTM, (h,) of the other cells."""
    return hidden if isinstance(hidden, tuple) else (hidden,)


class GraphedStep:
    """The training step on fixed input, target and hidden buffers; replayed as a CUDA
    graph on CUDA. Call it like :func:`eager_step` (without model and optimizer)."""

    def __init__(
        self, model: RNNLanguageModel, optimizer: torch.optim.Optimizer, config: TrainConfig,
        device: torch.device,
    ) -> None:  # fmt: skip
        self.model, self.optimizer, self.config = model, optimizer, config
        self.device = device
        self.capture = device.type == "cuda"
        self.autocast = training_autocast(config, device, cache=not self.capture)
        self.eager_autocast = training_autocast(config, device)
        shape = (config.bptt, config.batch_size)
        self.inputs = torch.zeros(shape, dtype=torch.long, device=device)
        self.targets = torch.zeros(shape, dtype=torch.long, device=device)
        self.hidden = model.init_hidden(config.batch_size)
        self.loss = torch.zeros((), device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.captured_lrs: tuple[float, ...] | None = None
        self.warmup_left = WARMUP_STEPS
        # cuDNN's own dropout state (see the module's docstring) is used
        self.cudnn_dropout = getattr(model.rnn, "dropout", 0.0) > 0
        self.seed_seen: int | None = None  # the CUDA seed at the last eager step
        self.captures = 0  # how many times the step was captured (one per lr and seed)
        self.replays = 0
        if not self.capture:
            log.info("cuda_graph: no CUDA device (%s), so the step runs without a graph", device)

    def __call__(
        self, inputs: torch.Tensor, targets: torch.Tensor, hidden: Hidden | None
    ) -> tuple[torch.Tensor, Hidden]:
        if inputs.shape != self.inputs.shape:  # the short last window of the data
            return eager_step(self.model, self.optimizer, self.config, self.eager_autocast,
                              inputs, targets, hidden)  # fmt: skip
        self._load(inputs, targets, hidden)
        if not self.capture:
            self.optimizer.zero_grad(set_to_none=True)
            self._body()
        else:
            with torch.cuda.device(self.device):  # cuda:N: its streams, not the current GPU's
                self._on_cuda()
        return self.loss, self.hidden

    def _on_cuda(self) -> None:
        lrs = tuple(float(group["lr"]) for group in self.optimizer.param_groups)
        # the seed is asked for only where it matters (a host call, but on every step)
        seed = torch.cuda.initial_seed() if self.cudnn_dropout else None
        action = self.next_action(lrs, seed)
        if action == "eager":
            self.graph = None  # the eager step may free the graph's cuDNN dropout state
            self._warm_up()
            return
        if action == "capture":
            self._capture(lrs)
        self.graph.replay()
        self.replays += 1

    def next_action(self, lrs: tuple[float, ...], seed: int | None) -> str:
        """"replay" the graph, "capture" a new one (the lr changed), or run this step
        "eager" (warming up, or cuDNN's dropout state is due to be replaced after a seed)."""
        reseeded = self.cudnn_dropout and seed != self.seed_seen
        if self.warmup_left > 0 or reseeded:
            return "eager"
        if self.graph is None or lrs != self.captured_lrs:
            return "capture"
        return "replay"

    def _load(self, inputs: torch.Tensor, targets: torch.Tensor, hidden: Hidden | None) -> None:
        self.inputs.copy_(inputs)
        self.targets.copy_(targets)
        if hidden is None:  # start of the data: a fresh state
            for buffer in _parts(self.hidden):
                buffer.zero_()
            return
        for buffer, value in zip(_parts(self.hidden), _parts(hidden), strict=True):
            if value is not buffer:  # e.g. a resumed run's state, or after an eager window
                buffer.copy_(value.detach())

    def _body(self) -> None:
        """The step itself, reading and writing only the fixed buffers (and gradients,
        which the caller has set to None)."""
        loss, hidden = _train_on(self.model, self.optimizer, self.config, self.autocast,
                                 self.inputs, self.targets, self.hidden)  # fmt: skip
        with torch.no_grad():
            self.loss.copy_(loss)
            for buffer, value in zip(_parts(self.hidden), _parts(hidden), strict=True):
                buffer.copy_(value)

    def _warm_up(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.optimizer.zero_grad(set_to_none=True)
            self._body()
        torch.cuda.current_stream().wait_stream(side)
        self.warmup_left = max(0, self.warmup_left - 1)
        self.seed_seen = torch.cuda.initial_seed()

    def _capture(self, lrs: tuple[float, ...]) -> None:
        self.graph = None  # the old graph's memory goes back with it
        self.optimizer.zero_grad(set_to_none=True)  # the graph's backward writes new ones
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._body()
        self.graph, self.captured_lrs = graph, lrs
        self.captures += 1
        if self.captures > 1:
            log.debug("lr changed to %s: step captured again (capture %d)", lrs, self.captures)

"""The buffered training step (``cuda_graph``): on a CPU it runs without a graph, and must
train exactly as the eager loop does (windows, short last windows, hidden state carried and
reset at the end of the data, anneals, resumes). Its capture and replay on CUDA are tested
in test_gpu.py."""

import pytest
import torch
from test_fit import losses, saved_states

from tune_lm.lm import metrics as M
from tune_lm.lm.batching import batchify, window_starts
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.errors import ConfigError
from tune_lm.lm.fit import fit
from tune_lm.lm.model import RNNLanguageModel
from tune_lm.lm.step import GraphedStep
from tune_lm.lm.synthetic import make_synthetic_corpus


@pytest.fixture(scope="module")
def corpus():
    return make_synthetic_corpus(train_tokens=6000, valid_tokens=1500, test_tokens=1500, seed=3)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"model": "GRU", "nlayers": 2, "optimizer": "adamw", "lr": 0.01, "clip": 0.0},
        {"lr": 60.0, "epochs": 5},  # big steps: the lr is annealed on plateaus
        {"eval_every_tokens": 300, "max_tokens_per_epoch": 1000, "model": "RNN_TANH"},
        {"precision": "bf16", "tied": True},
    ],
)
def test_buffered_step_trains_exactly_like_the_eager_loop(tiny_config, corpus, changes):
    config = tiny_config.replace(bptt=7, **changes)
    rows = batchify(corpus.train, config.batch_size).size(0)
    assert (rows - 1) % config.bptt, "the data must end in a short window"
    assert len(window_starts(rows, config.bptt)) > 1
    eager = fit(config, corpus=corpus)
    buffered = fit(config.replace(cuda_graph=True), corpus=corpus)
    assert losses(buffered.history) == losses(eager.history)
    assert buffered.metrics[M.TEST_PPL] == eager.metrics[M.TEST_PPL]
    if "lr" in changes and changes["lr"] == 60.0:
        assert len({h[M.LR] for h in eager.history}) > 1, "no anneal happened: test is idle"


def test_a_run_resumes_across_the_switch(tiny_config, corpus):
    """cuda_graph may change on resume, either way, and training continues unchanged."""
    config = tiny_config.replace(epochs=4, bptt=7)
    full, states = saved_states(config, corpus)
    graphed = config.replace(cuda_graph=True)
    resumed = fit(graphed, corpus=corpus, state=states[1])
    assert losses(resumed.history) == losses(full.history)
    _, graphed_states = saved_states(graphed, corpus)
    back = fit(config, corpus=corpus, state=graphed_states[0])
    assert losses(back.history) == losses(full.history)


def test_on_a_cpu_nothing_is_captured(tiny_config, corpus):
    config = tiny_config.replace(cuda_graph=True, bptt=7)
    model = RNNLanguageModel.from_config(config, corpus.ntokens)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    step = GraphedStep(model, optimizer, config, torch.device("cpu"))
    data = batchify(corpus.train, config.batch_size)
    loss, hidden = step(data[:7], data[1:8], None)
    assert step.captures == step.replays == 0
    assert loss is step.loss and hidden is step.hidden  # the fixed buffers
    assert torch.isfinite(loss) and loss > 0
    short_loss, short_hidden = step(data[:3], data[1:4], hidden)  # a short window: eager
    assert short_loss is not step.loss and short_hidden is not step.hidden


@pytest.mark.parametrize("nlayers,dropout,cudnn_dropout", [(2, 0.2, True), (2, 0.0, False),
                                                         (1, 0.2, False)])  # fmt: skip
def test_when_the_step_is_replayed_captured_or_run_eagerly(tiny_config, nlayers, dropout,
                                                           cudnn_dropout):  # fmt: skip
    """The CUDA decision (here without a GPU): eager while warming up, a capture when there is
    no graph or the lr changed, and, only where cuDNN's own dropout between layers is used,
    an eager step after a new seed (torch replaces that dropout state then)."""
    config = tiny_config.replace(cuda_graph=True, nlayers=nlayers, dropout=dropout)
    model = RNNLanguageModel.from_config(config, 50)
    step = GraphedStep(model, torch.optim.SGD(model.parameters(), lr=1.0), config,
                       torch.device("cpu"))  # fmt: skip
    assert step.cudnn_dropout is cudnn_dropout
    lrs = (1.0,)
    assert step.next_action(lrs, 7) == "eager"  # warming up
    step.warmup_left, step.seed_seen = 0, 7  # as after the warm-up steps, under seed 7
    assert step.next_action(lrs, 7) == "capture"  # no graph yet
    step.graph, step.captured_lrs = object(), lrs  # a stand-in: only "is there one" is asked
    assert step.next_action(lrs, 7) == "replay"
    assert step.next_action((0.25,), 7) == "capture"  # annealed
    assert step.next_action(lrs, 8) == ("eager" if cudnn_dropout else "replay")  # reseeded


def test_cuda_graph_with_the_adaptive_softmax_is_refused():
    with pytest.raises(ConfigError, match="cuda_graph=True needs decoder='full'"):
        TrainConfig.from_dict({"cuda_graph": True, "decoder": "adaptive"})

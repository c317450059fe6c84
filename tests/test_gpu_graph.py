"""The training step captured as a CUDA graph (``cuda_graph: true``) on a CUDA GPU: it is
replayed (graph launches, not per-kernel ones, and no host sync), trains like the eager
step, is captured again when the lr changes, and draws new dropout masks at each replay.
Skipped without CUDA (conftest); run by ``benchmarks/gpu_check.py``."""

from __future__ import annotations

import pytest
import torch
from test_fit import saved_states
from test_gpu import CUDA, RESUME_RTOL, small_config, sync_counts

from tune_lm.lm import metrics as M
from tune_lm.lm.batching import batchify, get_window, window_starts
from tune_lm.lm.fit import fit, make_optimizer
from tune_lm.lm.model import RNNLanguageModel
from tune_lm.lm.step import WARMUP_STEPS, GraphedStep, eager_step
from tune_lm.lm.synthetic import make_synthetic_corpus

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def corpus():
    return make_synthetic_corpus(train_tokens=60000, valid_tokens=3000, test_tokens=3000, seed=3)


def ready(corpus, **changes):
    """A graphed step, its model and optimizer, and the full-length windows of the data."""
    config = small_config(cuda_graph=True, **changes)
    model = RNNLanguageModel.from_config(config, corpus.ntokens).to(CUDA)
    optimizer = make_optimizer(config, model)
    data = batchify(corpus.train, config.batch_size).to(CUDA)
    windows = [get_window(data, start, config.bptt)
               for start in window_starts(data.size(0), config.bptt)]  # fmt: skip
    windows = [window for window in windows if window[0].size(0) == config.bptt]
    return GraphedStep(model, optimizer, config, CUDA), model, optimizer, config, windows


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_the_step_is_captured_once_then_replayed_without_kernel_launches_or_syncs(corpus, cell):
    step, model, optimizer, config, windows = ready(corpus, model=cell)
    hidden = None
    for inputs, targets in windows[: WARMUP_STEPS + 1]:
        _, hidden = step(inputs, targets, hidden)
    assert (step.captures, step.replays) == (1, 1)
    later = windows[WARMUP_STEPS + 1 : WARMUP_STEPS + 11]
    state = {"hidden": hidden}

    def graphed():
        for inputs, targets in later:
            _, state["hidden"] = step(inputs, targets, state["hidden"])

    def eager():
        for inputs, targets in later:
            _, state["hidden"] = eager_step(model, optimizer, config, step.eager_autocast,
                                            inputs, targets, state["hidden"])  # fmt: skip

    replayed, unrolled = sync_counts(graphed), sync_counts(eager)
    assert step.replays == 1 + len(later)
    assert replayed["graph_launches"] >= len(later), replayed
    assert replayed["kernel_launches"] * 10 < unrolled["kernel_launches"], (replayed, unrolled)
    assert replayed["runtime_syncs"] == 0 and replayed["debug_warnings"] == 0, replayed


@pytest.mark.parametrize("changes", [{}, {"optimizer": "adamw", "lr": 0.003},
                                     {"precision": "bf16"}])  # fmt: skip
def test_a_graphed_run_trains_like_an_eager_one(corpus, changes):
    """Without dropout the two do the same arithmetic (up to the embedding backward's
    atomics), through several epochs: the resume test's setting, which agreed to 1e-4 on an
    H200. (A changed lr's new capture is tested below.)"""
    config = small_config(dropout=0.0, epochs=3, max_tokens_per_epoch=8000, **changes)
    eager = fit(config, corpus=corpus)
    graphed = fit(config.replace(cuda_graph=True), corpus=corpus)
    assert [h[M.LR] for h in graphed.history] == [h[M.LR] for h in eager.history]
    for name in (M.TRAIN_LOSS, M.VAL_LOSS):
        expected = [entry[name] for entry in eager.history]
        assert [entry[name] for entry in graphed.history] == pytest.approx(
            expected, rel=RESUME_RTOL), name  # fmt: skip
    assert graphed.metrics[M.TEST_PPL] == pytest.approx(eager.metrics[M.TEST_PPL],
                                                        rel=RESUME_RTOL)  # fmt: skip


def test_a_changed_lr_is_captured_again_and_applied(corpus):
    step, model, optimizer, _, windows = ready(corpus, dropout=0.0)
    for inputs, targets in windows[: WARMUP_STEPS + 2]:
        step(inputs, targets, None)
    assert step.captures == 1
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    before = [parameter.detach().clone() for parameter in model.parameters()]
    step(*windows[WARMUP_STEPS + 2], None)
    assert step.captures == 2
    after = list(model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True)), "old lr replayed"


@pytest.mark.parametrize("where", ["embedding and output", "between recurrent layers"])
def test_each_replay_draws_new_dropout_masks(corpus, where):
    """Weights frozen (lr 0), the same window from the same state: only dropout can make
    two replays' losses differ, and it must (a mask frozen into the graph would repeat)."""
    step, model, optimizer, _, windows = ready(corpus, dropout=0.5, nlayers=2)
    if where == "between recurrent layers":
        model.drop.p = 0.0  # only cuDNN's own dropout between the layers is left
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    inputs, targets = windows[0]
    losses = [float(step(inputs, targets, None)[0]) for _ in range(WARMUP_STEPS + 4)]
    replayed = losses[WARMUP_STEPS:]
    assert step.replays == len(replayed)
    assert len(set(replayed)) == len(replayed), losses


def test_after_a_seed_a_model_with_dropout_between_layers_steps_eagerly_then_captures_again(
    corpus,
):
    """torch replaces cuDNN's dropout state (with a host sync) at the first training step
    after a manual seed, as fit's evaluations do: capturing then would fail, and a graph
    kept from before would use the freed state. So: one eager step, then a new capture,
    also when the seed is followed by a changed lr or by the data's short last window."""
    step, model, optimizer, config, windows = ready(corpus, dropout=0.2, nlayers=2)
    assert step.cudnn_dropout
    for inputs, targets in windows[: WARMUP_STEPS + 2]:
        step(inputs, targets, None)
    assert (step.captures, step.replays) == (1, 2)
    torch.manual_seed(11)
    for group in optimizer.param_groups:
        group["lr"] = 1.0  # a capture straight after the seed is what failed
    step(*windows[WARMUP_STEPS + 2], None)
    assert (step.captures, step.replays) == (1, 2), "not an eager step after the seed"
    step(*windows[WARMUP_STEPS + 3], None)
    assert (step.captures, step.replays) == (2, 3)
    torch.manual_seed(12)
    short = [window[: config.bptt // 2] for window in windows[0]]
    step(*short, None)  # the short last window: eager, and it replaces the dropout state
    step(*windows[0], None)
    step(*windows[1], None)
    assert (step.captures, step.replays) == (3, 4)
    torch.cuda.synchronize()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_graphed_run_with_dropout_between_layers_goes_through_many_evaluations(corpus):
    """The default model shape (2 layers, dropout between them), evaluated 4 times an epoch:
    every evaluation seeds, so each is followed by an eager step and a new capture. The run
    learns as the eager one does (on a CPU, seeds 1-3 of the eager run ended at val ppl
    4.6-5.2 from 39 after the first evaluation)."""
    config = small_config(nlayers=2, dropout=0.2, epochs=4, lr=20.0, eval_every_tokens=2000,
                          max_tokens_per_epoch=8000)  # fmt: skip
    eager = fit(config, corpus=corpus)
    graphed = fit(config.replace(cuda_graph=True), corpus=corpus)
    assert len(graphed.history) == len(eager.history) == 16
    best = graphed.metrics[M.BEST_VAL_PPL]
    assert best < 0.5 * graphed.history[0][M.VAL_PPL]
    assert best == pytest.approx(eager.metrics[M.BEST_VAL_PPL], rel=0.25)


def test_a_state_saved_on_a_cpu_resumes_as_a_cuda_graph_with_adamw(corpus):
    """A CPU run's AdamW state keeps its step counters on the CPU and says neither fused nor
    capturable; resumed on the GPU as a CUDA graph, the counters must move to the device
    (capturable kernels read them there) and the run goes on as the CPU run did."""
    config = small_config(optimizer="adamw", lr=0.003, dropout=0.0, epochs=2,
                          max_tokens_per_epoch=8000)  # fmt: skip
    on_cpu = config.replace(device="cpu")
    unbroken, states = saved_states(on_cpu, corpus)
    resumed = fit(config.replace(cuda_graph=True), corpus=corpus, state=states[0])
    assert [h[M.STEP] for h in resumed.history] == [1, 2]
    assert resumed.history[1][M.VAL_LOSS] == pytest.approx(unbroken.history[1][M.VAL_LOSS],
                                                           rel=1e-2)  # fmt: skip


def test_a_graphed_run_with_dropout_between_layers_resumes_like_an_unbroken_one(corpus):
    """Resumed from a mid-epoch evaluation, a graphed run re-creates cuDNN's dropout state
    at the same step as the unbroken graphed run (the evaluation's seed, then one eager
    step), so it goes on to the same losses, within the resume tolerance."""
    config = small_config(nlayers=2, dropout=0.2, epochs=2, cuda_graph=True,
                          eval_every_tokens=4000, max_tokens_per_epoch=8000)  # fmt: skip
    unbroken, states = saved_states(config, corpus)
    resumed = fit(config, corpus=corpus, state=states[0])  # after the first evaluation
    assert len(resumed.history) == len(unbroken.history) == 4  # the first one carried over
    for name in (M.VAL_LOSS, M.TRAIN_LOSS):
        expected = [entry[name] for entry in unbroken.history]
        got = [entry[name] for entry in resumed.history]
        assert got == pytest.approx(expected, rel=RESUME_RTOL), name

"""The training loop: it learns, it is deterministic, and a resumed run equals an unbroken one."""

import copy
import io
import math

import pytest
import torch

from tune_lm.lm import metrics as M
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.errors import ConfigError, DataError
from tune_lm.lm.fit import fit
from tune_lm.lm.synthetic import make_source, make_synthetic_corpus


@pytest.fixture(scope="module")
def corpus():
    return make_synthetic_corpus(train_tokens=6000, valid_tokens=1500, test_tokens=1500, seed=3)


def losses(history):
    return [(h[M.TRAIN_LOSS], h[M.VAL_LOSS], h[M.LR]) for h in history]


@pytest.mark.slow
def test_synthetic_corpus_is_learned_close_to_its_entropy_floor():
    corpus = make_synthetic_corpus(seed=0)
    floor = make_source(seed=0).perplexity_floor
    config = TrainConfig(
        data="synthetic",
        emsize=32,
        nhid=64,
        nlayers=1,
        dropout=0.0,
        epochs=6,
        batch_size=16,
        bptt=20,
        lr=20.0,
        threads=1,  # 2 would fight the other xdist worker for the 2 cores
    )
    result = fit(config, corpus=corpus)
    uniform = corpus.ntokens
    first, best = result.history[0][M.VAL_PPL], result.metrics[M.BEST_VAL_PPL]
    assert best < first < uniform
    assert best < 1.5 * floor, f"best val ppl {best:.3f} vs floor {floor:.3f}"
    assert result.metrics[M.TEST_PPL] < 1.5 * floor


def test_history_has_every_metric_per_epoch(tiny_config, corpus):
    result = fit(tiny_config, corpus=corpus)
    assert [h[M.EPOCH] for h in result.history] == [1.0, 2.0, 3.0]
    for entry in result.history:
        assert set(M.EVALUATION_METRICS) <= set(entry)
        assert entry[M.VAL_PPL] == pytest.approx(math.exp(entry[M.VAL_LOSS]))
        assert entry[M.TOKENS_PER_S] > 0 and entry[M.EPOCH_TIME_S] > 0
    best = min(h[M.VAL_LOSS] for h in result.history)
    assert result.metrics[M.BEST_VAL_LOSS] == best


def test_lr_is_annealed_exactly_when_validation_does_not_improve(corpus):
    # A big lr and several epochs make plateaus likely; the rule must hold either way.
    config = TrainConfig(
        data="synthetic",
        emsize=8,
        nhid=8,
        nlayers=1,
        epochs=6,
        batch_size=8,
        bptt=10,
        lr=60.0,
        threads=1,
    )
    history = fit(config, corpus=corpus, evaluate_test=False).history
    best = math.inf
    for previous, current in zip(history, history[1:], strict=False):
        improved = previous[M.VAL_LOSS] < best
        best = min(best, previous[M.VAL_LOSS])
        expected = previous[M.LR] if improved else previous[M.LR] / 4
        assert current[M.LR] == pytest.approx(expected)


def test_same_seed_same_perplexities(tiny_config, corpus):
    first = fit(tiny_config, corpus=corpus)
    second = fit(tiny_config, corpus=corpus)
    assert losses(first.history) == losses(second.history)
    assert first.metrics[M.TEST_PPL] == second.metrics[M.TEST_PPL]
    other = fit(tiny_config.replace(seed=7), corpus=corpus)
    assert losses(other.history) != losses(first.history)


def saved_states(config, corpus, state=None):
    """Run ``config`` (from ``state``) and keep each evaluation's state as it would come
    back from disk."""
    states = []

    def keep(epoch, result, state):
        buffer = io.BytesIO()
        torch.save(state.to_dict(), buffer)
        buffer.seek(0)
        states.append(torch.load(buffer, weights_only=True))

    return fit(config, corpus=corpus, on_epoch_end=keep, state=state), states


@pytest.mark.parametrize(
    "changes",
    [
        {},  # evaluation at epoch ends
        {"optimizer": "adamw", "lr": 0.01},  # optimizer state must come back too
        {"eval_every_tokens": 300, "max_tokens_per_epoch": 1000},  # mid-epoch, hidden carried
    ],
)
def test_resume_equals_uninterrupted_run(tiny_config, corpus, changes):
    config = tiny_config.replace(epochs=4, **changes)
    full, states = saved_states(config, corpus)
    assert len(states) == len(full.history) >= 4
    for k in (1, len(states) // 2):
        resumed = fit(config, corpus=corpus, state=states[k - 1])
        assert losses(resumed.history) == losses(full.history)
        assert resumed.metrics[M.TEST_PPL] == full.metrics[M.TEST_PPL]
        assert resumed.metrics[M.BEST_VAL_PPL] == full.metrics[M.BEST_VAL_PPL]


def test_a_state_saved_with_fused_or_capturable_kernels_resumes_with_this_runs(tiny_config,
                                                                               corpus):  # fmt: skip
    """A state saved on a GPU brings AdamW param groups marked fused (and capturable, with a
    CUDA graph). Resumed here, the run uses its own kernels again, as the unbroken run did,
    and the states it saves say so."""
    config = tiny_config.replace(epochs=3, optimizer="adamw", lr=0.01)
    full, states = saved_states(config, corpus)
    as_on_a_gpu = copy.deepcopy(states[0])
    for group in as_on_a_gpu["optimizer"]["param_groups"]:
        group["fused"], group["capturable"] = True, True
    resumed, later = saved_states(config, corpus, state=as_on_a_gpu)
    assert losses(resumed.history) == losses(full.history)
    for group in later[-1]["optimizer"]["param_groups"]:
        assert (group["fused"], group["capturable"]) == (None, False)


def test_evaluation_every_n_tokens_within_capped_epochs(tiny_config, corpus):
    config = tiny_config.replace(epochs=2, eval_every_tokens=400, max_tokens_per_epoch=1200)
    history = fit(config, corpus=corpus, evaluate_test=False).history
    # 1200 tokens = 15 windows of 8x10; an evaluation every 5 windows -> 3 per epoch.
    assert [round(h[M.EPOCH], 3) for h in history] == [0.333, 0.667, 1.0, 1.333, 1.667, 2.0]
    assert [h[M.STEP] for h in history] == list(range(1, 7))


def test_resume_with_a_different_model_is_refused(tiny_config, corpus):
    _, states = saved_states(tiny_config.replace(epochs=1), corpus)
    with pytest.raises(ConfigError, match="nhid"):
        fit(tiny_config.replace(nhid=32, emsize=32), corpus=corpus, state=states[0])
    # More epochs is a legitimate continuation.
    longer = fit(tiny_config.replace(epochs=2), corpus=corpus, state=states[0])
    assert len(longer.history) == 2


def test_corpus_smaller_than_one_batch_is_a_data_error(tiny_config):
    small = make_synthetic_corpus(train_tokens=10, valid_tokens=20, test_tokens=20, seed=1)
    with pytest.raises(DataError, match="fewer than one batch"):
        fit(tiny_config.replace(batch_size=64), corpus=small)


@pytest.mark.slow
@pytest.mark.parametrize("model,decoder", [("LSTM", "full"), ("GRU", "full"), ("GRU", "adaptive")])
def test_bf16_autocast_learns_as_well_as_fp32(model, decoder):
    """precision=bf16 trains in bfloat16 (here on the CPU) and ends within noise of fp32.
    (A gentle lr: with lr 20 the plateau-annealing schedule turns tiny differences into
    different anneal epochs, and that, not precision, dominates the end result.)"""
    corpus = make_synthetic_corpus(seed=0)
    floor = make_source(seed=0).perplexity_floor
    config = TrainConfig(data="synthetic", model=model, decoder=decoder, emsize=32, nhid=64,
                         nlayers=1, dropout=0.0, epochs=4, batch_size=16, bptt=20, lr=5.0,
                         threads=1)  # fmt: skip
    fp32 = fit(config, corpus=corpus, evaluate_test=False).metrics[M.BEST_VAL_PPL]
    bf16 = fit(config.replace(precision="bf16"), corpus=corpus, evaluate_test=False)
    assert bf16.metrics[M.BEST_VAL_PPL] == pytest.approx(fp32, rel=0.01)
    assert bf16.metrics[M.BEST_VAL_PPL] < 1.6 * floor
    assert bf16.metrics[M.BEST_VAL_PPL] != fp32  # really a different arithmetic


def test_mid_epoch_evaluations_anneal_at_most_once_per_epoch(corpus):
    """With eval_every_tokens, the plateau rule is applied at the end of each epoch only:
    mid-epoch evaluations keep the best weights but never divide the learning rate."""
    config = TrainConfig(data="synthetic", emsize=8, nhid=8, nlayers=1, epochs=4,
                         batch_size=8, bptt=10, lr=80.0, threads=1,
                         eval_every_tokens=400)  # fmt: skip
    history = fit(config, corpus=corpus, evaluate_test=False).history
    assert len(history) > 3 * config.epochs  # several evaluations per epoch
    for previous, current in zip(history, history[1:], strict=False):
        if current[M.LR] != previous[M.LR]:
            assert float(previous[M.EPOCH]).is_integer(), (previous, current)
    assert len({entry[M.LR] for entry in history}) <= config.epochs


def test_a_pbt_perturbation_continues_the_weights_with_the_new_lr_and_dropout(
    tiny_config, corpus
):
    """adopt(): the state trained with lr 5 / dropout 0.1 continues under lr 2 / dropout
    0.3 (the lr takes over, the change is recorded); a shape change is still refused."""
    from tune_lm.lm.train_state import TrainState, adopt

    config = tiny_config.replace(epochs=3, lr_decay=1.0)
    full, states = saved_states(config, corpus)
    state = TrainState.from_dict(states[0])
    perturbed = config.replace(lr=2.0, dropout=0.3)
    adopted = adopt(state, perturbed)
    assert adopted.lr == 2.0
    assert adopted.perturbations == [{"epoch": 1, "window": 0, "lr": [5.0, 2.0],
                                      "dropout": [0.1, 0.3]}]  # fmt: skip
    run = fit(perturbed, corpus=corpus, state=adopted)
    assert [h[M.LR] for h in run.history] == [5.0, 2.0, 2.0]  # epoch 1 was the parent's
    assert losses(run.history)[0] == losses(full.history)[0]  # the parent's epoch 1 kept
    assert losses(run.history)[1] != losses(full.history)[1]  # then the new values act
    # Unchanged lr and dropout: nothing to adopt, nothing recorded.
    assert adopt(TrainState.from_dict(states[0]), config).perturbations == []
    with pytest.raises(ConfigError, match="nhid"):
        adopt(TrainState.from_dict(states[0]), perturbed.replace(nhid=32, emsize=32))


def test_a_perplexity_past_float_range_stops_training_as_diverged(tiny_config):
    """A validation loss over ~709 nats is finite, but its perplexity is inf: the run
    has diverged and stops there (it trained on, epoch after epoch)."""
    config = tiny_config.model_copy(update={"lr": 12520.0, "clip": 0.0, "epochs": 3,
                                            "max_tokens_per_epoch": 1600})  # fmt: skip
    result = fit(config, evaluate_test=False)
    assert len(result.history) == 1, [h[M.VAL_PPL] for h in result.history]
    assert result.history[0][M.VAL_PPL] == math.inf

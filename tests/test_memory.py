"""The memory bound checked before a training allocates (lm/memory.py)."""

import pytest
import torch

from tune_lm.lm.config import TrainConfig
from tune_lm.lm.errors import ConfigError
from tune_lm.lm.memory import (
    check_fits_in_memory,
    memory_problem,
    parameter_count,
    training_bytes,
)
from tune_lm.lm.model import RNNLanguageModel


@pytest.mark.parametrize("settings", [
    {"model": "LSTM", "emsize": 24, "nhid": 40, "nlayers": 2},
    {"model": "GRU", "emsize": 32, "nhid": 32, "nlayers": 3, "tied": True},
    {"model": "RNN_TANH", "emsize": 8, "nhid": 12, "nlayers": 1},
    {"model": "RNN_RELU", "emsize": 16, "nhid": 16, "nlayers": 2, "tied": True},
])  # fmt: skip
def test_the_weights_counted_are_the_models_own(settings):
    config = TrainConfig(data="synthetic", **settings)
    model = RNNLanguageModel.from_config(config, 137)
    assert parameter_count(config, 137) == sum(p.numel() for p in model.parameters())


def test_an_adaptive_decoder_counts_no_more_than_it_has():
    config = TrainConfig(data="synthetic", emsize=32, nhid=32, decoder="adaptive",
                         adaptive_cutoffs=[50, 100])  # fmt: skip
    model = RNNLanguageModel.from_config(config, 300)
    assert parameter_count(config, 300) <= sum(p.numel() for p in model.parameters())


def test_the_bound_grows_with_adamw_and_the_batch():
    config = TrainConfig(data="synthetic", emsize=16, nhid=16, batch_size=4, bptt=5)
    weights = parameter_count(config, 100)
    assert training_bytes(config, 100) == 4 * (2 * weights + 2 * 4 * 5 * 100)
    adamw = config.model_copy(update={"optimizer": "adamw"})
    assert training_bytes(adamw, 100) == training_bytes(config, 100) + 4 * 2 * weights


def test_a_training_beyond_free_memory_is_refused_naming_the_sizes():
    config = TrainConfig(data="synthetic", emsize=10**12, nhid=16)
    with pytest.raises(ConfigError, match="emsize 1000000000000.*needs at least .* GiB free"):
        check_fits_in_memory(config, 50, torch.device("cpu"))
    small = TrainConfig(data="synthetic", emsize=16, nhid=16)
    check_fits_in_memory(small, 50, torch.device("cpu"))  # fits: nothing said
    assert memory_problem(config, 50, None, "a device that cannot say") is None

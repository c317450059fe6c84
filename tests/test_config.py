"""The validated config: unknown keys, types and impossible combinations fail clearly."""

import pytest
from pydantic import ValidationError

from tune_lm.lm.config import TrainConfig
from tune_lm.lm.errors import ConfigError


def test_defaults_match_the_pytorch_example():
    config = TrainConfig()
    assert (config.model, config.emsize, config.nhid, config.nlayers) == ("LSTM", 200, 200, 2)
    assert (config.lr, config.clip, config.batch_size, config.bptt) == (20.0, 0.25, 20, 35)
    assert (config.dropout, config.tied, config.seed, config.eval_batch_size) == (
        0.2,
        False,
        1111,
        10,
    )


def test_tied_needs_equal_sizes():
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict({"tied": True, "emsize": 200, "nhid": 100})
    message = str(error.value)
    assert "tied" in message and "nhid" in message and "emsize" in message
    assert TrainConfig.from_dict({"tied": True, "emsize": 100, "nhid": 100}).tied


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match="Did you mean 'emsize'"):
        TrainConfig.from_dict({"emsiz": 100}, source="space.yaml")


@pytest.mark.parametrize(
    "values,field",
    [
        ({"emsize": 0}, "emsize"),
        ({"dropout": 1.5}, "dropout"),
        ({"lr": -1}, "lr"),
        ({"model": "LSTMM"}, "model"),
        ({"bptt": "long"}, "bptt"),
        ({"device": "gpu"}, "device"),
        ({"optimizer": "adam"}, "optimizer"),
    ],
)
def test_bad_values_name_the_field(values, field):
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict(values, source="space.yaml")
    assert field in str(error.value) and "space.yaml" in str(error.value)


def test_config_is_frozen_and_replace_validates():
    config = TrainConfig()
    with pytest.raises(ValidationError):
        config.emsize = 5  # type: ignore[misc]
    assert config.replace(emsize=50).emsize == 50
    with pytest.raises(ConfigError):
        config.replace(tied=True, nhid=10)

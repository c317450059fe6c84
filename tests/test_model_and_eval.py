"""The model's shapes and options, and perplexity against a brute-force computation."""

import math

import pytest
import torch

from tune_lm.lm.evaluate import EvalSplit, evaluate_loss
from tune_lm.lm.metrics import perplexity
from tune_lm.lm.model import RNNLanguageModel


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_forward_shapes_for_every_cell(cell):
    model = RNNLanguageModel(30, cell=cell, emsize=8, nhid=12, nlayers=2, dropout=0.1)
    hidden = model.init_hidden(4)
    features, hidden = model(torch.randint(0, 30, (5, 4)), hidden)
    assert features.shape == (5, 4, 12)
    assert model.log_probs(features).shape == (5, 4, 30)
    parts = hidden if isinstance(hidden, tuple) else (hidden,)
    assert len(parts) == (2 if cell == "LSTM" else 1)
    assert all(part.shape == (2, 4, 12) for part in parts)


def test_tied_decoder_shares_the_embedding():
    model = RNNLanguageModel(30, emsize=8, nhid=8, tied=True)
    assert model.decoder.weight is model.encoder.weight
    assert sum(p.numel() for p in model.parameters()) < sum(
        p.numel() for p in RNNLanguageModel(30, emsize=8, nhid=8).parameters()
    )


def brute_force_mean_nll(model, tokens, batch_size, eos_id):
    """Column by column, one token at a time, from a zero state: no batching code used."""
    count = len(tokens)
    rows = math.ceil(count / batch_size)
    stream = [eos_id] + tokens
    total = 0.0
    model.eval()
    with torch.no_grad():
        for column in range(batch_size):
            hidden = model.init_hidden(1)
            for k in range(column * rows, min((column + 1) * rows, count)):
                features, hidden = model(torch.tensor([[stream[k]]]), hidden)
                total -= model.log_probs(features)[0, 0, tokens[k]].item()
    return total / count


@pytest.mark.parametrize("cell,decoder", [("LSTM", "full"), ("GRU", "full"), ("LSTM", "adaptive")])
@pytest.mark.parametrize("count,batch_size,bptt", [(103, 10, 7), (9, 10, 3), (50, 3, 50)])
def test_perplexity_equals_brute_force(cell, decoder, count, batch_size, bptt):
    torch.manual_seed(0)
    counts = torch.randint(0, 100, (17,))
    model = RNNLanguageModel(17, cell=cell, emsize=6, nhid=16, nlayers=2, dropout=0.3,
                             decoder=decoder, cutoffs=[4, 10], token_counts=counts)  # fmt: skip
    tokens = torch.randint(1, 17, (count,))
    split = EvalSplit(tokens, batch_size, eos_id=0, device=torch.device("cpu"))
    loss = evaluate_loss(model, split, bptt)
    expected = brute_force_mean_nll(model, tokens.tolist(), batch_size, eos_id=0)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert perplexity(loss) == pytest.approx(math.exp(expected), rel=1e-5)


def test_perplexity_of_a_diverged_loss_is_inf():
    assert perplexity(float("nan")) == math.inf
    assert perplexity(1e6) == math.inf
    assert perplexity(0.0) == 1.0


def test_adaptive_softmax_is_a_distribution_over_word_ids():
    counts = torch.tensor([5, 50, 1, 20, 7, 3, 9, 30, 2, 4])
    model = RNNLanguageModel(10, emsize=4, nhid=16, nlayers=1, decoder="adaptive",
                             cutoffs=[3, 6], token_counts=counts)  # fmt: skip
    # Most frequent word first: id 1 (50), then 7 (30), then 3 (20).
    assert model.frequency_rank[[1, 7, 3]].tolist() == [0, 1, 2]
    features, _ = model(torch.randint(0, 10, (3, 2)), model.init_hidden(2))
    probs = model.log_probs(features).exp()
    assert torch.allclose(probs.sum(-1), torch.ones(3, 2), atol=1e-5)
    # The training loss is the mean NLL of the same distribution.
    targets = torch.randint(0, 10, (3, 2))
    expected = -model.log_probs(features).gather(-1, targets.unsqueeze(-1)).mean()
    assert model.loss(features, targets).item() == pytest.approx(expected.item(), rel=1e-5)


def test_adaptive_clusters_need_a_wide_enough_hidden_layer():
    with pytest.raises(ValueError, match="nhid=8 is too small"):
        RNNLanguageModel(100, nhid=8, decoder="adaptive", cutoffs=[10, 20, 50])

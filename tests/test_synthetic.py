"""Tests of tune_lm.lm.synthetic: the Markov source and the corpus made from it."""

from __future__ import annotations

import math

import pytest
import torch

from tune_lm.lm.data import load_corpus, write_corpus_folder
from tune_lm.lm.errors import DataError
from tune_lm.lm.synthetic import EOS_STATE, make_source, make_synthetic_corpus


def test_same_seed_same_source_and_corpus():
    assert torch.equal(make_source(seed=3).transition, make_source(seed=3).transition)
    assert not torch.equal(make_source(seed=3).transition, make_source(seed=4).transition)
    first, second = make_synthetic_corpus(seed=3), make_synthetic_corpus(seed=3)
    assert first.fingerprint == second.fingerprint
    assert all(torch.equal(first.split(s), second.split(s)) for s in ("train", "valid", "test"))
    assert make_synthetic_corpus(seed=4).fingerprint != first.fingerprint


@pytest.mark.parametrize(("vocab_size", "branching"), [(50, 3), (2, 2), (7, 7), (200, 5)])
def test_rows_are_stochastic_and_sparse(vocab_size, branching):
    source = make_source(vocab_size, branching, seed=1)
    transition = source.transition
    assert transition.shape == (vocab_size, vocab_size) and transition.dtype == torch.float64
    assert torch.allclose(transition.sum(dim=1), torch.ones(vocab_size, dtype=torch.float64))
    assert ((transition > 0).sum(dim=1) == branching).all()
    assert source.words[0] == "<eos>" and source.words[1] == "w1"
    assert len(set(source.words)) == vocab_size


def test_stationary_distribution_is_stationary():
    source = make_source(seed=2)
    stationary = source.stationary
    assert torch.allclose(stationary @ source.transition, stationary, atol=1e-12)
    assert math.isclose(float(stationary.sum()), 1.0, abs_tol=1e-12)
    assert (stationary > 0).all()


def test_entropy_rate_matches_empirical_nll_of_a_long_sample():
    source = make_source(seed=0)
    states = torch.tensor(source.sample(300_000, torch.Generator().manual_seed(5)))
    nll_nats = -torch.log(source.transition[states[:-1], states[1:]]).mean().item()
    assert nll_nats == pytest.approx(source.entropy_rate_nats, abs=0.01)
    assert source.perplexity_floor == pytest.approx(math.exp(source.entropy_rate_nats))
    # The sample visits states in proportion to the stationary distribution.
    frequencies = torch.bincount(states, minlength=len(source.words)).double() / len(states)
    assert torch.allclose(frequencies, source.stationary, atol=0.005)


def test_sample_continues_from_previous_state():
    source = make_source(seed=0)
    states = source.sample(500, torch.Generator().manual_seed(0), previous=EOS_STATE)
    steps = zip([EOS_STATE, *states[:-1]], states, strict=True)
    assert all(source.transition[a, b] > 0 for a, b in steps)


def test_corpus_shape_and_splits():
    corpus = make_synthetic_corpus(
        vocab_size=20, train_tokens=3_000, valid_tokens=500, test_tokens=500, seed=7
    )
    assert corpus.name == "synthetic" and corpus.ntokens == 20
    assert corpus.vocab == make_source(20, 3, seed=7).words
    assert dict(corpus.unk_counts) == {"valid": 0, "test": 0}
    for split, minimum in (("train", 3_000), ("valid", 500), ("test", 500)):
        ids = corpus.split(split)
        assert ids.dtype == torch.int64 and ids.numel() >= minimum
        assert ids[-1].item() == EOS_STATE  # every split ends a line
        assert ids.min() >= 0 and ids.max() < 20


def test_corpus_follows_the_chain_of_make_source():
    corpus = make_synthetic_corpus(seed=9, train_tokens=2_000)
    transition = make_source(seed=9).transition
    stream = torch.cat([corpus.train, corpus.valid, corpus.test])  # one consecutive run
    assert (transition[stream[:-1], stream[1:]] > 0).all()


def test_files_round_trip(tmp_path):
    corpus = make_synthetic_corpus(train_tokens=5_000, valid_tokens=1_000, test_tokens=1_000)
    write_corpus_folder(corpus, tmp_path / "synthetic")
    loaded = load_corpus(str(tmp_path / "synthetic"))
    train_words = {corpus.vocab[i] for i in corpus.train.tolist()}
    for split in ("train", "valid", "test"):
        original = [corpus.vocab[i] for i in corpus.split(split).tolist()]
        # Words never seen in train come back as <unk>, as for any corpus.
        expected = [word if word in train_words else "<unk>" for word in original]
        assert [loaded.vocab[i] for i in loaded.split(split).tolist()] == expected


@pytest.mark.parametrize(
    "kwargs", [{"vocab_size": 1}, {"branching": 1}, {"vocab_size": 5, "branching": 6}]
)
def test_bad_parameters_raise(kwargs):
    with pytest.raises(DataError, match="synthetic corpus"):
        make_source(**kwargs)


def test_empty_split_request_raises():
    with pytest.raises(DataError, match="at least 1 token"):
        make_synthetic_corpus(valid_tokens=0)

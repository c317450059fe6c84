"""A synthetic corpus drawn from a random sparse Markov chain with a known entropy rate.

No model can predict the chain better than the chain itself, so a language model
trained on it should approach ``MarkovSource.perplexity_floor`` from above. That makes
"training converges" testable offline, in seconds, with an exact target.

The chain over V states is sparse: state i can move to ``branching`` successors only::

    state:    0 (<eos>)   1 (w1)   2 (w2)  ...  V-1
    edges:    i -> i+1 mod V always (one cycle through all states: irreducible)
              1 -> 1 self-loop       (a cycle of length 1: aperiodic)
              + random distinct successors up to ``branching`` per state
"""

from __future__ import annotations

import hashlib
import json
import math
from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property

import torch

from tune_lm.lm.corpus import EOS, Corpus
from tune_lm.lm.errors import DataError

EOS_STATE = 0
# Part of the fingerprint: bump it when the construction below changes.
GENERATOR_VERSION = "tune_lm.synthetic/1"


@dataclass(frozen=True, eq=False)
class MarkovSource:
    """A first-order Markov chain whose state i emits ``words[i]`` (state 0 is ``<eos>``)."""

    words: tuple[str, ...]
    transition: torch.Tensor  # (V, V) float64, rows sum to 1, `branching` non-zeros per row

    @cached_property
    def stationary(self) -> torch.Tensor:
        """(V,) float64: the unique pi with pi @ transition == pi and sum(pi) == 1."""
        n_states = len(self.words)
        # Solve (P^T - I) pi = 0 with the last equation swapped for sum(pi) = 1. The
        # chain is irreducible, so this system is non-singular; unlike power
        # iteration it needs no convergence threshold.
        system = self.transition.T - torch.eye(n_states, dtype=torch.float64)
        system[-1] = 1.0
        rhs = torch.zeros(n_states, dtype=torch.float64)
        rhs[-1] = 1.0
        return torch.linalg.solve(system, rhs)

    @property
    def entropy_rate_nats(self) -> float:
        """H = -sum_i pi_i sum_j P_ij log P_ij: the best achievable mean NLL per token."""
        row_entropy = -torch.xlogy(self.transition, self.transition).sum(dim=1)  # (V,)
        return float((self.stationary * row_entropy).sum())

    @property
    def perplexity_floor(self) -> float:
        """exp(entropy rate): the lowest perplexity any model can reach on long samples."""
        return math.exp(self.entropy_rate_nats)

    @cached_property
    def _sampling_tables(self) -> tuple[list[float], list[tuple[list[int], list[float]]]]:
        # Plain-Python cumulative tables: one bisect per token is much faster than a
        # torch.multinomial call per token.
        def cumulative(probs: torch.Tensor) -> list[float]:
            cum = probs.cumsum(0).tolist()
            cum[-1] = 1.0  # so a uniform draw in [0, 1) never falls past the end
            return cum

        rows = []
        for row in self.transition:
            successors = row.nonzero().flatten()
            rows.append((successors.tolist(), cumulative(row[successors])))
        return cumulative(self.stationary), rows

    def sample(
        self, n_tokens: int, generator: torch.Generator, previous: int | None = None
    ) -> list[int]:
        """Draw ``n_tokens`` consecutive states.

        The first state follows ``previous`` when given (to continue a run), else it is
        drawn from the stationary distribution, so the whole sample is stationary.
        """
        stationary_cum, rows = self._sampling_tables
        uniforms = torch.rand(n_tokens, generator=generator, dtype=torch.float64).tolist()
        states = []
        state = previous
        for uniform in uniforms:
            if state is None:
                state = bisect_right(stationary_cum, uniform)
            else:
                successors, cum = rows[state]
                state = successors[bisect_right(cum, uniform)]
            states.append(state)
        return states


def _build_source(vocab_size: int, branching: int, generator: torch.Generator) -> MarkovSource:
    if vocab_size < 2 or not 2 <= branching <= vocab_size:
        raise DataError(
            f"synthetic corpus: need vocab_size >= 2 and 2 <= branching <= vocab_size, got "
            f"vocab_size={vocab_size}, branching={branching}; change those settings"
        )
    transition = torch.zeros(vocab_size, vocab_size, dtype=torch.float64)
    for state in range(vocab_size):
        required = [(state + 1) % vocab_size] + ([state] if state == 1 else [])
        order = torch.randperm(vocab_size, generator=generator).tolist()
        successors = (required + [s for s in order if s not in required])[:branching]
        # Normalised Exponential(1) draws are Dirichlet(1, ..., 1); the floor keeps every
        # chosen edge strictly positive so each row has exactly `branching` non-zeros.
        uniforms = torch.rand(branching, generator=generator, dtype=torch.float64)
        weights = (-torch.log1p(-uniforms)).clamp_min(1e-3)
        transition[state, successors] = weights / weights.sum()
    words = (EOS, *(f"w{index}" for index in range(1, vocab_size)))
    return MarkovSource(words, transition)


def make_source(vocab_size: int = 50, branching: int = 3, seed: int = 0) -> MarkovSource:
    """A random irreducible, aperiodic sparse chain, the same for the same arguments."""
    return _build_source(vocab_size, branching, torch.Generator().manual_seed(seed))


def _sample_split(
    source: MarkovSource, n_tokens: int, generator: torch.Generator, previous: int | None
) -> list[int]:
    """At least ``n_tokens`` states, run on to the next ``<eos>`` so the split ends a line."""
    states = source.sample(n_tokens, generator, previous)
    while states[-1] != EOS_STATE:
        more = source.sample(64, generator, states[-1])
        end = more.index(EOS_STATE) + 1 if EOS_STATE in more else len(more)
        states.extend(more[:end])
    return states


def make_synthetic_corpus(
    vocab_size: int = 50,
    branching: int = 3,
    train_tokens: int = 20_000,
    valid_tokens: int = 4_000,
    test_tokens: int = 4_000,
    seed: int = 0,
) -> Corpus:
    """A corpus sampled from ``make_source(vocab_size, branching, seed)``.

    Train, valid and test are consecutive stretches of one run of the chain, started
    from its stationary distribution. Each split runs on past its requested length to
    the next ``<eos>`` (about 1 / pi[<eos>] extra tokens on average), so that written
    as lines with :func:`tune_lm.lm.data.write_corpus_folder` it reads back exactly. Token
    ids are state indices and ``vocab`` lists the words in id order.
    """
    if min(train_tokens, valid_tokens, test_tokens) < 1:
        raise DataError(
            f"synthetic corpus: every split needs at least 1 token, got train={train_tokens}, "
            f"valid={valid_tokens}, test={test_tokens}"
        )
    # One generator for the chain and then the samples: the seed fixes everything.
    generator = torch.Generator().manual_seed(seed)
    source = _build_source(vocab_size, branching, generator)
    splits = {}
    previous = None
    for split, n_tokens in (
        ("train", train_tokens),
        ("valid", valid_tokens),
        ("test", test_tokens),
    ):
        states = _sample_split(source, n_tokens, generator, previous)
        splits[split] = torch.tensor(states, dtype=torch.int64)
        previous = states[-1]
    params = {
        "generator": GENERATOR_VERSION,
        "vocab_size": vocab_size,
        "branching": branching,
        "train_tokens": train_tokens,
        "valid_tokens": valid_tokens,
        "test_tokens": test_tokens,
        "seed": seed,
    }
    fingerprint = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    return Corpus(
        name="synthetic",
        vocab=source.words,
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        fingerprint=fingerprint,
        unk_counts={"valid": 0, "test": 0},
    )

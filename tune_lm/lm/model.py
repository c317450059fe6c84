"""The embedding + recurrent network + decoder language model.

The decoder is a full softmax over the vocabulary (a linear layer), or an adaptive
softmax (Grave et al. 2017): frequent words in a small head, rare ones in clusters
behind it, so a step costs a fraction of a full softmax over 33k words while every
token still gets an exact log-probability (perplexity stays comparable).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tune_lm.lm.batching import IGNORE
from tune_lm.lm.config import TrainConfig

# Hidden state: (h, c) for an LSTM, h alone for GRU / Elman cells; each (nlayers, batch, nhid).
Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
ADAPTIVE_DIV_VALUE = 4.0  # each cluster's projection is 4x narrower than the previous


def auto_cutoffs(ntokens: int, nhid: int) -> list[int]:
    """Cluster boundaries by frequency rank for ``ntokens`` words; no more tail clusters
    than ``nhid`` can give a projection of at least one unit each."""
    cutoffs = [c for c in (1000, 5000, 20000, 80000) if c < ntokens - 1]
    max_clusters = max(1, int(math.log(max(nhid, 1), ADAPTIVE_DIV_VALUE)))
    return cutoffs[:max_clusters] or [max(1, ntokens // 2)]


def _autocast_would_make_cudnn_rnn_fp16(inputs: torch.Tensor) -> bool:
    """True under a CUDA autocast to bfloat16: torch's autocast rule for cuDNN RNNs casts
    them to float16 whatever dtype the autocast was given (ATen's AutocastRNN.cpp), and
    fp16 without loss scaling can underflow gradients. cuDNN has no bf16 RNN in torch (it
    accepts double, float and half), so there the recurrent layers stay fp32 (cuDNN, TF32
    where torch allows it) and bf16 covers the decoder. Measured on an H200: see the
    README's "On a GPU"."""
    return (
        inputs.is_cuda
        and torch.is_autocast_enabled("cuda")
        and torch.get_autocast_dtype("cuda") != torch.float16
    )


def adaptive_problem(cutoffs: list[int], ntokens: int, nhid: int) -> str | None:
    """Why the adaptive softmax cannot use ``cutoffs`` with this vocabulary and width
    (None: it can); known only once the corpus is."""
    if cutoffs[-1] >= ntokens:
        return f"adaptive_cutoffs {cutoffs} must stay below the vocabulary size {ntokens}"
    if nhid // ADAPTIVE_DIV_VALUE ** len(cutoffs) < 1:
        return (f"adaptive_cutoffs {cutoffs} make {len(cutoffs)} tail clusters, each "
                f"{ADAPTIVE_DIV_VALUE:g}x narrower than the last; nhid={nhid} is too small "
                "for that. Use fewer cutoffs or a larger nhid")  # fmt: skip
    return None


class RNNLanguageModel(nn.Module):
    """Embedding -> dropout -> multi-layer RNN -> dropout -> decoder over the vocabulary.

    The recurrent layers apply ``dropout`` between them; the explicit dropout after the
    RNN covers the last one. With ``tied`` the decoder reuses the embedding matrix
    (Press & Wolf 2017; Inan et al. 2017), which needs nhid == emsize.
    """

    def __init__(
        self,
        ntokens: int,
        cell: str = "LSTM",
        emsize: int = 200,
        nhid: int = 200,
        nlayers: int = 2,
        dropout: float = 0.2,
        tied: bool = False,
        decoder: str = "full",
        cutoffs: list[int] | None = None,
        token_counts: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.ntokens, self.cell, self.nhid, self.nlayers = ntokens, cell, nhid, nlayers
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntokens, emsize)
        between_layers = dropout if nlayers > 1 else 0.0  # torch warns on dropout with 1 layer
        if cell in ("LSTM", "GRU"):
            self.rnn = getattr(nn, cell)(emsize, nhid, nlayers, dropout=between_layers)
        elif cell in ("RNN_TANH", "RNN_RELU"):
            nonlinearity = "tanh" if cell == "RNN_TANH" else "relu"
            self.rnn = nn.RNN(
                emsize, nhid, nlayers, nonlinearity=nonlinearity, dropout=between_layers
            )
        else:
            raise ValueError(f"unknown cell {cell!r}")
        self.adaptive = None
        if decoder == "adaptive":
            cutoffs = list(cutoffs) if cutoffs else auto_cutoffs(ntokens, nhid)
            problem = adaptive_problem(cutoffs, ntokens, nhid)
            if problem:
                raise ValueError(problem)
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(
                nhid, ntokens, cutoffs, div_value=ADAPTIVE_DIV_VALUE
            )
            # The adaptive softmax wants frequent words first: word id -> frequency rank.
            rank = torch.arange(ntokens)
            if token_counts is not None:
                order = torch.argsort(token_counts, descending=True, stable=True)
                rank[order] = torch.arange(ntokens)
            self.register_buffer("frequency_rank", rank)
        else:
            self.decoder = nn.Linear(nhid, ntokens)
            if tied:
                if nhid != emsize:
                    raise ValueError("tied weights need nhid == emsize")
                self.decoder.weight = self.encoder.weight
        self._init_weights()

    @classmethod
    def from_config(
        cls, config: TrainConfig, ntokens: int, token_counts: torch.Tensor | None = None
    ) -> RNNLanguageModel:
        return cls(
            ntokens,
            cell=config.model,
            emsize=config.emsize,
            nhid=config.nhid,
            nlayers=config.nlayers,
            dropout=config.dropout,
            tied=config.tied,
            decoder=config.decoder,
            cutoffs=config.adaptive_cutoffs,
            token_counts=token_counts,
        )

    def _init_weights(self) -> None:
        # The usual uniform init for word-level LMs; the RNN keeps torch's default.
        init_range = 0.1
        nn.init.uniform_(self.encoder.weight, -init_range, init_range)
        if self.adaptive is None:
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -init_range, init_range)

    def forward(self, tokens: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        """tokens (seq_len, batch) -> features (seq_len, batch, nhid), next hidden.

        The features go to :meth:`loss`, :meth:`nll_sum` or :meth:`log_probs`.
        """
        embedded = self.drop(self.encoder(tokens))  # (seq_len, batch, emsize)
        if _autocast_would_make_cudnn_rnn_fp16(embedded):
            with torch.autocast("cuda", enabled=False):
                output, hidden = self.rnn(embedded.float(), hidden)
        else:
            output, hidden = self.rnn(embedded, hidden)  # (seq_len, batch, nhid)
        return self.drop(output), hidden

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean NLL per token of ``targets`` (seq_len, batch)."""
        flat = features.reshape(-1, self.nhid)  # (tokens, nhid)
        if self.adaptive is not None:
            # fp32, outside any bf16 autocast: torch's adaptive softmax mixes its buffers'
            # dtypes with log_softmax's, which autocast would make disagree.
            with torch.autocast(flat.device.type, enabled=False):
                ranks = self.frequency_rank[targets.reshape(-1)]
                return self.adaptive(flat.float(), ranks).loss
        return F.cross_entropy(self.decoder(flat), targets.reshape(-1))

    def nll_sum(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed NLL of the targets that are not :data:`IGNORE` (a 0-d tensor)."""
        flat, flat_targets = features.reshape(-1, self.nhid), targets.reshape(-1)
        if self.adaptive is not None:
            keep = flat_targets != IGNORE
            ranks = self.frequency_rank[flat_targets[keep]]
            return -self.adaptive(flat[keep], ranks).output.double().sum()
        logits = self.decoder(flat).float()
        return F.cross_entropy(logits, flat_targets, ignore_index=IGNORE, reduction="sum")

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """(..., nhid) -> (..., ntokens) log-distribution over word ids."""
        flat = features.reshape(-1, self.nhid)
        if self.adaptive is not None:
            by_rank = self.adaptive.log_prob(flat)  # columns in frequency-rank order
            result = by_rank[:, self.frequency_rank]
        else:
            result = torch.log_softmax(self.decoder(flat).float(), dim=-1)
        return result.view(*features.shape[:-1], self.ntokens)

    def init_hidden(self, batch_size: int) -> Hidden:
        """Zero hidden state for ``batch_size`` independent streams."""
        weight = self.encoder.weight
        zeros = weight.new_zeros(self.nlayers, batch_size, self.nhid)
        if self.cell == "LSTM":
            return (zeros, weight.new_zeros(self.nlayers, batch_size, self.nhid))
        return zeros


def detach_hidden(hidden: Hidden) -> Hidden:
    """Cut the graph at a window boundary so BPTT stops there (the state itself is kept)."""
    if isinstance(hidden, torch.Tensor):
        return hidden.detach()
    return tuple(detach_hidden(part) for part in hidden)

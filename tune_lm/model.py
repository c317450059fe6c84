"""The embedding + recurrent network + linear decoder language model."""

from __future__ import annotations

import torch
from torch import nn

from tune_lm.config import TrainConfig

# Hidden state: (h, c) for an LSTM, h alone for GRU / Elman cells; each (nlayers, batch, nhid).
Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class RNNLanguageModel(nn.Module):
    """Embedding -> dropout -> multi-layer RNN -> dropout -> decoder over the vocabulary.

    The recurrent layers apply ``dropout`` between them (not after the last one; the
    explicit dropout after the RNN covers that). With ``tied`` the decoder reuses the
    embedding matrix (Press & Wolf 2017; Inan et al. 2017), which needs nhid == emsize.
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
        self.decoder = nn.Linear(nhid, ntokens)
        if tied:
            if nhid != emsize:
                raise ValueError("tied weights need nhid == emsize")
            self.decoder.weight = self.encoder.weight
        self._init_weights()

    @classmethod
    def from_config(cls, config: TrainConfig, ntokens: int) -> RNNLanguageModel:
        return cls(
            ntokens,
            cell=config.model,
            emsize=config.emsize,
            nhid=config.nhid,
            nlayers=config.nlayers,
            dropout=config.dropout,
            tied=config.tied,
        )

    def _init_weights(self) -> None:
        # The usual uniform init for word-level LMs; the RNN keeps torch's default.
        init_range = 0.1
        nn.init.uniform_(self.encoder.weight, -init_range, init_range)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -init_range, init_range)

    def forward(self, tokens: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        """tokens (seq_len, batch) -> logits (seq_len, batch, ntokens), next hidden."""
        embedded = self.drop(self.encoder(tokens))  # (seq_len, batch, emsize)
        output, hidden = self.rnn(embedded, hidden)  # (seq_len, batch, nhid)
        return self.decoder(self.drop(output)), hidden

    def init_hidden(self, batch_size: int) -> Hidden:
        """Zero hidden state for ``batch_size`` independent streams."""
        weight = self.decoder.weight
        zeros = weight.new_zeros(self.nlayers, batch_size, self.nhid)
        if self.cell == "LSTM":
            return (zeros, weight.new_zeros(self.nlayers, batch_size, self.nhid))
        return zeros


def detach_hidden(hidden: Hidden) -> Hidden:
    """Cut the graph at a window boundary so BPTT stops there (the state itself is kept)."""
    if isinstance(hidden, torch.Tensor):
        return hidden.detach()
    return tuple(detach_hidden(part) for part in hidden)

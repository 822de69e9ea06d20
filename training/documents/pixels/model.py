"""The any-order pixel model of the thesis (chapter 4): 4-colour MNIST digits generated in any order.

A digit is a set of 784 cells (row, column) with a colour index in 0..3. Cells become tokens through the
shared any-order building blocks of :mod:`.anyorder`: the position (row and column as fractions of
the side) through Fourier features, the colour through an embedding, and a categorical head over the
colours. Both variants of the thesis:

* ``query``: the encoder reads the known cells as a set (plus a learned empty token, so that nothing
  known is allowed); one decoder query per target cell gives every target's distribution in one pass.
  ``independent`` (the thesis's pure-query decoder, "run independently for every input/output pair"):
  each query attends to the known cells and to itself only, so a target's distribution is the same
  whichever other cells are queried with it; otherwise queries also attend to each other.
* ``triples``: a causal decoder over (input cell, input colour, target cell) triples in a random order;
  token i holds cell order[i - 1] with its colour (a learned start token for i = 0) and asks for cell
  order[i]. A key/value cache makes each generation step cost one token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from training.inbetween.config import AnyOrderConfig
from training.inbetween.transformer import FourierFeatures, KVCache, QueryEncoderDecoder, TriplesDecoder


def _core() -> AnyOrderConfig:
    # small enough to train on a 2-core CPU; periods from 2 pixels to twice the side
    return AnyOrderConfig(d_model=64, n_heads=4, n_enc_layers=2, n_dec_layers=2, dropout=0.0, n_freqs=12,
                          min_period=2.0 / 28.0, max_period=2.0)


@dataclass
class PixelConfig:
    variant: str = "query"  # query | triples
    side: int = 28
    n_colours: int = 4
    independent: bool = True  # query variant: queries do not attend to each other (the thesis's decoder)
    core: AnyOrderConfig = field(default_factory=_core)


class PixelAnyOrder(nn.Module):
    """Categorical distributions (logits over ``n_colours``) for target cells given known cells."""

    def __init__(self, cfg: PixelConfig) -> None:
        super().__init__()
        if cfg.variant not in ("query", "triples"):
            raise ValueError(f"unknown variant {cfg.variant!r}; expected 'query' or 'triples'")
        self.cfg = cfg
        d, s = cfg.core.d_model, cfg.side
        rows, cols = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        self.register_buffer("coords", torch.stack([rows, cols], -1).reshape(-1, 2).float() / s, persistent=False)
        self.pos_in = FourierFeatures(2, cfg.core)
        self.pos_target = FourierFeatures(2, cfg.core)
        self.colour = nn.Embedding(cfg.n_colours, d)
        self.head = nn.Linear(d, cfg.n_colours)
        if cfg.variant == "query":
            self.core = QueryEncoderDecoder(cfg.core)
            self.empty = nn.Parameter(torch.randn(d) * 0.02)  # always-known token: "nothing else is known"
        else:
            self.core = TriplesDecoder(cfg.core)
            self.start = nn.Parameter(torch.randn(d) * 0.02)  # input of the first triple
            self.triple_in = nn.Linear(2 * d, d)

    @property
    def n_cells(self) -> int:
        return self.cfg.side**2

    def input_tokens(self, cells: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
        """Known cells (B, K) (flat indices) with their colours (B, K) -> (B, K, d)."""
        return self.pos_in(self.coords[cells]) + self.colour(colours.long())

    def target_tokens(self, cells: torch.Tensor) -> torch.Tensor:
        return self.pos_target(self.coords[cells])

    # --- query variant ---------------------------------------------------------------------------------
    def query_logits(self, known: torch.Tensor, colours: torch.Tensor, targets: torch.Tensor,
                     known_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, C) of target cells (B, T) given known cells (B, K) and their colours (B, K);
        ``known_valid`` (B, K) marks padding (False) when known sets differ in size."""
        b = known.shape[0]
        tokens = torch.cat([self.empty.expand(b, 1, -1), self.input_tokens(known, colours)], 1)
        valid = torch.ones(b, tokens.shape[1], dtype=torch.bool, device=known.device)
        if known_valid is not None:
            valid[:, 1:] = known_valid
        query_valid = torch.ones(targets.shape, dtype=torch.bool, device=known.device)
        return self.head(self.core(tokens, valid, self.target_tokens(targets), query_valid, self.cfg.independent))

    # --- triples variant -------------------------------------------------------------------------------
    def triple_tokens(self, inp: torch.Tensor, target_cells: torch.Tensor) -> torch.Tensor:
        return self.triple_in(torch.cat([inp, self.target_tokens(target_cells)], -1))

    def start_tokens(self, b: int) -> torch.Tensor:
        return self.start.expand(b, 1, -1)

    def triples_logits(self, order: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (B, N, C) where step i predicts cell ``order[:, i]`` from the cells
        ``order[:, :i]`` and their ``colours`` (B, N) (colours in the same order)."""
        b = order.shape[0]
        inp = torch.cat([self.start_tokens(b), self.input_tokens(order[:, :-1], colours[:, :-1])], 1)
        h, _ = self.core(self.triple_tokens(inp, order))
        return self.head(h)

    def triples_step(self, inp: torch.Tensor, target_cells: torch.Tensor, cache: KVCache | None,
                     independent: bool = False) -> tuple[torch.Tensor, KVCache]:
        """Generation: input tokens (B, S, d) and target cells (B, S) of S new steps -> logits (B, S, C)
        and the grown cache. ``independent`` scores S candidate next cells side by side instead."""
        h, cache = self.core(self.triple_tokens(inp, target_cells), cache=cache, independent=independent)
        return self.head(h), cache

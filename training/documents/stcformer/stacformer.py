"""STACFormer: the STTFormer tuple-attention encoder (down to one block) with a decoder of STC blocks.

The encoder is :class:`~.sttformer.TupleBlock` (attention over all joints of a few consecutive frames);
the decoder is STCFormer's (:class:`~.stcformer.STCDecoder`: the memory expanded from 10 to 25 frames by
a 2D convolution, causal criss-cross self-attention and criss-cross cross-attention to that memory).
"""

from __future__ import annotations

import torch
from torch import nn

from training.documents.stcformer.config import STACFormerConfig
from training.documents.stcformer.criss_cross import GridEmbedding, residual_to_last
from training.documents.stcformer.stcformer import STCDecoder
from training.documents.stcformer.sttformer import TupleBlock


class STACFormer(nn.Module):
    def __init__(self, cfg: STACFormerConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = GridEmbedding(3, cfg.hidden, cfg.n_in, cfg.n_joints)
        self.encoder = nn.ModuleList(
            TupleBlock(cfg.hidden, cfg.heads, cfg.tuple_len, cfg.mlp_ratio, cfg.dropout)
            for _ in range(cfg.encoder_blocks)
        )
        self.enc_norm = nn.LayerNorm(cfg.hidden)
        self.decoder = STCDecoder(
            cfg.n_in, cfg.n_out, cfg.hidden, cfg.blocks, cfg.heads, cfg.mlp_ratio, cfg.dropout,
            cfg.expand_kernel, 3,
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for blk in self.encoder:
            h = blk(h)
        return self.enc_norm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_in, J, 3) observed positions -> (B, n_out, J, 3) predicted positions."""
        return residual_to_last(x, self.decoder.parallel(self.encode(x)))

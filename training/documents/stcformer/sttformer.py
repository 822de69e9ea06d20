"""STTFormer-style baseline (the report's provided model): spatio-temporal *tuple* attention encoder
and a final convolution that maps the 10 observed frames to 25 predicted ones.

After Qiu et al. 2022 (STTFormer): the frames are grouped into tuples of ``tuple_len`` consecutive
frames; self-attention runs over all joints of all frames inside one tuple (so it mixes space and a
short span of time at once), then an inter-frame feature aggregation (a temporal convolution) mixes the
tuples. The head is the report's: a 2D convolution with frames as channels (10 -> 25), then a linear
map to x, y, z, added to the last observed frame.
"""

from __future__ import annotations

import torch
from torch import nn

from training.documents.stcformer.config import STTFormerConfig
from training.documents.stcformer.criss_cross import MLP, GridEmbedding, TemporalExpand, attend, residual_to_last


class TupleAttention(nn.Module):
    """Multi-head self-attention over the ``tuple_len * J`` cells of each tuple of frames."""

    def __init__(self, dim: int, heads: int, tuple_len: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.tuple_len = heads, tuple_len
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, j, d = x.shape
        n = self.tuple_len
        if t % n:
            raise ValueError(f"{t} frames do not split into tuples of {n}")
        cells = x.reshape(b, t // n, n * j, d)
        q, k, v = (z.unflatten(-1, (self.heads, -1)).transpose(-3, -2) for z in self.qkv(cells).chunk(3, dim=-1))
        out, _ = attend(q, k, v)  # (B, T/n, H, n*J, d)
        out = out.transpose(-3, -2).flatten(-2).reshape(b, t, j, d)
        return self.drop(self.proj(out))


class TupleBlock(nn.Module):
    """Tuple attention, inter-frame feature aggregation (temporal conv over frames), MLP; pre-norm."""

    def __init__(self, dim: int, heads: int, tuple_len: int, mlp_ratio: int = 2, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TupleAttention(dim, heads, tuple_len, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.aggregate = nn.Conv2d(dim, dim, kernel_size=(3, 1), padding=(1, 0))
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.aggregate(self.norm2(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(self.norm3(x))


class STTFormer(nn.Module):
    def __init__(self, cfg: STTFormerConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = GridEmbedding(cfg.in_features, cfg.hidden, cfg.n_in, cfg.n_joints)
        self.blocks = nn.ModuleList(
            TupleBlock(cfg.hidden, cfg.heads, cfg.tuple_len, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.blocks)
        )
        self.norm = nn.LayerNorm(cfg.hidden)
        self.expand = TemporalExpand(cfg.n_in, cfg.n_out, cfg.expand_kernel)
        self.head = nn.Linear(cfg.hidden, 3)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for blk in self.blocks:
            h = blk(h)
        return self.norm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_in, J, 3) observed positions -> (B, n_out, J, 3) predicted positions."""
        return residual_to_last(x, self.head(self.expand(self.encode(x))))

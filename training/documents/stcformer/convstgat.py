"""ConvSTGAT: stacked blocks of one graph-attention layer over the skeleton and one temporal convolution.

Each block lets every joint attend to its skeleton neighbours (parent, children and itself; GAT of
Velickovic et al. 2018, per frame) and then mixes frames with a 2D convolution along time. The head is
the same frames-as-channels convolution (10 -> 25) as the STTFormer baseline, then x, y, z added to the
last observed frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.documents.stcformer.config import ConvSTGATConfig
from training.documents.stcformer.criss_cross import GridEmbedding, TemporalExpand, residual_to_last
from training.motion.skeleton import get_schema


def skeleton_adjacency(parents: tuple[int, ...]) -> torch.Tensor:
    """(J, J) boolean adjacency of the skeleton graph with self-loops."""
    n = len(parents)
    adj = torch.eye(n, dtype=torch.bool)
    for j, p in enumerate(parents):
        if p >= 0:
            adj[j, p] = adj[p, j] = True
    return adj


class GraphAttention(nn.Module):
    """Multi-head GAT layer over joints, applied to every frame: (B, T, J, D) -> (B, T, J, D)."""

    def __init__(self, dim: int, heads: int, adjacency: torch.Tensor, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} does not split into {heads} heads")
        self.heads = heads
        self.w = nn.Linear(dim, dim, bias=False)
        self.a_src = nn.Parameter(torch.randn(heads, dim // heads) * 0.1)
        self.a_dst = nn.Parameter(torch.randn(heads, dim // heads) * 0.1)
        self.register_buffer("adj", adjacency, persistent=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.w(x).unflatten(-1, (self.heads, -1))  # (B, T, J, H, d)
        e_dst = (h * self.a_dst).sum(-1)  # (B, T, J, H): the attending joint i
        e_src = (h * self.a_src).sum(-1)  # the attended joint j
        scores = F.leaky_relu(e_dst.unsqueeze(3) + e_src.unsqueeze(2), 0.2)  # (B, T, J_i, J_j, H)
        scores = scores.masked_fill(~self.adj[:, :, None], float("-inf"))
        alpha = self.drop(scores.softmax(dim=3))
        out = torch.einsum("btijh,btjhd->btihd", alpha, h)
        return out.flatten(-2)


class ConvSTGATBlock(nn.Module):
    def __init__(self, dim: int, heads: int, adjacency: torch.Tensor, kernel_t: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.gat = GraphAttention(dim, heads, adjacency, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.conv = nn.Conv2d(dim, dim, kernel_size=(kernel_t, 1), padding=(kernel_t // 2, 0))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + F.elu(self.gat(self.norm1(x)))
        return x + self.drop(F.gelu(self.conv(self.norm2(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)))


class ConvSTGAT(nn.Module):
    def __init__(self, cfg: ConvSTGATConfig):
        super().__init__()
        parents = get_schema(cfg.skeleton).parents
        if len(parents) != cfg.n_joints:
            raise ValueError(f"the {cfg.skeleton} skeleton has {len(parents)} joints, not {cfg.n_joints}")
        self.cfg = cfg
        adj = skeleton_adjacency(parents)
        self.embed = GridEmbedding(3, cfg.hidden, cfg.n_in, cfg.n_joints)
        self.blocks = nn.ModuleList(
            ConvSTGATBlock(cfg.hidden, cfg.heads, adj, cfg.kernel_t, cfg.dropout) for _ in range(cfg.blocks)
        )
        self.norm = nn.LayerNorm(cfg.hidden)
        self.expand = TemporalExpand(cfg.n_in, cfg.n_out, cfg.expand_kernel)
        self.head = nn.Linear(cfg.hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_in, J, 3) observed positions -> (B, n_out, J, 3) predicted positions."""
        h = self.embed(x)
        for blk in self.blocks:
            h = blk(h)
        return residual_to_last(x, self.head(self.expand(self.norm(h))))

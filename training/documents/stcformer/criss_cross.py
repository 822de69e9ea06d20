"""Building blocks shared by the STCFormer-report models: criss-cross attention and friends.

A motion window is a grid ``(B, T, J, D)`` of frames x joints. Full attention over all T*J cells costs
(T*J)^2; the report's *criss-cross* attention splits the channels of Q, K and V in two halves: one half
attends along time (each joint to the same joint in other frames), the other along the skeleton (each
joint to the other joints of the same frame). The same layer serves self-attention (K, V from the
query's own grid, optionally causal in time) and cross-attention (K, V from an encoder memory).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention that also returns the softmaxed map (for the attention analysis;
    on a CPU this explicit form is as fast as torch's fused kernel for these short sequences).
    ``mask`` is True where attention is allowed."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


def causal_mask(t_q: int, t_k: int, device: torch.device, offset: int = 0) -> torch.Tensor:
    """(t_q, t_k) lower-triangular mask: query frame i (frame ``offset + i`` of the sequence) sees key
    frames 0..offset+i only."""
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=offset)


class CrissCrossAttention(nn.Module):
    """Half the channels attend along time, half along joints, ``heads`` heads in each half.

    Self-attention: ``forward(x)``; ``causal=True`` masks future frames in the temporal half (the
    spatial half only looks inside one frame, so it is causal by construction). Cross-attention:
    ``forward(x, memory)``; the temporal half attends over all memory frames, the spatial half to the
    joints of the memory frame aligned with each query frame (memory needs at least as many frames).

    Incremental decoding: ``offset`` is the sequence index of the first query frame, and ``cache`` (a
    dict, filled in place) keeps the keys and values of earlier frames, so that each generated frame
    costs one frame of work instead of the whole prefix.
    """

    def __init__(self, dim: int, heads: int = 1, dropout: float = 0.0, out_proj: bool = True):
        super().__init__()
        if dim % (2 * heads):
            raise ValueError(f"hidden size {dim} must split into 2 halves of {heads} heads")
        self.dim, self.heads = dim, heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        # the output projection after the two halves are joined; without it the halves go out as they are
        self.proj = nn.Linear(dim, dim) if out_proj else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.last_maps: tuple[torch.Tensor, torch.Tensor] | None = None
        self.keep_maps = False  # set by the attention analysis

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (..., n, D/2) -> (..., H, n, d)
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor | None = None, causal: bool = False, offset: int = 0,
        cache: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        t_q = x.shape[1]
        kv_in = x if memory is None else memory
        q = self.q(x)
        k, v = self.kv(kv_in).chunk(2, dim=-1)
        if cache is not None:  # self-attention, incremental: earlier frames' keys and values
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=1), torch.cat([cache["v"], v], dim=1)
            cache["k"], cache["v"] = k, v
        half = self.dim // 2
        # temporal half: sequences over frames, one per (batch, joint)
        qt, kt, vt = (self._heads(z[..., :half].transpose(1, 2)) for z in (q, k, v))  # (B, J, H, T, d)
        mask = causal_mask(t_q, kt.shape[-2], x.device, offset) if causal else None
        ot, wt = attend(qt, kt, vt, mask)
        ot = ot.transpose(-3, -2).flatten(-2).transpose(1, 2)  # (B, T, J, D/2)
        # spatial half: sequences over joints, one per (batch, frame), frame-aligned with the keys
        qs = self._heads(q[..., half:])
        ks, vs = (self._heads(z[:, offset : offset + t_q, :, half:]) for z in (k, v))  # (B, T, H, J, d)
        os_, ws = attend(qs, ks, vs)
        os_ = os_.transpose(-3, -2).flatten(-2)  # (B, T, J, D/2)
        if self.keep_maps:
            self.last_maps = (wt.detach(), ws.detach())
        return self.drop(self.proj(torch.cat([ot, os_], dim=-1)))


class MLP(nn.Sequential):
    def __init__(self, dim: int, ratio: int = 2, dropout: float = 0.0):
        super().__init__(nn.Linear(dim, ratio * dim), nn.GELU(), nn.Linear(ratio * dim, dim), nn.Dropout(dropout))


class STCBlock(nn.Module):
    """A pre-norm transformer block of criss-cross attention: self-attention (causal in a decoder),
    then, in a decoder, cross-attention to the encoder memory, then an MLP.

    ``self_attention=False`` makes a decoder block of one attention, like an encoder block (the STCFormer
    paper's block: one attention and an MLP): causal cross-attention to the memory only. The decoder
    then mixes its own frames only through its input and the memory's frames up to each query frame."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2, dropout: float = 0.0, decoder: bool = False,
                 self_attention: bool = True, out_proj: bool = True):
        super().__init__()
        self.decoder = decoder
        self.self_attention = self_attention or not decoder
        if self.self_attention:
            self.norm1 = nn.LayerNorm(dim)
            self.attn = CrissCrossAttention(dim, heads, dropout, out_proj)
        if decoder:
            self.norm2 = nn.LayerNorm(dim)
            self.cross = CrissCrossAttention(dim, heads, dropout, out_proj)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio, dropout)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor | None = None, offset: int = 0, cache: dict | None = None
    ) -> torch.Tensor:
        if self.self_attention:
            x = x + self.attn(self.norm1(x), causal=self.decoder, offset=offset, cache=cache)
        if self.decoder:
            # causal too when it is the block's only attention: query frame i sees memory frames up to i
            x = x + self.cross(self.norm2(x), memory, causal=not self.self_attention, offset=offset)
        return x + self.mlp(self.norm3(x))


class TemporalExpand(nn.Module):
    """A 2D convolution with frames as channels over the (joint, feature) plane: maps ``t_in`` frames
    to ``t_out`` (the report's way to turn 10 observed frames into 25 predicted ones)."""

    def __init__(self, t_in: int, t_out: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(t_in, t_out, kernel_size=kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, t_in, J, D) -> (B, t_out, J, D)
        return self.conv(x)


class GridEmbedding(nn.Module):
    """Per-cell features -> hidden size, plus learned frame and joint embeddings (``positional=False``:
    none; attention then tells cells apart only by their features)."""

    def __init__(self, in_features: int, dim: int, n_frames: int, n_joints: int, positional: bool = True):
        super().__init__()
        self.proj = nn.Linear(in_features, dim)
        self.positional = positional
        if positional:
            self.frame = nn.Parameter(torch.zeros(n_frames, 1, dim))
            self.joint = nn.Parameter(torch.zeros(1, n_joints, dim))
            nn.init.normal_(self.frame, std=0.02)
            nn.init.normal_(self.joint, std=0.02)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:  # (B, T, J, F) -> (B, T, J, D)
        if not self.positional:
            return self.proj(x)
        return self.proj(x) + self.frame[offset : offset + x.shape[1]] + self.joint


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def residual_to_last(observed: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Predict displacements from the last observed frame: zero output = the zero-velocity baseline."""
    return observed[:, -1:, :, : delta.shape[-1]] + delta


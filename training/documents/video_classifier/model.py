"""(2+1)D CNN + attention video classifier, and its pure-CNN baseline.

Backbone: R(2+1)D-18 style (Tran et al. 2018). Every 3x3x3 convolution is factorised into a 1x3x3
spatial convolution, batch norm and ReLU, then a 3x1x1 temporal convolution, with the middle width
chosen so that the pair has the parameters of the full 3D kernel. A stem, then 4 residual layers of 2
basic blocks (8 blocks); ``blocks`` keeps the first 8, 7, 6 or 4 of them, so the ablation can trade CNN
depth for attention depth. ``width`` scales every layer (64 is the paper's; small values train on CPU).

Heads (``head``):
- ``pool``: global average pooling and a linear classifier (the baseline).
- ``cross``: ``n_queries`` learned queries cross-attend to the CNN's space-time tokens (one per
  feature-map cell, with learned t/y/x position embeddings), then ``n_self`` self-attention layers
  among the queries; the queries are averaged and classified. Attention cost grows with the number of
  queries, not with the number of tokens squared.
- ``self``: ``n_self`` self-attention layers over all CNN tokens (no queries), then average pooling:
  the cross- versus self-attention ablation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class VideoClassifierConfig:
    n_classes: int = 10
    in_channels: int = 1
    width: int = 16  # channels of layer 1; layers 2-4 double it each (64 -> 64/128/256/512 in the paper)
    blocks: int = 8  # residual blocks kept: 8, 7, 6 or 4
    head: str = "cross"  # pool, cross or self
    n_queries: int = 4
    n_cross: int = 1
    n_self: int = 1
    nheads: int = 4
    dim: int = 0  # attention width; 0: the CNN's output channels
    dropout: float = 0.0
    max_positions: int = 64  # longest feature-map axis the position embeddings cover


def mid_channels(cin: int, cout: int, t: int = 3, d: int = 3) -> int:
    """R(2+1)D's middle width: the (2+1)D pair then has the parameters of one t x d x d convolution."""
    return max(1, (t * d * d * cin * cout) // (d * d * cin + t * cout))


class Conv2Plus1D(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        mid = mid_channels(cin, cout)
        super().__init__(
            nn.Conv3d(cin, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
        )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(Conv2Plus1D(cin, cout, stride), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(Conv2Plus1D(cout, cout), nn.BatchNorm3d(cout))
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.down is None else self.down(x)
        return self.relu(self.conv2(self.conv1(x)) + skip)


class R2Plus1DBackbone(nn.Module):
    """Stem + the first ``blocks`` of 8 basic blocks; output (B, C, T', H', W')."""

    def __init__(self, in_channels: int, width: int, blocks: int) -> None:
        super().__init__()
        if not 1 <= blocks <= 8:
            raise ValueError(f"blocks must be 1..8, got {blocks}")
        stem_mid = max(1, (3 * 7 * 7 * in_channels * width) // (7 * 7 * in_channels + 3 * width))
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, stem_mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(stem_mid), nn.ReLU(inplace=True),
            nn.Conv3d(stem_mid, width, (3, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(width), nn.ReLU(inplace=True),
        )
        layers, cin = [], width
        for i in range(blocks):
            layer = i // 2
            cout = width * 2**layer
            stride = 2 if layer > 0 and i % 2 == 0 else 1
            layers.append(BasicBlock(cin, cout, stride))
            cin = cout
        self.blocks = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


class AttnLayer(nn.Module):
    """Pre-LN multi-head attention then FFN, with residuals (cross when ``ctx`` is given)."""

    def __init__(self, dim: int, nheads: int, dropout: float) -> None:
        super().__init__()
        self.ln_q, self.ln_kv, self.ln_f = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        q = self.ln_q(x)
        kv = q if ctx is None else self.ln_kv(ctx)
        x = x + self.attn(q, kv, kv, need_weights=False)[0]
        return x + self.ffn(self.ln_f(x))


class VideoClassifier(nn.Module):
    def __init__(self, cfg: VideoClassifierConfig) -> None:
        super().__init__()
        if cfg.head not in ("pool", "cross", "self"):
            raise ValueError(f"head must be pool, cross or self, got {cfg.head!r}")
        self.cfg = cfg
        self.backbone = R2Plus1DBackbone(cfg.in_channels, cfg.width, cfg.blocks)
        c = self.backbone.out_channels
        dim = cfg.dim or c
        self.attn = nn.ModuleDict()
        if cfg.head != "pool":
            self.attn["proj"] = nn.Linear(c, dim) if dim != c else nn.Identity()
            self.attn["pos"] = nn.ParameterList(nn.Parameter(torch.randn(cfg.max_positions, dim) * 0.02)
                                                for _ in range(3))
            if cfg.head == "cross":
                self.attn["queries"] = nn.ParameterList([nn.Parameter(torch.randn(cfg.n_queries, dim) * 0.02)])
                self.attn["cross"] = nn.ModuleList(AttnLayer(dim, cfg.nheads, cfg.dropout) for _ in range(cfg.n_cross))
            self.attn["self"] = nn.ModuleList(AttnLayer(dim, cfg.nheads, cfg.dropout) for _ in range(cfg.n_self))
            self.attn["ln"] = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim if cfg.head != "pool" else c, cfg.n_classes)

    def param_counts(self) -> dict[str, int]:
        """CNN (backbone), attention (head) and classifier parameter counts: the ablation tables' columns."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"cnn": count(self.backbone), "attention": count(self.attn), "classifier": count(self.classifier)}

    def tokens(self, f: torch.Tensor) -> torch.Tensor:
        """CNN features (B, C, T, H, W) -> tokens (B, T*H*W, dim) with t/y/x position embeddings."""
        b, c, t, h, w = f.shape
        if max(t, h, w) > self.cfg.max_positions:
            raise ValueError(f"feature map {t}x{h}x{w} exceeds max_positions={self.cfg.max_positions}")
        x = self.attn["proj"](f.flatten(2).transpose(1, 2))
        pt, py, px = self.attn["pos"]
        pos = pt[:t, None, None] + py[None, :h, None] + px[None, None, :w]
        return x + pos.reshape(1, t * h * w, -1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes) of videos (B, C, T, H, W)."""
        f = self.backbone(video)
        if self.cfg.head == "pool":
            return self.classifier(f.mean(dim=(2, 3, 4)))
        x = self.tokens(f)
        if self.cfg.head == "cross":
            q = self.attn["queries"][0].unsqueeze(0).expand(x.shape[0], -1, -1)
            for layer in self.attn["cross"]:
                q = layer(q, x)
            x = q
        for layer in self.attn["self"]:
            x = layer(x)
        return self.classifier(self.attn["ln"](x).mean(dim=1))

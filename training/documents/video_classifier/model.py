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
  among the queries; ``n_cross`` such groups in a row (the document's "L layers of self-attention per
  cross-attention"; 2 cross + 12 self is 2 groups of 1 + 6). The queries are averaged and classified.
  Attention cost grows with the number of queries, not with the number of tokens squared.
- ``self``: ``n_self`` self-attention layers over all CNN tokens (no queries), then average pooling:
  the cross- versus self-attention ablation.

Attention layers are Perceiver's (Jaegle et al. 2021, as in the widely used ``perceiver-pytorch``):
pre-layer-norm attention with ``nheads`` heads of ``head_dim`` (cross-attention: ``cross_heads``), no
biases on queries, keys and values, then a GEGLU feed-forward ``ffn_mult`` times wider. At the
document's sizes (CNN ``width`` 64, so 512 output channels; attention width 512, 8 x 64 self heads,
1 x 64 cross head, GEGLU x 4) a self-attention layer has 4.2 M parameters and 1 cross + 1 self 7.6 M,
the document's figures; ``dim`` sets the attention width (0: 8 x ``width``, the full CNN's output
channels, also when fewer blocks are kept, as the document's 28.6 M head on 6 and 4 blocks shows).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class VideoClassifierConfig:
    n_classes: int = 10
    in_channels: int = 1
    width: int = 16  # channels of layer 1; layers 2-4 double it each (64 -> 64/128/256/512 in the paper)
    blocks: int = 8  # residual blocks kept: 8, 7, 6 or 4
    head: str = "cross"  # pool, cross or self
    n_queries: int = 128
    n_cross: int = 1  # cross-attention groups (cross head)
    n_self: int = 1  # self-attention layers per cross-attention (cross head), or in all (self head)
    nheads: int = 8  # self-attention heads
    head_dim: int = 0  # width of a head; 0: dim // nheads
    cross_heads: int = 1  # cross-attention heads (of head_dim each)
    ffn_mult: int = 4  # feed-forward width / attention width
    geglu: bool = True  # GEGLU feed-forward (Perceiver's); False: GELU
    dim: int = 0  # attention width; 0: the full CNN's output channels, 8 x width (512 at the document's 64)
    dropout: float = 0.0
    max_positions: int = 16  # longest feature-map axis the position embeddings cover


def mid_channels(cin: int, cout: int, t: int = 3, d: int = 3) -> int:
    """R(2+1)D's middle width: the (2+1)D pair then has the parameters of one t x d x d convolution."""
    return max(1, (t * d * d * cin * cout) // (d * d * cin + t * cout))


class Conv2Plus1D(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1, mid: int | None = None) -> None:
        mid = mid or mid_channels(cin, cout)
        super().__init__(
            nn.Conv3d(cin, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
        )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = mid_channels(cin, cout)  # one middle width for both convolutions, as torchvision's R(2+1)D-18
        self.conv1 = nn.Sequential(Conv2Plus1D(cin, cout, stride, mid), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(Conv2Plus1D(cout, cout, 1, mid), nn.BatchNorm3d(cout))
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
        stem_mid = max(1, round(45 * width / 64))  # torchvision's R(2+1)D-18 stem: 45 at width 64
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


class GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return x * F.gelu(gate)


class AttnLayer(nn.Module):
    """Pre-LN multi-head attention (``heads`` x ``head_dim``) then a feed-forward, with residuals; cross
    when ``ctx_dim`` is given (queries from x, keys and values from a context of that width)."""

    def __init__(self, dim: int, heads: int, head_dim: int, ctx_dim: int | None, ffn_mult: int, geglu: bool,
                 dropout: float) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.dropout = heads, dropout
        self.ln_q, self.ln_f = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ln_kv = nn.LayerNorm(ctx_dim) if ctx_dim else None
        self.q = nn.Linear(dim, inner, bias=False)
        self.kv = nn.Linear(ctx_dim or dim, 2 * inner, bias=False)
        self.out = nn.Linear(inner, dim)
        hidden = dim * ffn_mult
        act = [nn.Linear(dim, 2 * hidden), GEGLU()] if geglu else [nn.Linear(dim, hidden), nn.GELU()]
        self.ffn = nn.Sequential(*act, nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        q = self.ln_q(x)
        kv = q if self.ln_kv is None else self.ln_kv(ctx)
        b, n, _ = q.shape
        split = lambda t: t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        k, v = self.kv(kv).chunk(2, dim=-1)
        y = F.scaled_dot_product_attention(split(self.q(q)), split(k), split(v),
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.out(y.transpose(1, 2).reshape(b, n, -1))
        return x + self.ffn(self.ln_f(x))


class VideoClassifier(nn.Module):
    def __init__(self, cfg: VideoClassifierConfig) -> None:
        super().__init__()
        if cfg.head not in ("pool", "cross", "self"):
            raise ValueError(f"head must be pool, cross or self, got {cfg.head!r}")
        self.cfg = cfg
        self.backbone = R2Plus1DBackbone(cfg.in_channels, cfg.width, cfg.blocks)
        c = self.backbone.out_channels
        dim = cfg.dim or 8 * cfg.width  # the full CNN's output channels, whatever blocks are kept
        head_dim = cfg.head_dim or max(1, dim // cfg.nheads)
        self.attn = nn.ModuleDict()
        if cfg.head != "pool":
            layer = lambda heads, ctx: AttnLayer(dim, heads, head_dim, ctx, cfg.ffn_mult, cfg.geglu,  # noqa: E731
                                                 cfg.dropout)
            # cross-attention reads the CNN's channels directly (Perceiver); self-attention over the CNN's
            # tokens needs them at the attention width
            tok = c if cfg.head == "cross" else dim
            self.attn["proj"] = nn.Linear(c, dim) if tok != c else nn.Identity()
            self.attn["pos"] = nn.ParameterList(nn.Parameter(torch.randn(cfg.max_positions, tok) * 0.02)
                                                for _ in range(3))
            groups = cfg.n_cross if cfg.head == "cross" else 1
            if cfg.head == "cross":
                self.attn["queries"] = nn.ParameterList([nn.Parameter(torch.randn(cfg.n_queries, dim) * 0.02)])
                self.attn["cross"] = nn.ModuleList(layer(cfg.cross_heads, c) for _ in range(groups))
            self.attn["self"] = nn.ModuleList(nn.ModuleList(layer(cfg.nheads, None) for _ in range(cfg.n_self))
                                              for _ in range(groups))
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
            ctx, x = x, self.attn["queries"][0].unsqueeze(0).expand(x.shape[0], -1, -1)
        for g, group in enumerate(self.attn["self"]):
            if self.cfg.head == "cross":
                x = self.attn["cross"][g](x, ctx)
            for layer in group:
                x = layer(x)
        return self.classifier(self.attn["ln"](x).mean(dim=1))

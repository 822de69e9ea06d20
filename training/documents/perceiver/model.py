"""Perceiver predictive-coding autoencoder for video (the "video-audio-text predictive coding" update).

A video window is cut into space-time patches of ``h x w x d`` pixels (d frames). The **encoder** is a
learned latent array that cross-attends to the patch tokens (each token: the patch's pixels plus the
Fourier code of its position); the **latent evolver** is a stack of self-attention blocks on the
latent (identical weights, i.e. one block applied n times, or distinct); the **decoder** asks one
query per wanted patch position, made of that position's Fourier space-time code, cross-attends to the
latent, and its last layer expands each query to the patch's pixels. Because the decoder is queried by
coordinates, it predicts any space-time position: the present window (reconstruction) or future
frames (prediction).

Droptoken keeps a random fraction of the input tokens per exposure, which makes the encoder cheaper
and forces it to infer the missing patches. Re-exposure feeds the evolved latent of one exposure in as
the starting latent of the next (the window slides forward by ``window_inc`` frames in between).

Fourier codes follow Perceiver: for a coordinate x in [-1, 1], K frequencies linearly spaced from 1 to
mu/2 (mu = the resolution, so mu/2 is the Nyquist frequency), features sin(pi f x), cos(pi f x), plus x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PerceiverAEConfig:
    channels: int = 1
    patch_hwd: tuple[int, int, int] = (8, 8, 2)  # patch height, width (pixels) and depth (frames)
    n_latents: int = 64
    dim: int = 128
    nheads: int = 4
    keydim: int = 32  # per head; attention inner width is nheads * keydim
    mhadropout: float = 0.0
    ffn_mult: int = 2
    n_enc_blocks: int = 1
    n_latent_blocks: int = 2
    distinct_latent: bool = False  # False: one evolver block applied n_latent_blocks times
    n_dec_blocks: int = 1
    k_space: int = 8  # Fourier bands per spatial axis
    mu_space: int = 8  # spatial resolution in patches (bands reach mu/2, the Nyquist frequency)
    k_time: int = 4
    mu_time: int = 16  # temporal resolution in patch steps of the whole present + future span


def fourier_codes(pos: torch.Tensor, bands: tuple[int, ...], mus: tuple[float, ...]) -> torch.Tensor:
    """Fourier codes (..., sum_d (2 K_d + 1)) of positions (..., D) in [-1, 1].

    Per axis d: [x, sin(pi f_k x), cos(pi f_k x)] with f_k = linspace(1, mu_d / 2, K_d)."""
    out = []
    for d, (k, mu) in enumerate(zip(bands, mus, strict=True)):
        x = pos[..., d : d + 1]
        f = torch.linspace(1.0, mu / 2.0, k, device=pos.device, dtype=pos.dtype)
        out += [x, torch.sin(math.pi * f * x), torch.cos(math.pi * f * x)]
    return torch.cat(out, dim=-1)


def code_dim(cfg: PerceiverAEConfig) -> int:
    return (2 * cfg.k_time + 1) + 2 * (2 * cfg.k_space + 1)


def patch_grid(t: int, h: int, w: int, t0: float = 0, t_span: float | None = None, depth: int = 1) -> torch.Tensor:
    """Normalised (t, y, x) positions (t * h * w, 3) of a grid of t x h x w patches, ``depth`` frames
    deep, the first starting at frame ``t0``. Time is the patch centre's frame on a span of ``t_span``
    frames (so present and future windows share one time axis, also when a window is not a whole
    number of patches deep)."""
    t_span = t_span or t * depth
    norm = lambda i, n: 2.0 * (i + 0.5) / n - 1.0  # noqa: E731 - patch centres in [-1, 1]
    centre = t0 + torch.arange(t).float() * depth + depth / 2.0
    tt, yy, xx = torch.meshgrid(2.0 * centre / t_span - 1.0, norm(torch.arange(h).float(), h),
                                norm(torch.arange(w).float(), w), indexing="ij")
    return torch.stack([tt, yy, xx], dim=-1).reshape(-1, 3)


def patchify(video: torch.Tensor, phwd: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, T//d * H//h * W//w, C * d * h * w), patches in (t, y, x) order. Frames and
    pixels past the last whole patch are cropped (the update's arithmetic: 3 frames of 120 x 180 video in
    16 x 16 x 3 patches are 7 x 11 = 77 tokens)."""
    ph, pw, pd = phwd
    video = video[:, :, : video.shape[2] // pd * pd, : video.shape[3] // ph * ph, : video.shape[4] // pw * pw]
    b, c, t, h, w = video.shape
    x = video.reshape(b, c, t // pd, pd, h // ph, ph, w // pw, pw)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, (t // pd) * (h // ph) * (w // pw), c * pd * ph * pw)


def unpatchify(tokens: torch.Tensor, shape: tuple[int, int, int, int], phwd: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify` for a (C, T, H, W) video shape."""
    c, t, h, w = shape
    ph, pw, pd = phwd
    x = tokens.reshape(tokens.shape[0], t // pd, h // ph, w // pw, c, pd, ph, pw)
    return x.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(tokens.shape[0], c, t, h, w)


def droptoken(n: int, keep: float, batch: int, generator: torch.Generator | None = None,
              device: torch.device | None = None) -> torch.Tensor:
    """Indices (batch, round(n * keep)) of the tokens kept, a random subset per sample (at least one)."""
    k = max(1, int(round(n * keep)))
    scores = torch.rand(batch, n, generator=generator, device=device)
    return scores.topk(k, dim=1).indices.sort(dim=1).values


class FFN(nn.Module):
    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Multi-head attention with an explicit per-head key width (the update's ``keydim``)."""

    def __init__(self, dim: int, nheads: int, keydim: int, dropout: float) -> None:
        super().__init__()
        self.nheads, self.keydim, self.dropout = nheads, keydim, dropout
        self.q = nn.Linear(dim, nheads * keydim)
        self.kv = nn.Linear(dim, 2 * nheads * keydim)
        self.out = nn.Linear(nheads * keydim, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.nheads, self.keydim).transpose(1, 2)
        k, v = self.kv(ctx).view(b, ctx.shape[1], 2, self.nheads, self.keydim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    """MHA then FFN, pre-layer-norm with residuals. ``cross``: queries from x, keys/values from ctx."""

    def __init__(self, cfg: PerceiverAEConfig, cross: bool) -> None:
        super().__init__()
        self.cross = cross
        self.ln_q = nn.LayerNorm(cfg.dim)
        self.ln_kv = nn.LayerNorm(cfg.dim) if cross else None
        self.attn = Attention(cfg.dim, cfg.nheads, cfg.keydim, cfg.mhadropout)
        self.ln_f = nn.LayerNorm(cfg.dim)
        self.ffn = FFN(cfg.dim, cfg.ffn_mult)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        q = self.ln_q(x)
        kv = self.ln_kv(ctx) if self.cross else q
        x = x + self.attn(q, kv)
        return x + self.ffn(self.ln_f(x))


class PerceiverAE(nn.Module):
    def __init__(self, cfg: PerceiverAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ph, pw, pd = cfg.patch_hwd
        self.patch_dim = cfg.channels * ph * pw * pd
        self.latent = nn.Parameter(torch.randn(cfg.n_latents, cfg.dim) * 0.02)
        self.embed = nn.Linear(self.patch_dim + code_dim(cfg), cfg.dim)
        self.enc = nn.ModuleList(Block(cfg, cross=True) for _ in range(cfg.n_enc_blocks))
        n_evolver = cfg.n_latent_blocks if cfg.distinct_latent else min(1, cfg.n_latent_blocks)
        self.evolver = nn.ModuleList(Block(cfg, cross=False) for _ in range(n_evolver))
        self.query = nn.Linear(code_dim(cfg), cfg.dim)
        self.dec = nn.ModuleList(Block(cfg, cross=True) for _ in range(cfg.n_dec_blocks))
        self.ln_out = nn.LayerNorm(cfg.dim)
        self.to_patch = nn.Linear(cfg.dim, self.patch_dim)  # the last block's expansion to patch size

    def codes(self, pos: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return fourier_codes(pos, (c.k_time, c.k_space, c.k_space), (c.mu_time, c.mu_space, c.mu_space))

    def initial_latent(self, batch: int) -> torch.Tensor:
        return self.latent.unsqueeze(0).expand(batch, -1, -1)

    def encode(self, patches: torch.Tensor, pos: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        """Latent (B, N, dim) from patch values (B, n, patch_dim) at positions (B or 1, n, 3); ``latent``
        (from a previous exposure) replaces the learned initial latent."""
        x = self.embed(torch.cat([patches, self.codes(pos).expand(patches.shape[0], -1, -1)], dim=-1))
        z = self.initial_latent(patches.shape[0]) if latent is None else latent
        for blk in self.enc:
            z = blk(z, x)
        for i in range(self.cfg.n_latent_blocks):
            z = self.evolver[i if self.cfg.distinct_latent else 0](z)
        return z

    def decode(self, latent: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Patch values (B, m, patch_dim) at any space-time positions (B or 1, m, 3) in [-1, 1] (time may
        go past 1 for frames after the span the codes were scaled to)."""
        q = self.query(self.codes(pos)).expand(latent.shape[0], -1, -1)
        for blk in self.dec:
            q = blk(q, latent)
        return self.to_patch(self.ln_out(q))

    def forward(self, patches: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor,
                latent: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(patches, pos, latent)
        return self.decode(z, query_pos), z

"""STCFormer: an encoder-decoder transformer of criss-cross attention, and its autoregressive variant.

- Encoder: observed frames -> hidden size (+ frame and joint embeddings if ``positional``), ``blocks``
  criss-cross self-attention blocks, no mask.
- A 2D convolution (frames as channels) expands the encoder's 10 frames to the 25 output frames; the
  expanded memory is what the decoder cross-attends to (frame-aligned for the spatial half).
- Decoder: ``blocks`` criss-cross blocks with triangular (causal) masking in time (on the cross-attention
  when it is the block's only attention), then a linear head.
  In the parallel model (``autoregressive=False``) the decoder's input is the expanded memory itself and
  one pass predicts all 25 frames.
- Autoregressive (``autoregressive=True``): the decoder reads the frames generated so far, each with a
  start-of-sequence flag pair appended ([0, 1] on the seed frame, which repeats the last observed pose;
  [0, 0] on every other frame) and predicts the next frame's position and flags. The flags it must
  predict mark the start of the predicted sequence: [0, 1] on its first frame, [0, 0] on the other 24
  (one start frame per sequence, as in the report, with the class imbalance the report discusses).
  Training is teacher forced in one causal pass; :meth:`STCFormer.generate` runs frame by frame on its
  own predictions.
- Block layout: by default every block, encoder or decoder, is one criss-cross attention (Q, K and V
  maps, no output projection) and an MLP as wide as the hidden size, with no positional embeddings: what
  the report's parameter counts imply (23k, 45k with twice the blocks, 86k at hidden 64; see
  docs/motion_prediction.md). ``decoder_self_attention``, ``out_proj``, ``mlp_ratio=2`` and
  ``positional`` give the wider layout (decoder blocks of causal self- and cross-attention), twice as
  many parameters.

Positions are predicted as displacements from the last observed frame.
"""

from __future__ import annotations

import torch
from torch import nn

from training.documents.stcformer.config import STCFormerConfig
from training.documents.stcformer.criss_cross import GridEmbedding, STCBlock, TemporalExpand, residual_to_last

N_FLAGS = 2
START_FLAG = (0.0, 1.0)


def target_flags(like: torch.Tensor) -> torch.Tensor:
    """The flags an autoregressive model must predict for its output frames (B, T, J, ...): [0, 1] on the
    first frame (the start of the predicted sequence), [0, 0] on the others: (B, T, J, 2)."""
    flags = like.new_zeros(*like.shape[:-1], N_FLAGS)
    flags[:, 0] = like.new_tensor(START_FLAG)
    return flags


class STCDecoder(nn.Module):
    """Expansion of the memory to the output frames, causal criss-cross decoder blocks, linear head."""

    def __init__(self, n_in: int, n_out: int, hidden: int, blocks: int, heads: int,
                 mlp_ratio: int, dropout: float, expand_kernel: int, out_features: int,
                 self_attention: bool = True, out_proj: bool = True, positional: bool = True):
        super().__init__()
        self.expand = TemporalExpand(n_in, n_out, expand_kernel)
        # output-frame embeddings of the parallel decoder's input (the expanded memory)
        self.frame = nn.Parameter(torch.zeros(n_out, 1, hidden)) if positional else None
        self.blocks = nn.ModuleList(
            STCBlock(hidden, heads, mlp_ratio, dropout, decoder=True, self_attention=self_attention,
                     out_proj=out_proj)
            for _ in range(blocks)
        )
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, out_features)

    def forward(
        self, query: torch.Tensor, memory: torch.Tensor, offset: int = 0, caches: list[dict] | None = None
    ) -> torch.Tensor:
        """query (B, T, J, D): frames offset..offset+T-1 of the output; expanded memory (B, n_out, J, D)
        -> (B, T, J, out). ``caches`` (one dict per block) make the decoding incremental."""
        h = query
        for i, blk in enumerate(self.blocks):
            h = blk(h, memory, offset, None if caches is None else caches[i])
        return self.head(self.norm(h))

    def parallel(self, memory: torch.Tensor) -> torch.Tensor:
        """One pass: expand the encoder memory and decode all output frames from it."""
        mem = self.expand(memory)
        return self(mem if self.frame is None else mem + self.frame, mem)


class STCFormer(nn.Module):
    def __init__(self, cfg: STCFormerConfig):
        super().__init__()
        self.cfg = cfg
        flags = N_FLAGS if cfg.autoregressive else 0
        self.embed = GridEmbedding(3 + flags, cfg.hidden, cfg.n_in, cfg.n_joints, cfg.positional)
        self.encoder = nn.ModuleList(
            STCBlock(cfg.hidden, cfg.heads, cfg.mlp_ratio, cfg.dropout, out_proj=cfg.out_proj)
            for _ in range(cfg.blocks)
        )
        self.enc_norm = nn.LayerNorm(cfg.hidden)
        self.decoder = STCDecoder(
            cfg.n_in, cfg.n_out, cfg.hidden, cfg.decoder_blocks or cfg.blocks, cfg.heads,
            cfg.mlp_ratio, cfg.dropout, cfg.expand_kernel, 3 + flags,
            cfg.decoder_self_attention, cfg.out_proj, cfg.positional,
        )
        if cfg.autoregressive:
            self.dec_embed = GridEmbedding(3 + flags, cfg.hidden, cfg.n_out, cfg.n_joints, cfg.positional)

    def _with_flags(self, pos: torch.Tensor, start: bool = False) -> torch.Tensor:
        flags = pos.new_zeros(*pos.shape[:-1], N_FLAGS)
        if start:
            flags[..., :] = pos.new_tensor(START_FLAG)
        return torch.cat([pos, flags], dim=-1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(self._with_flags(x) if self.cfg.autoregressive else x)
        for blk in self.encoder:
            h = blk(h)
        return self.enc_norm(h)

    def decoder_inputs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Teacher-forcing inputs (B, n_out, J, 5): the start frame (last observed pose, flags [0, 1])
        followed by the target frames 1..n_out-1 (flags [0, 0])."""
        start = self._with_flags(x[:, -1:], start=True)
        return torch.cat([start, self._with_flags(y[:, :-1])], dim=1)

    def decode_step(
        self, dec_in: torch.Tensor, x: torch.Tensor, memory: torch.Tensor, offset: int = 0,
        caches: list[dict] | None = None,
    ) -> torch.Tensor:
        """Causal decoder over input frames offset..offset+T-1 (with ``caches``, the earlier frames are
        in the caches): (B, T, J, 5) -> positions and flags (B, T, J, 5)."""
        out = self.decoder(self.dec_embed(dec_in, offset), memory, offset, caches)
        return torch.cat([residual_to_last(x, out[..., :3]), out[..., 3:]], dim=-1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Parallel model: (B, n_in, J, 3) -> (B, n_out, J, 3). Autoregressive model: with targets ``y``
        the teacher-forced pass (B, n_out, J, 5) (positions and flags); without, :meth:`generate`."""
        memory = self.encode(x)
        if not self.cfg.autoregressive:
            return residual_to_last(x, self.decoder.parallel(memory))
        if y is None:
            return self.generate(x)
        return self.decode_step(self.decoder_inputs(x, y), x, self.decoder.expand(memory))

    @torch.no_grad()
    def generate(self, x: torch.Tensor, teacher: torch.Tensor | None = None, with_flags: bool = False):
        """Frame-by-frame inference, batched, on the model's own predictions (or on ``teacher`` frames,
        which must give the same result as the teacher-forced pass: the test of causality). Keys and
        values of earlier frames are cached, so each step runs the decoder on one new frame."""
        if not self.cfg.autoregressive:
            raise ValueError("generate() is for the autoregressive model")
        memory = self.decoder.expand(self.encode(x))
        caches: list[dict] = [{} for _ in self.decoder.blocks]
        frame = self._with_flags(x[:, -1:], start=True)
        outs = []
        for t in range(self.cfg.n_out):
            out = self.decode_step(frame, x, memory, offset=t, caches=caches)
            outs.append(out)
            frame = self._with_flags(out[..., :3] if teacher is None else teacher[:, t : t + 1])
        result = torch.cat(outs, dim=1)
        return result if with_flags else result[..., :3]

"""The any-order transformer of the thesis: the building blocks shared by every any-order model.

Something is known, something else is to be predicted, in any order. Tokens carry continuous positions
(seconds, pixel coordinates, ...) through Fourier features, so any spacing works. Two variants:

* :class:`QueryEncoderDecoder` - the encoder reads the known tokens as a set; the decoder asks one
  query per target position (queries attend to each other and cross-attend to the encoding), so one
  pass gives every target's distribution. With ``independent`` each query sees only itself and the
  encoding (the thesis's pure-query decoder): a target's distribution does not depend on which other
  targets are asked for in the same pass.
* :class:`TriplesDecoder` - a causal transformer over (input position, input value, target position)
  triples in a random order; at inference the next target is chosen freely, and a key/value cache makes
  each step cost one token.

What a token holds and what the head predicts is the concern of the model that uses these blocks (motion
frames in :mod:`.motion`, pixels in the pixel model).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.inbetween.config import AnyOrderConfig
from training.inbetween.tracing import TRACING, TracedPasses, inference_only, weights_key


class FourierFeatures(nn.Module):
    """Continuous positions (..., P) -> (..., d_model) through sin/cos at log-spaced periods."""

    def __init__(self, n_coords: int, cfg: AnyOrderConfig):
        super().__init__()
        periods = torch.logspace(math.log10(cfg.min_period), math.log10(cfg.max_period), cfg.n_freqs)
        self.register_buffer("freqs", 2 * math.pi / periods, persistent=False)
        self.proj = nn.Linear(n_coords * cfg.n_freqs * 2, cfg.d_model)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        x = pos[..., None] * self.freqs  # (..., P, F)
        return self.proj(torch.cat([x.sin(), x.cos()], dim=-1).flatten(-2))


class Attention(nn.Module):
    def __init__(self, cfg: AnyOrderConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)

    def _packed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The query and key/value projections stacked into one (3d, d) weight and its bias, so that inference
        projects self-attention in one matmul instead of two and a split (the same products, row by row); rebuilt
        whenever a weight changes (training steps, loading a state dict)."""
        params = (self.q.weight, self.q.bias, self.kv.weight, self.kv.bias)
        key = tuple((p.data_ptr(), p._version) for p in params)
        if getattr(self, "_pack_key", None) != key:
            with torch.no_grad():
                self._pack = (torch.cat([self.q.weight, self.kv.weight]), torch.cat([self.q.bias, self.kv.bias]))
            self._pack_key = key
        return self._pack

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        context_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``mask`` (B or 1, 1 or Tq, Tk) is True where attention is allowed (None: everywhere). With ``cache``
        the new keys and values are appended to the cached ones; the full keys and values are returned for reuse.
        ``context_kv``: the keys and values of ``context`` already computed (:meth:`context_kv`)."""
        if context is None and context_kv is None and not torch.is_grad_enabled():
            q, k, v = _split_heads(F.linear(x, *self._packed()), 3, self.n_heads)  # inference: one matmul
        else:
            q = self._heads(self.q(x))
            k, v = context_kv if context_kv is not None else self.context_kv(x if context is None else context)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        attn_mask = mask[:, None] if mask is not None else None
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        b, h, t, dh = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * dh)), (k, v)

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values (B, heads, T, d / heads) that queries read of ``context``."""
        k, v = self.kv(context).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention, MLP."""

    def __init__(self, cfg: AnyOrderConfig, cross: bool = False):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.cross = Attention(cfg) if cross else None
        self.ln_c = nn.LayerNorm(cfg.d_model) if cross else None
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ff_mult * cfg.d_model),
            nn.GELU(),
            nn.Linear(cfg.ff_mult * cfg.d_model, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, mask=None, context=None, context_mask=None, cache=None, context_kv=None):
        h, new_cache = self.attn(self.ln1(x), mask=mask, cache=cache)
        x = x + self.drop(h) if self.training else x + h  # dropout is the identity at eval: not called at all
        if self.cross is not None:
            h, _ = self.cross(self.ln_c(x), context=context, mask=context_mask, context_kv=context_kv)
            x = x + self.drop(h) if self.training else x + h
        if self.training:
            return x + self.mlp(self.ln2(x)), new_cache
        up, down = self.mlp[0], self.mlp[2]  # the MLP without its dropout
        return x + down(F.gelu(up(self.ln2(x)))), new_cache


def _split_heads(x: torch.Tensor, n: int, n_heads: int) -> tuple[torch.Tensor, ...]:
    """(B, T, n * d) -> n tensors (B, heads, T, d / heads): the n projections of a stacked matmul, split into heads."""
    b, t, d = x.shape
    return x.view(b, t, n, n_heads, d // (n * n_heads)).permute(2, 0, 3, 1, 4).unbind(0)


def _key_mask(valid: torch.Tensor) -> torch.Tensor | None:
    """(B, T) valid tokens -> (B, 1, T) attention mask (None when every token is valid); rows with no valid key
    attend to themselves only through a guard, so padding never produces NaN."""
    if bool(valid.all()):  # nothing to mask: attention without a mask takes fewer and faster steps
        return None
    m = valid[:, None, :]
    return m | ~valid.any(dim=1)[:, None, None]


class QueryEncoderDecoder(nn.Module):
    """Encoder over the known tokens (a set: no order, no causality), decoder over the target queries.

    At inference, passes whose tokens are all valid (one window, a sampling step) can run through a traced copy
    of the layers (:meth:`trace_inference`, :class:`.tracing.TracedPasses`): the same arithmetic without Python's
    cost per operation, and without holding the GIL, so a server's other requests go on meanwhile."""

    def __init__(self, cfg: AnyOrderConfig):
        super().__init__()
        self.encoder = nn.ModuleList(Block(cfg) for _ in range(cfg.n_enc_layers))
        self.decoder = nn.ModuleList(Block(cfg, cross=True) for _ in range(cfg.n_dec_layers))
        self.ln_enc = nn.LayerNorm(cfg.d_model)
        self.ln_out = nn.LayerNorm(cfg.d_model)
        self.trace_on_first_use = False  # set for inference (a loaded model file): see :meth:`_traced_for`
        self.traced: TracedPasses | None = None  # a plain attribute (a tuple), not a submodule: not in state dicts
        self._trace_failed = False

    def trace_inference(self) -> bool:
        """Build :attr:`traced` from the current weights (eval mode); False, leaving it unset, when the traced
        passes do not reproduce the layers on shapes other than the one traced (then inference stays eager)."""
        self.traced = None
        self.traced = TracedPasses.build(self)
        self._trace_failed = self.traced is None
        return self.traced is not None

    def _traced_for(self, x: torch.Tensor) -> TracedPasses | None:
        """The traced passes when they may serve this call: inference on float32 CPU tokens, with the weights they
        were traced from. With :attr:`trace_on_first_use` the first such call traces them (about 0.3 s), so a
        loaded model that never fills a window alone costs nothing."""
        if not inference_only(self, x):
            return None
        if self.traced is None and self.trace_on_first_use and not self._trace_failed:
            with TRACING:  # another thread may have traced them meanwhile
                if self.traced is None and not self._trace_failed:
                    self.trace_inference()
        t = self.traced
        return t if t is not None and t.key == weights_key(self) else None

    def encode(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        mask = _key_mask(valid)
        traced = self._traced_for(tokens) if mask is None else None
        if traced is not None:
            return traced.encode(tokens)
        return self.encode_layers(tokens, mask)

    def encode_layers(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's layers, eager (what the traced copies record, with no mask)."""
        for blk in self.encoder:
            tokens, _ = blk(tokens, mask=mask)
        return self.ln_enc(tokens)

    def decode(self, queries, query_valid, memory, memory_valid, independent: bool = False,
               memory_kv: list | None = None) -> torch.Tensor:
        """``memory_kv``: :meth:`memory_kv` of ``memory``, when several decodes read one encoding."""
        qmask, mmask = _key_mask(query_valid), _key_mask(memory_valid)
        traced = self._traced_for(queries) if qmask is None and mmask is None and not independent else None
        if traced is not None:
            if memory_kv is None:
                return traced.decode(queries, memory)
            return traced.decode_kv(queries, *(x for kv in memory_kv for x in kv))
        if independent:  # each query attends to itself only among the queries
            qmask = torch.eye(queries.shape[1], dtype=torch.bool, device=queries.device)[None]
        return self.decode_layers(queries, memory, qmask, mmask, memory_kv)

    def decode_layers(self, queries: torch.Tensor, memory: torch.Tensor | None, query_mask: torch.Tensor | None = None,
                      memory_mask: torch.Tensor | None = None, memory_kv: list | None = None) -> torch.Tensor:
        """The decoder's layers, eager (what the traced copies record, with no masks): against ``memory``, or against
        its :meth:`memory_kv` when given."""
        for i, blk in enumerate(self.decoder):
            queries, _ = blk(queries, mask=query_mask, context=memory, context_mask=memory_mask,
                             context_kv=None if memory_kv is None else memory_kv[i])
        return self.ln_out(queries)

    def memory_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every decoder layer's cross-attention keys and values of an encoding, computed once."""
        return [blk.cross.context_kv(memory) for blk in self.decoder]

    def forward(self, known_tokens, known_valid, query_tokens, query_valid, independent: bool = False) -> torch.Tensor:
        """Tokens (B, T, d) with validity (B, T); returns one output per query token (invalid queries'
        outputs are meaningless). Invalid tokens are masked out of every attention, so they are dropped
        before the passes: the cost follows the numbers of known and target tokens, not the window length
        (in any-order sampling most frames are one or the other)."""
        return self.decode_queries(query_tokens, query_valid, *self.encode_known(known_tokens, known_valid),
                                   independent)

    def encode_known(self, known_tokens: torch.Tensor, known_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoding of the valid known tokens (valid ones first) and its validity: what
        :meth:`decode_queries` reads, reusable for several sets of queries."""
        k_tok, k_valid, _ = _valid_first(known_tokens, known_valid)
        return self.encode(k_tok, k_valid), k_valid

    def decode_queries(self, query_tokens, query_valid, memory, memory_valid, independent: bool = False,
                       memory_kv: list | None = None):
        """One output per query token (B, T, d) against an :meth:`encode_known` encoding."""
        q_tok, q_valid, q_idx = _valid_first(query_tokens, query_valid)
        h = self.decode(q_tok, q_valid, memory, memory_valid, independent, memory_kv)
        if q_idx is None:
            return h
        return torch.zeros_like(query_tokens).scatter(1, q_idx[..., None].expand_as(h), h)


def _valid_first(tokens: torch.Tensor, valid: torch.Tensor):
    """The valid tokens of each row first, cut to the longest row's count: (tokens, valid, the kept
    positions (B, n)); the positions are None when nothing is cut."""
    n = max(int(valid.sum(dim=1).max()), 1)
    if n == tokens.shape[1]:
        return tokens, valid, None
    idx = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)[:, :n]
    return tokens.gather(1, idx[..., None].expand(-1, -1, tokens.shape[-1])), valid.gather(1, idx), idx


KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class TriplesDecoder(nn.Module):
    """A causal transformer. Token i holds (input position, input value, target position) and predicts
    the value at its target position from tokens 0..i. ``forward`` with ``cache`` processes only the new
    tokens and returns the grown cache, so generation costs one token per step."""

    def __init__(self, cfg: AnyOrderConfig):
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_dec_layers))
        self.ln_out = nn.LayerNorm(cfg.d_model)

    def forward(
        self,
        tokens: torch.Tensor,
        valid: torch.Tensor | None = None,
        cache: KVCache | None = None,
        independent: bool = False,
    ) -> tuple[torch.Tensor, KVCache]:
        """``independent``: the new tokens see the cache and themselves but not each other, so several
        candidate next steps are scored in one call (the returned cache is then not for reuse)."""
        b, t, _ = tokens.shape
        past = cache[0][0].shape[2] if cache else 0
        total = past + t
        causal = torch.ones(t, total, dtype=torch.bool, device=tokens.device).tril(diagonal=past)[None]
        if independent:
            causal = causal & (torch.arange(total, device=tokens.device)[None, None, :] < past) | torch.eye(
                t, total, dtype=torch.bool, device=tokens.device
            ).roll(past, dims=1)[None]
        if valid is not None:  # valid: (B, total) over cached + new tokens
            causal = causal & valid[:, None, :]
            dev = tokens.device
            own = torch.arange(total, device=dev)[None, :] == past + torch.arange(t, device=dev)[:, None]
            causal = causal | own[None]  # a token always sees itself, so padding never yields NaN
        new_cache: KVCache = []
        x = tokens
        for i, blk in enumerate(self.blocks):
            x, kv = blk(x, mask=causal, cache=cache[i] if cache else None)
            new_cache.append(kv)
        return self.ln_out(x), new_cache

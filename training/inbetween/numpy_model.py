"""The query variant of :class:`~training.inbetween.model.MotionFill` for inference in numpy: the same arithmetic,
from the same safetensors weights, without torch.

Why: ``anyfill fill`` is a fresh process per shot, and importing torch is most of its start (about 1.5 s of this
CPU, ten times the fill of a 1,900-frame clip). A fill needs only the forward pass (and any-order sampling its
encode / decode halves), which is a few matmuls, layer norms and softmaxes. The server and training keep the torch
model (its matmuls are faster on this CPU, and its process imports torch once). ``tests/test_numpy_model.py`` holds
this one to the torch model's outputs on both shipped models.

Read beside ``model.py`` and ``transformer.py``: each function here is named after the torch module it mirrors.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import erf

from training.inbetween.config import MotionConfig
from training.motion.skeleton import get_schema

LN_EPS = 1e-5  # torch.nn.LayerNorm's default


class Encoding(NamedTuple):
    """The known frames' encoding (model.Encoding): memory (B, K, d), its validity, the time origin (B, 1), and each
    decoder layer's cross-attention keys and values of the memory."""

    memory: np.ndarray
    valid: np.ndarray
    ref: np.ndarray
    kv: list


def _block_shapes(prefix: str, d: int, ff: int, cross: bool) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for ln in ("ln1", "ln2") + (("ln_c",) if cross else ()):
        shapes |= {f"{prefix}.{ln}.weight": (d,), f"{prefix}.{ln}.bias": (d,)}
    for attn in ("attn",) + (("cross",) if cross else ()):
        shapes |= {f"{prefix}.{attn}.q.weight": (d, d), f"{prefix}.{attn}.q.bias": (d,),
                   f"{prefix}.{attn}.kv.weight": (2 * d, d), f"{prefix}.{attn}.kv.bias": (2 * d,),
                   f"{prefix}.{attn}.out.weight": (d, d), f"{prefix}.{attn}.out.bias": (d,)}
    return shapes | {f"{prefix}.mlp.0.weight": (ff, d), f"{prefix}.mlp.0.bias": (ff,),
                     f"{prefix}.mlp.2.weight": (d, ff), f"{prefix}.mlp.2.bias": (d,)}


def weight_shapes(cfg: MotionConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a query-variant model file holds, with its shape (the torch model's state dict)."""
    j, m, c = cfg.n_joints, cfg.n_moving, cfg.core
    d, ff = c.d_model, c.ff_mult * c.d_model
    shapes: dict[str, tuple[int, ...]] = {
        "rot_mean": (j, 6), "rot_std": (j, 6), "pos_mean": (m, 3), "pos_std": (m, 3),
        "time.proj.weight": (d, 2 * c.n_freqs), "time.proj.bias": (d,),
        "known_in.weight": (d, cfg.known_width), "known_in.bias": (d,),
        "query_in.weight": (d, cfg.query_width), "query_in.bias": (d,),
        "out.weight": (j * 6 + m * 3, d), "out.bias": (j * 6 + m * 3,),
        "spread.0.weight": (d, d), "spread.0.bias": (d,),
        "spread.2.weight": (j + m * 3, d), "spread.2.bias": (j + m * 3,),
        "core.ln_enc.weight": (d,), "core.ln_enc.bias": (d,), "core.ln_out.weight": (d,), "core.ln_out.bias": (d,),
    }
    if cfg.key_gate > 0:
        shapes["log_gate_time"] = (j,)
    for i in range(c.n_enc_layers):
        shapes |= _block_shapes(f"core.encoder.{i}", d, ff, cross=False)
    for i in range(c.n_dec_layers):
        shapes |= _block_shapes(f"core.decoder.{i}", d, ff, cross=True)
    return shapes


def _gelu(x: np.ndarray) -> np.ndarray:
    """The exact GELU (torch's default), x Phi(x)."""
    return x * (0.5 + 0.5 * erf(x * np.float32(1 / math.sqrt(2))))


def _softmax(x: np.ndarray) -> np.ndarray:
    x = np.exp(x - x.max(-1, keepdims=True))
    return x / x.sum(-1, keepdims=True)


def _key_mask(valid: np.ndarray) -> np.ndarray | None:
    """transformer._key_mask: (B, T) valid tokens -> (B, 1, T) allowed keys, None when all are."""
    if valid.all():
        return None
    return valid[:, None, :] | ~valid.any(axis=1)[:, None, None]


def _valid_first(tokens: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """transformer._valid_first: each row's valid tokens first, cut to the longest row's count."""
    n = max(int(valid.sum(axis=1).max()), 1)
    if n == tokens.shape[1]:
        return tokens, valid, None
    idx = np.argsort(~valid, axis=1, kind="stable")[:, :n]
    return np.take_along_axis(tokens, idx[..., None], 1), np.take_along_axis(valid, idx, 1), idx


class NumpyMotionFill:
    """A query-variant motion model for inference: ``model(batch)`` gives what ``MotionFill(batch)`` gives (the
    per-cell means and spreads of :func:`~training.inbetween.features.canonical_batch`'s windows), as float64."""

    def __init__(self, cfg: MotionConfig, state: dict[str, np.ndarray]):
        if cfg.variant != "query":
            raise ValueError(f"the numpy runtime runs the query variant only; this model is {cfg.variant!r}")
        expected = weight_shapes(cfg)
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or extra:
            raise ValueError("weights do not match the card's config: "
                             + "; ".join(f"{what} {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
                                         for what, names in (("missing", missing), ("unexpected", extra)) if names))
        for k, shape in expected.items():
            if tuple(state[k].shape) != shape:
                raise ValueError(f"weights do not match the card's config: {k} is {tuple(state[k].shape)}, "
                                 f"expected {shape}")
        self.cfg = cfg
        self.sampling = None  # set by the loader from the card, as on the torch model
        self._w = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
        # Linear weights transposed once, so each layer is one (rows, in) x (in, out) product
        self._wt = {k[: -len(".weight")]: np.ascontiguousarray(v.T) for k, v in self._w.items()
                    if k.endswith(".weight") and v.ndim == 2}
        c = cfg.core
        periods = np.logspace(math.log10(c.min_period), math.log10(c.max_period), c.n_freqs, dtype=np.float32)
        self._freqs = (np.float32(2 * math.pi) / periods).astype(np.float32)
        self._moving = list(get_schema(cfg.skeleton).moving)

    # --- layers (nn.Linear, nn.LayerNorm, FourierFeatures, Attention, Block) ------------------------------------
    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        shape = x.shape
        y = x.reshape(-1, shape[-1]) @ self._wt[name]
        y += self._w[name + ".bias"]
        return y.reshape(*shape[:-1], y.shape[-1])

    def _layer_norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        xc = x - mean
        var = np.square(xc).mean(-1, keepdims=True)
        return xc / np.sqrt(var + np.float32(LN_EPS)) * self._w[name + ".weight"] + self._w[name + ".bias"]

    def _time(self, t: np.ndarray) -> np.ndarray:
        x = t[..., None] * self._freqs  # (..., 1, F)
        return self._linear(np.concatenate([np.sin(x), np.cos(x)], -1).reshape(*t.shape[:-1], -1), "time.proj")

    def _heads(self, x: np.ndarray) -> np.ndarray:
        b, t, d = x.shape
        h = self.cfg.core.n_heads
        return x.reshape(b, t, h, d // h).transpose(0, 2, 1, 3)

    def _kv(self, context: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        k, v = np.split(self._linear(context, name + ".kv"), 2, axis=-1)
        return self._heads(k), self._heads(v)

    def _attention(self, x: np.ndarray, name: str, context: np.ndarray | None, mask: np.ndarray | None,
                   context_kv: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        q = self._heads(self._linear(x, name + ".q"))
        k, v = context_kv if context_kv is not None else self._kv(x if context is None else context, name)
        scores = q @ k.transpose(0, 1, 3, 2) * np.float32(1 / math.sqrt(q.shape[-1]))
        if mask is not None:
            scores = np.where(mask[:, None], scores, np.float32(-np.inf))
        y = (_softmax(scores) @ v).transpose(0, 2, 1, 3)
        return self._linear(y.reshape(*y.shape[:2], -1), name + ".out")

    def _block(self, x: np.ndarray, name: str, mask: np.ndarray | None, context: np.ndarray | None = None,
               context_mask: np.ndarray | None = None, context_kv: tuple | None = None) -> np.ndarray:
        x = x + self._attention(self._layer_norm(x, name + ".ln1"), name + ".attn", None, mask)
        if context is not None:
            x = x + self._attention(self._layer_norm(x, name + ".ln_c"), name + ".cross", context, context_mask,
                                    context_kv)
        return x + self._linear(_gelu(self._linear(self._layer_norm(x, name + ".ln2"), name + ".mlp.0")),
                                name + ".mlp.2")

    # --- the model (MotionFill._features, QueryEncoderDecoder, MotionFill._head) ---------------------------------
    @staticmethod
    def _time_origin(b: dict[str, np.ndarray]) -> np.ndarray:
        frame_known = b["known"].any(-1)
        ref = (b["times"] * frame_known).sum(1, keepdims=True) / np.maximum(frame_known.sum(1, keepdims=True), 1)
        return ref.astype(np.float32)

    def _features(self, b: dict[str, np.ndarray], ref: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w = self._w
        known = b["known"].astype(np.float32)
        moving_known = known[..., self._moving]
        rot = (b["rot6d"] - w["rot_mean"]) / w["rot_std"] * known[..., None]
        pos = (b["pos"] - w["pos_mean"]) / w["pos_std"] * moving_known[..., None]
        base = (b["base6d"] - w["rot_mean"]) / w["rot_std"]
        basepos = (b["basepos"] - w["pos_mean"]) / w["pos_std"]
        flat = lambda x, n: x.reshape(*x.shape[:-n], -1)  # noqa: E731  (torch's flatten(-n))
        kn = np.concatenate([flat(rot, 2), flat(pos, 2), known, moving_known], -1)
        t = b["target"].astype(np.float32)
        has = np.broadcast_to(b["has_key"].astype(np.float32)[:, None], t.shape)
        mhas = np.broadcast_to(b["moving_has_key"].astype(np.float32)[:, None], moving_known.shape)
        q = [kn, flat(base, 2), flat(basepos, 2), t, has, mhas]
        if self.cfg.features.key_velocity:
            q += [flat(b["keyvel6d"] / w["rot_std"][:, None], 3), flat(b["keyvelpos"] / w["pos_std"][:, None], 3)]
        ref = self._time_origin(b) if ref is None else ref
        return kn, np.concatenate(q, -1), (b["times"] - ref)[..., None]

    def _encode(self, tokens: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tokens, valid, _ = _valid_first(tokens, valid)
        mask = _key_mask(valid)
        for i in range(self.cfg.core.n_enc_layers):
            tokens = self._block(tokens, f"core.encoder.{i}", mask)
        return self._layer_norm(tokens, "core.ln_enc"), valid

    def _decode(self, queries: np.ndarray, valid: np.ndarray, memory: np.ndarray, memory_valid: np.ndarray,
                memory_kv: list | None = None) -> np.ndarray:
        q, q_valid, q_idx = _valid_first(queries, valid)
        qmask, mmask = _key_mask(q_valid), _key_mask(memory_valid)
        for i in range(self.cfg.core.n_dec_layers):
            q = self._block(q, f"core.decoder.{i}", qmask, memory, mmask, None if memory_kv is None else memory_kv[i])
        h = self._layer_norm(q, "core.ln_out")
        if q_idx is None:
            return h
        out = np.zeros_like(queries)
        np.put_along_axis(out, q_idx[..., None], h, 1)
        return out

    def _gap_gate(self, b: dict[str, np.ndarray], length: float) -> np.ndarray:
        return -np.expm1(-np.square(b["gap_time"] / np.float32(length)))

    def _motion_gates(self, b: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        t = b["times"]
        if t.shape[1] < 2:
            return np.ones_like(t), np.ones_like(t)
        w = self._w

        def speed(x: np.ndarray) -> np.ndarray:  # (B, T, J, C) -> (B, T)
            xs, ts = np.concatenate([x[:, :1], x, x[:, -1:]], 1), np.concatenate([t[:, :1], t, t[:, -1:]], 1)
            dx, dt = xs[:, 2:] - xs[:, :-2], np.maximum(ts[:, 2:] - ts[:, :-2], np.float32(1e-6))
            return np.linalg.norm(dx, axis=-1).mean(-1) / dt

        g = np.float32(self.cfg.motion_gate)
        v_rot = speed((b["base6d"] - w["rot_mean"]) / w["rot_std"])
        v_pos = speed((b["basepos"] - w["pos_mean"]) / w["pos_std"])
        return -np.expm1(-np.square(v_rot / g)), -np.expm1(-np.square(v_pos / g))

    def _head(self, h: np.ndarray, b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cfg, w, mv = self.cfg, self._w, self._moving
        j, m = cfg.n_joints, cfg.n_moving
        out = self._linear(h, "out")
        d_rot = out[..., : j * 6].reshape(*h.shape[:-1], j, 6)
        d_pos = out[..., j * 6 :].reshape(*h.shape[:-1], m, 3)
        spread = self._linear(_gelu(self._linear(h, "spread.0")), "spread.2")
        k_raw, s_raw = spread[..., :j], spread[..., j:]
        base = (b["base6d"] - w["rot_mean"]) / w["rot_std"]
        basepos = (b["basepos"] - w["pos_mean"]) / w["pos_std"]
        if cfg.key_gate > 0:
            gate = -np.expm1(-b["key_time"] / np.exp(w["log_gate_time"]))
            d_rot, d_pos = d_rot * gate[..., None], d_pos * gate[..., mv, None]
        if cfg.motion_gate > 0:
            g_rot, g_pos = self._motion_gates(b)
            known = b["known"]
            span = (known.cumsum(1) > 0) & (known[:, ::-1].cumsum(1)[:, ::-1] > 0)
            d_rot = d_rot * np.where(span[..., None], g_rot[..., None, None], np.float32(1))
            d_pos = d_pos * np.where(span[..., mv, None], g_pos[..., None, None], np.float32(1))
        if cfg.gap_gate_rot > 0:
            d_rot = d_rot * self._gap_gate(b, cfg.gap_gate_rot)[..., None]
        if cfg.gap_gate_pos > 0:
            d_pos = d_pos * self._gap_gate(b, cfg.gap_gate_pos)[..., mv, None]
        if cfg.rot_scale or cfg.pos_scale != 1.0:
            scale = np.asarray(cfg.rot_scale or [1.0] * j, dtype=np.float32)
            d_rot = d_rot * np.where(b["has_key"], scale, np.float32(1))[:, None, :, None]
            d_pos = d_pos * np.where(b["moving_has_key"], np.float32(cfg.pos_scale), np.float32(1))[:, None, :, None]
        rot = (base + d_rot) * w["rot_std"] + w["rot_mean"]
        pos = (basepos + d_pos) * w["pos_std"] + w["pos_mean"]
        log_kappa = np.clip(k_raw + np.float32(cfg.kappa_offset), -4.0, 12.0)
        log_sigma = np.clip(s_raw.reshape(*s_raw.shape[:-1], m, 3) + np.log(w["pos_std"]), -12.0, 8.0)
        return {"rot6d": rot, "log_kappa": log_kappa, "pos": pos, "log_sigma": log_sigma}

    def __call__(self, b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every frame's distributions (B, T, ...) of a window batch, as float64; only target cells mean anything."""
        kn, q, trel = self._features(b)
        tenc = self._time(trel)
        memory, valid = self._encode(self._linear(kn, "known_in") + tenc, b["known"].any(-1))
        h = self._decode(self._linear(q, "query_in") + tenc, b["target"].any(-1), memory, valid)
        return {k: v.astype(np.float64) for k, v in self._head(h, b).items()}

    def encode(self, b: dict[str, np.ndarray]) -> Encoding:
        """MotionFill.encode: the encoding of the known frames that :meth:`decode` reads (any-order sampling keeps
        one while it draws a few cells)."""
        ref = self._time_origin(b)
        kn, _, trel = self._features(b, ref)
        memory, valid = self._encode(self._linear(kn, "known_in") + self._time(trel), b["known"].any(-1))
        kv = [self._kv(memory, f"core.decoder.{i}.cross") for i in range(self.cfg.core.n_dec_layers)]
        return Encoding(memory, valid, ref, kv)

    def decode(self, b: dict[str, np.ndarray], enc: Encoding) -> dict[str, np.ndarray]:
        """MotionFill.decode: every target's distribution against an :meth:`encode` of known cells, as float64."""
        _, q, trel = self._features(b, enc.ref)
        h = self._decode(self._linear(q, "query_in") + self._time(trel), b["target"].any(-1), enc.memory, enc.valid,
                         enc.kv)
        return {k: v.astype(np.float64) for k, v in self._head(h, b).items()}

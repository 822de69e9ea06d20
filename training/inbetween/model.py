"""The conditional any-order transformer for motion (the thesis model), hand or body.

A window is a grid of cells (frame t, joint j); any subset is known, any other subset is the target.
Cells become one token per frame: each joint's 6D rotation with a known bit (a moving joint's position
rides with its joint), plus the interpolation of the known cells as a baseline the network corrects
(with ``base_velocity``, a Hermite curve through the keys that keeps part of their velocity; and, with
``key_velocity``, where the velocity at each cell's surrounding keys would carry it), and the
frame's time in seconds through Fourier features (any fps, any key spacing).

Every target cell gets a distribution: its rotation is the mean (6D) with a von Mises concentration
kappa on the geodesic angle to it; a moving joint's position is a Gaussian. The mean is the
deterministic fill; kappa and sigma give the entropy that entropy-ordered sampling uses.

Two variants share the token features and the head:
``query``: encoder over frames with known cells, decoder with one query per frame with target cells.
``triples``: causal decoder over (known frame, next target frame) triples with a key/value cache; the
known frames form the prefix, each generated frame is fed back as the next triple's input.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from training.inbetween.config import MotionConfig
from training.inbetween.tracing import TracedMethod, weights_key
from training.inbetween.transformer import FourierFeatures, KVCache, QueryEncoderDecoder, TriplesDecoder

# what the queries and the head read of a batch (the core's outputs aside), and what the head returns: the inputs and
# outputs of their traced copies
QUERY_INPUTS = ("known", "target", "times", "rot6d", "pos", "base6d", "basepos", "has_key", "moving_has_key")
KEY_VELOCITY_INPUTS = ("keyvel6d", "keyvelpos")  # queries of models with ``features.key_velocity``
HEAD_INPUTS = ("base6d", "basepos", "key_time", "gap_time", "known", "times", "has_key", "moving_has_key")
HEAD_OUTPUTS = ("rot6d", "log_kappa", "pos", "log_sigma")
# what a whole window's pass reads besides the frames' positions (:meth:`MotionFill._window_tensors`)
WINDOW_INPUTS = tuple(dict.fromkeys(QUERY_INPUTS + KEY_VELOCITY_INPUTS + HEAD_INPUTS))


class Encoding(NamedTuple):
    """The query variant's encoding of the known frames (:meth:`MotionFill.encode`)."""

    memory: torch.Tensor  # (B, K, d): the known frames' tokens after the encoder, valid ones first
    valid: torch.Tensor  # (B, K)
    ref: torch.Tensor  # (B, 1): the time origin both sides' tokens are measured from (seconds)
    kv: list  # each decoder layer's cross-attention keys and values of ``memory``, computed once


class MotionFill(nn.Module):
    def __init__(self, cfg: MotionConfig):
        super().__init__()
        if cfg.variant not in ("query", "triples"):
            raise ValueError(f"unknown variant {cfg.variant!r}; expected 'query' or 'triples'")
        self.cfg = cfg
        j, m, d = cfg.n_joints, cfg.n_moving, cfg.core.d_model
        for name, shape in (("rot_mean", (j, 6)), ("rot_std", (j, 6)), ("pos_mean", (m, 3)), ("pos_std", (m, 3))):
            self.register_buffer(name, torch.zeros(shape) if "mean" in name else torch.ones(shape))
        self.time = FourierFeatures(1, cfg.core)
        self.known_in = nn.Linear(cfg.known_width, d)
        self.query_in = nn.Linear(cfg.query_width, d)
        self.out = nn.Linear(d, j * 6 + m * 3)
        nn.init.zeros_(self.out.weight)  # starts as the interpolation baseline
        nn.init.zeros_(self.out.bias)
        if cfg.key_gate > 0:  # per joint: the time over which a correction fades in away from a key
            self.log_gate_time = nn.Parameter(torch.full((j,), math.log(cfg.key_gate)))
        # the spreads read a detached copy of the features: their likelihood gradients grow as the spreads
        # shrink and would otherwise drown the signal that fits the means (measured: no learning at all)
        self.spread = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, j + m * 3))
        if cfg.variant == "query":
            self.core = QueryEncoderDecoder(cfg.core)
        else:
            self.core = TriplesDecoder(cfg.core)
            self.target_time = FourierFeatures(1, cfg.core)
            self.triple_in = nn.Linear(d * 2, d)
        # a loaded model (load_model turns them on) runs a sampling step's queries and its head traced, as the core
        self.traced_queries = TracedMethod(self._query_tensors, self._query_examples, self._outer_key)
        self.traced_head = TracedMethod(self._head_tensors, self._head_examples, self._outer_key)
        # and a whole window's pass as one traced graph where every row has as many known and as many target frames
        self.traced_window = TracedMethod(self._window_tensors, self._window_examples, self._whole_key)
        # and a sampling step's decode (queries, the layers against a kept encoding, the head) likewise
        self.traced_step = TracedMethod(self._step_tensors, self._step_examples, self._whole_key)

    # --- features -----------------------------------------------------------------------------------
    def set_stats(self, stats: dict) -> None:
        for k in ("rot_mean", "rot_std", "pos_mean", "pos_std"):
            getattr(self, k).copy_(torch.as_tensor(stats[k], dtype=torch.float32))

    def _features(self, b: dict[str, torch.Tensor], ref: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        known = b["known"].float()
        moving_known = known[..., self._moving_index()]
        rot = (b["rot6d"] - self.rot_mean) / self.rot_std * known[..., None]
        pos = (b["pos"] - self.pos_mean) / self.pos_std * moving_known[..., None]
        base = (b["base6d"] - self.rot_mean) / self.rot_std
        basepos = (b["basepos"] - self.pos_mean) / self.pos_std
        kn = torch.cat([rot.flatten(-2), pos.flatten(-2), known, moving_known], dim=-1)
        t = b["target"].float()
        has = b["has_key"].float()[:, None].expand_as(t)
        mhas = b["moving_has_key"].float()[:, None].expand_as(moving_known)
        q = [kn, base.flatten(-2), basepos.flatten(-2), t, has, mhas]
        if self.cfg.features.key_velocity:
            q += [(b["keyvel6d"] / self.rot_std[:, None]).flatten(-3),
                  (b["keyvelpos"] / self.pos_std[:, None]).flatten(-3)]
        q = torch.cat(q, dim=-1)
        times = b["times"]
        if ref is None:
            ref = self.time_origin(b)
        return kn, q, (times - ref)[..., None]

    @staticmethod
    def time_origin(b: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 1): the mean time of the frames with known cells, the origin of every token's time."""
        frame_known = b["known"].any(-1)
        return (b["times"] * frame_known).sum(1, keepdim=True) / frame_known.sum(1, keepdim=True).clamp(min=1)

    def _moving_index(self) -> list[int]:
        from training.motion.skeleton import get_schema

        return list(get_schema(self.cfg.skeleton).moving)

    def _head(self, h: torch.Tensor, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        traced = self.traced_head.serving(h) if h.shape[1] > 1 else None  # one frame: motion_gates' other branch
        if traced is not None:
            return dict(zip(HEAD_OUTPUTS, traced(h, *(b[k] for k in HEAD_INPUTS)), strict=True))
        return self._head_eager(h, b)

    def _head_eager(self, h: torch.Tensor, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        j, m = self.cfg.n_joints, self.cfg.n_moving
        d_rot, d_pos = self.out(h).split([j * 6, m * 3], dim=-1)
        k_raw, s_raw = self.spread(h.detach()).split([j, m * 3], dim=-1)
        base = (b["base6d"] - self.rot_mean) / self.rot_std
        basepos = (b["basepos"] - self.pos_mean) / self.pos_std
        d_rot, d_pos = d_rot.unflatten(-1, (j, 6)), d_pos.unflatten(-1, (m, 3))
        if self.cfg.key_gate > 0:
            # the baseline is right at a key and close to it (Hermite: to second order); a correction there
            # is noise, so it fades in with the time to the joint's nearest key
            gate = -torch.expm1(-b["key_time"] / torch.exp(self.log_gate_time))
            d_rot, d_pos = d_rot * gate[..., None], d_pos * gate[..., self._moving_index(), None]
        if self.cfg.motion_gate > 0:
            # only between two keys of the joint: before its first key or after its last the curve is held
            # still, and there the prediction is the network's
            g_rot, g_pos = self.motion_gates(b)
            known = b["known"]
            span = (known.cumsum(1) > 0) & (known.flip(1).cumsum(1).flip(1) > 0)
            d_rot = d_rot * torch.where(span[..., None], g_rot[..., None, None], 1.0)
            d_pos = d_pos * torch.where(span[..., self._moving_index(), None], g_pos[..., None, None], 1.0)
        if self.cfg.gap_gate_rot > 0:
            d_rot = d_rot * self.gap_gate(b, self.cfg.gap_gate_rot)[..., None]
        if self.cfg.gap_gate_pos > 0:
            d_pos = d_pos * self.gap_gate(b, self.cfg.gap_gate_pos)[..., self._moving_index(), None]
        if self.cfg.rot_scale or self.cfg.pos_scale != 1.0:
            # only where there is a curve to correct: a joint with no key in the window has no baseline,
            # and its prediction is all the network's
            scale = d_rot.new_tensor(self.cfg.rot_scale or [1.0] * self.cfg.n_joints)
            d_rot = d_rot * torch.where(b["has_key"], scale, 1.0)[:, None, :, None]
            d_pos = d_pos * torch.where(b["moving_has_key"], self.cfg.pos_scale, 1.0)[:, None, :, None]
        rot = (base + d_rot) * self.rot_std + self.rot_mean
        pos = (basepos + d_pos) * self.pos_std + self.pos_mean
        log_kappa = (k_raw + self.cfg.kappa_offset).clamp(-4.0, 12.0)
        log_sigma = (s_raw.unflatten(-1, (m, 3)) + torch.log(self.pos_std)).clamp(-12.0, 8.0)  # real units
        return {"rot6d": rot, "log_kappa": log_kappa, "pos": pos, "log_sigma": log_sigma}

    def _head_tensors(self, h: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The head of positional tensors (``h``, then :data:`HEAD_INPUTS`), as :attr:`traced_head` traces it."""
        out = self._head_eager(h, dict(zip(HEAD_INPUTS, inputs, strict=True)))
        return tuple(out[k] for k in HEAD_OUTPUTS)

    def _head_examples(self) -> list[tuple[torch.Tensor, ...]]:
        """Inputs of :meth:`_head_tensors` of a few sizes, of two frames or more (what the traced head serves)."""
        gen, examples = torch.Generator().manual_seed(0), []
        for n, t in ((1, 5), (2, 9), (1, 2), (3, 17)):
            b = self._random_batch(n, t, gen)
            examples.append((torch.randn(n, t, self.cfg.core.d_model, generator=gen), *(b[k] for k in HEAD_INPUTS)))
        return examples

    def _random_batch(self, n: int, t: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """A batch of random inputs of this model's shapes (values non-negative, as times are): what its traced copies
        are checked on."""
        j, m = self.cfg.n_joints, self.cfg.n_moving
        known = torch.rand(n, t, j, generator=gen) < 0.5
        shapes = {"rot6d": (j, 6), "base6d": (j, 6), "keyvel6d": (j, 2, 6), "pos": (m, 3), "basepos": (m, 3),
                  "keyvelpos": (m, 2, 3), "key_time": (j,), "gap_time": (j,)}
        return {"known": known, "target": ~known, "times": torch.arange(t).expand(n, t) / 30.0,
                "has_key": known.any(1), "moving_has_key": known[..., self._moving_index()].any(1),
                **{k: torch.randn(n, t, *shape, generator=gen).abs() for k, shape in shapes.items()}}

    def _outer_key(self) -> tuple:
        """What the queries and the head read: the weights outside the core (the core's traced passes check its own)
        and the config (calibration changes it)."""
        return weights_key(self, skip=self.core), self.cfg

    @staticmethod
    def gap_gate(b: dict[str, torch.Tensor], length: float) -> torch.Tensor:
        """Per cell (B, T, J), the share of its correction kept in a gap of its joint's keys: 1 - exp(-(L /
        length)^2) for a gap L seconds long (1 outside the keys, where :func:`gap_time` is large)."""
        return -torch.expm1(-((b["gap_time"] / length) ** 2))

    def motion_gates(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per frame (B, T), the share of the rotation and of the position corrections the motion gate keeps:
        from the speed of the curve through the keys there (central differences in time, in standard
        deviations of the features per second, averaged over joints). A one-frame window keeps them all."""
        if b["times"].shape[1] < 2:
            ones = b["times"].new_ones(b["times"].shape)
            return ones, ones

        def speed(x: torch.Tensor) -> torch.Tensor:  # (B, T, J, C) -> (B, T)
            t = b["times"]
            xs, ts = torch.cat([x[:, :1], x, x[:, -1:]], 1), torch.cat([t[:, :1], t, t[:, -1:]], 1)
            dx, dt = xs[:, 2:] - xs[:, :-2], (ts[:, 2:] - ts[:, :-2]).clamp(min=1e-6)
            return dx.norm(dim=-1).mean(-1) / dt

        g = self.cfg.motion_gate
        v_rot = speed((b["base6d"] - self.rot_mean) / self.rot_std)
        v_pos = speed((b["basepos"] - self.pos_mean) / self.pos_std)
        return -torch.expm1(-((v_rot / g) ** 2)), -torch.expm1(-((v_pos / g) ** 2))

    # --- variants ------------------------------------------------------------------------------------
    def forward(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Distributions for every frame of the window (B, T, ...); only target cells are meaningful.
        Query variant: one pass. Triples variant: teacher-forced over a random order of target frames
        (``b['order']``, (B, T) frame indices: known frames first, then targets), as in training."""
        if self.cfg.variant == "query":
            traced = self._traced_window(b)
            if traced is not None:
                return traced
        kn, q, trel = self._features(b)
        if self.cfg.variant == "query":
            tenc = self.time(trel)
            memory, valid = self.core.encode_known(self.known_in(kn) + tenc, b["known"].any(-1))
            return self._head(self.core.decode_queries(self.query_in(q) + tenc, b["target"].any(-1), memory, valid), b)
        return self._triples_teacher_forced(kn, q, trel, b)

    def _traced_window(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """Query variant: the window's outputs through :attr:`traced_window` (one graph: no Python between the
        inputs, the layers and the head) when it may serve this batch: two frames or more, and rows that all have
        the same numbers of frames with known cells and of frames with targets (no padding to mask). None: eager."""
        known_frames, query_frames = b["known"].any(-1), b["target"].any(-1)
        if known_frames.shape[1] < 2:
            return None
        positions = _frame_positions(known_frames), _frame_positions(query_frames)
        if positions[0] is None or positions[1] is None:
            return None
        traced = self.traced_window.serving(b["times"])
        if traced is None:
            return None
        return dict(zip(HEAD_OUTPUTS, traced(*positions, *(b[k] for k in self._window_inputs())), strict=True))

    def _window_inputs(self) -> tuple[str, ...]:
        """What a whole window's pass reads of a batch, in the order :meth:`_window_tensors` takes them."""
        return WINDOW_INPUTS if self.cfg.features.key_velocity else tuple(
            k for k in WINDOW_INPUTS if k not in KEY_VELOCITY_INPUTS)

    def _window_tensors(self, known_at: torch.Tensor, query_at: torch.Tensor, *inputs: torch.Tensor
                        ) -> tuple[torch.Tensor, ...]:
        """A query model's window pass of positional tensors, as :attr:`traced_window` traces it: the frames with
        known cells (``known_at`` (B, K), frame indices) encoded, the frames with targets (``query_at`` (B, Q))
        decoded against them and put back at their frames, the head over every frame (:data:`HEAD_OUTPUTS`; only
        target cells are meaningful). The tokens are made of those frames alone: the eager pass's values."""
        b = dict(zip(self._window_inputs(), inputs, strict=True))
        kn, q, trel = self._features(b)
        memory = self.core.encode_layers(self.known_in(_at(kn, known_at)) + self.time(_at(trel, known_at)))
        return self._decoded_at(b, q, trel, query_at, memory)

    def _decoded_at(self, b: dict[str, torch.Tensor], q: torch.Tensor, trel: torch.Tensor, query_at: torch.Tensor,
                    memory: torch.Tensor | None = None, memory_kv: list | None = None) -> tuple[torch.Tensor, ...]:
        """The frames with targets (``query_at``) decoded against an encoding (``memory``, or its ``memory_kv``), put
        back at their frames, and the head over every frame: the end of a window's pass and of a sampling step's."""
        tokens = self.query_in(_at(q, query_at)) + self.time(_at(trel, query_at))
        h = self.core.decode_layers(tokens, memory, memory_kv=memory_kv)
        h = h.new_zeros(h.shape[0], q.shape[1], h.shape[2]).scatter(1, query_at[..., None].expand_as(h), h)
        return self._head_tensors(h, *(b[k] for k in HEAD_INPUTS))

    def _window_examples(self) -> list[tuple[torch.Tensor, ...]]:
        """Inputs of :meth:`_window_tensors` of a few sizes: in every row some frames wholly known, some partly, the
        rest targets only (the same counts in every row)."""
        return [(*positions, *(b[k] for k in self._window_inputs())) for b, positions in self._rectangular_batches()]

    def _rectangular_batches(self) -> list[tuple[dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]]:
        """Random batches of a few sizes whose rows have as many frames with known cells and as many with targets
        (some frames wholly known, some partly, the rest targets only), each with those frames' positions."""
        gen, batches = torch.Generator().manual_seed(0), []
        for n, t, whole, part in ((1, 6, 2, 1), (2, 9, 3, 2), (1, 2, 1, 0), (3, 17, 4, 5)):
            b = self._random_batch(n, t, gen)
            rank = torch.rand(n, t, generator=gen).argsort(1).argsort(1)[..., None]  # each frame's place in a shuffle
            cells = torch.rand(b["known"].shape, generator=gen) < 0.5
            cells[..., 0], cells[..., -1] = True, False
            b["known"] = (rank < whole) | ((rank >= whole) & (rank < whole + part) & cells)
            b["target"] = ~b["known"]
            batches.append((b, (_frame_positions(b["known"].any(-1)), _frame_positions(b["target"].any(-1)))))
        return batches

    def _traced_step(self, b: dict[str, torch.Tensor], enc: Encoding) -> dict[str, torch.Tensor] | None:
        """Query variant: :meth:`decode` through :attr:`traced_step` (one graph: the queries, the decoder against the
        encoding's cached keys and values, the head) when it may serve this batch: two frames or more, an encoding
        without padding, rows with as many target frames. None: eager."""
        query_frames = b["target"].any(-1)
        if query_frames.shape[1] < 2 or not bool(enc.valid.all()):
            return None
        query_at = _frame_positions(query_frames)
        traced = self.traced_step.serving(enc.ref) if query_at is not None else None
        if traced is None:
            return None
        kv = [x for pair in enc.kv for x in pair]
        return dict(zip(HEAD_OUTPUTS, traced(enc.ref, query_at, *kv, *(b[k] for k in self._window_inputs())),
                        strict=True))

    def _step_tensors(self, ref: torch.Tensor, query_at: torch.Tensor, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A sampling step's decode of positional tensors, as :attr:`traced_step` traces it: the time origin ``ref``
        (B, 1), the frames with targets (``query_at`` (B, Q)), every decoder layer's cross-attention keys and values
        of the kept encoding (flattened), then the batch (:meth:`_window_inputs`): the frames with targets decoded
        against it, put back at their frames, the head over every frame (:data:`HEAD_OUTPUTS`)."""
        n_kv = 2 * len(self.core.decoder)
        kv, b = args[:n_kv], dict(zip(self._window_inputs(), args[n_kv:], strict=True))
        _, q, trel = self._features(b, ref)
        return self._decoded_at(b, q, trel, query_at, memory_kv=list(zip(kv[::2], kv[1::2], strict=True)))

    def _step_examples(self) -> list[tuple[torch.Tensor, ...]]:
        """Inputs of :meth:`_step_tensors` of a few sizes: :meth:`_rectangular_batches` with an encoding of random
        memories of a few lengths."""
        gen, examples = torch.Generator().manual_seed(1), []
        for (b, (_, query_at)), length in zip(self._rectangular_batches(), (3, 5, 1, 8), strict=True):
            n = query_at.shape[0]
            memory = torch.randn(n, length, self.cfg.core.d_model, generator=gen)
            kv = [x for pair in self.core.memory_kv(memory) for x in pair]
            ref = torch.rand(n, 1, generator=gen)
            examples.append((ref, query_at, *kv, *(b[k] for k in self._window_inputs())))
        return examples

    def _whole_key(self) -> tuple:
        """What a whole window's pass and a sampling step's decode read: every weight and the config."""
        return weights_key(self), self.cfg

    def encode(self, b: dict[str, torch.Tensor]) -> Encoding:
        """Query variant: the encoding of the frames with known cells, which :meth:`decode` reads. Any-order
        sampling keeps one while it draws a few cells and decodes each step against it (the drawn cells reach
        the queries through their own frame's token and the key curves), so a step costs the decoder only."""
        ref = self.time_origin(b)
        kn, _, trel = self._features(b, ref)
        memory, valid = self.core.encode_known(self.known_in(kn) + self.time(trel), b["known"].any(-1))
        return Encoding(memory, valid, ref, self.core.memory_kv(memory))

    def decode(self, b: dict[str, torch.Tensor], enc: Encoding) -> dict[str, torch.Tensor]:
        """Query variant: every target's distribution from the queries of ``b`` and an :meth:`encode` of known cells
        (times measured from that encoding's origin, so both sides share one clock)."""
        traced = self._traced_step(b, enc)
        if traced is not None:
            return traced
        inputs = [b[k] for k in self._query_inputs()]
        traced = self.traced_queries.serving(enc.ref)
        (tokens,) = self._query_tensors(enc.ref, *inputs) if traced is None else traced(enc.ref, *inputs)
        h = self.core.decode_queries(tokens, b["target"].any(-1), enc.memory, enc.valid, memory_kv=enc.kv)
        return self._head(h, b)

    def _query_inputs(self) -> tuple[str, ...]:
        """What the queries read of a batch, in the order :meth:`_query_tensors` takes them."""
        return QUERY_INPUTS + KEY_VELOCITY_INPUTS if self.cfg.features.key_velocity else QUERY_INPUTS

    def _query_tensors(self, ref: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor]:
        """The query tokens (with their times from ``ref``) of positional tensors (:meth:`_query_inputs`), as
        :attr:`traced_queries` traces them."""
        _, q, trel = self._features(dict(zip(self._query_inputs(), inputs, strict=True)), ref)
        return (self.query_in(q) + self.time(trel),)

    def _query_examples(self) -> list[tuple[torch.Tensor, ...]]:
        """Inputs of :meth:`_query_tensors` of a few sizes."""
        gen, examples = torch.Generator().manual_seed(0), []
        for n, t in ((1, 5), (2, 9), (1, 1), (3, 17)):
            b = self._random_batch(n, t, gen)
            examples.append((torch.rand(n, 1, generator=gen), *(b[k] for k in self._query_inputs())))
        return examples

    def _triples_teacher_forced(self, kn, q, trel, b):
        """Token i: input frame order[i] (its known cells, or all its cells once generated) and the query
        of frame order[i + 1]; its output is the distribution of frame order[i + 1]."""
        order = b["order"]  # (B, T): a permutation of frames: frames with known cells, then target frames
        nxt = torch.roll(order, -1, dims=1)
        kn_full, _, _ = self._features(dict(b, known=b["known"] | b["target"]))
        frame_in = torch.where(b["known"].any(-1, keepdim=True), kn, kn_full)  # generated frames fed back whole
        inp = self.input_tokens(frame_in, trel)
        tgt = self.target_tokens(q, trel)
        steps_in = torch.take_along_dim(inp, order[..., None], 1)
        steps_tgt = torch.take_along_dim(tgt, nxt[..., None], 1)
        h, _ = self.core(self.triple_in(torch.cat([steps_in, steps_tgt], -1)))
        # put each step's output at the frame it predicts (the wrapped last step lands on a known frame)
        out = torch.zeros_like(h).scatter(1, nxt[..., None].expand_as(h), h)
        return self._head(out, b)

    def input_tokens(self, kn: torch.Tensor, trel: torch.Tensor) -> torch.Tensor:
        return self.known_in(kn) + self.time(trel)

    def target_tokens(self, q: torch.Tensor, trel: torch.Tensor) -> torch.Tensor:
        return self.query_in(q) + self.target_time(trel)

    def triples_step(
        self, inp: torch.Tensor, tgt: torch.Tensor, cache: KVCache | None, independent: bool = False
    ) -> tuple[torch.Tensor, KVCache]:
        """Generation with the cache: input tokens and target tokens (B, S, d) for S new steps; returns
        the S outputs (feed them to ``head``) and the grown cache. ``independent`` scores S candidate
        next steps side by side instead."""
        return self.core(self.triple_in(torch.cat([inp, tgt], dim=-1)), cache=cache, independent=independent)

    def features(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(known-frame features, query features, time relative to the known frames) of a batch."""
        return self._features(b)

    def head(self, h: torch.Tensor, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._head(h, b)


def _at(x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """(B, T, C) at the frames (B, n) -> (B, n, C)."""
    return x.gather(1, frames[..., None].expand(-1, -1, x.shape[-1]))


def _frame_positions(frames: torch.Tensor) -> torch.Tensor | None:
    """(B, T) chosen frames -> (B, n) their indices in time order, when every row has the same number n >= 1 of
    them; None otherwise (rows of different counts need padding and masks)."""
    counts = frames.sum(1)
    n = int(counts[0])
    if n < 1 or not bool((counts == n).all()):
        return None
    return frames.nonzero()[:, 1].view(frames.shape[0], n)

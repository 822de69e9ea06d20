"""Any-order sampling with a trained motion model: variations of a fill.

Input as for :mod:`.fill` (local motion in a schema, a known-cell mask, frame times in seconds); known cells
come back exactly as given.

* :func:`sample` - each step scores the remaining targets, picks the next k by an order (forward, random,
  lowest-entropy, highest-entropy), draws them (temperature, seed) and conditions on them. The query variant
  steps through cells (joints within a frame in any order too), a shot longer than the model's window window by
  window over the windows :func:`.fill.fill` uses; the triples variant steps through frames, with a key/value
  cache so that each step costs one token.
* :func:`sample_at_rate` - the same at a frame rate the model was trained at (a 60 or 120 fps rig).
* :class:`SamplingCalibration` - how wide a draw is, fitted on validation windows and stored in the model card.

The backend, the command line and the benchmarks call these; neither re-implements them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from training.inbetween.features import (
    Canonical,
    canonical_batch,
    canonical_from_known,
    from_canonical,
    moving_chain,
    moving_positions,
    moving_translations,
    to_canonical,
    update_batch,
)
from training.inbetween.fill import (
    Cancelled,
    FillResult,
    Holds,
    _arrays,
    _decode,
    _from_grid,
    _gather_window,
    _identity_like,
    _rates,
    _sanitise,
    _spread,
    _to_torch,
    _trained_grid,
    _window_distributions,
    _window_index,
    model_length,
    pieces,
    resampling,
    smooth_partial_keys,
)
from training.inbetween.numpy_model import NumpyMotionFill
from training.motion.rotations import axis_angle_to_quat, quat_conj, quat_mul, sixd_to_quat
from training.motion.skeleton import get_schema

if TYPE_CHECKING:
    from training.inbetween.model import MotionFill

ORDERS = ("forward", "random", "lowest-entropy", "highest-entropy")
# the most frames a window to sample may have once put on a grid at a trained rate (:func:`sample_at_rate`): as
# many as a request may send (each cell is a step of the sampler at k = 1)
MAX_SAMPLE_GRID_FRAMES = 2048
MAX_VARIATIONS = 16  # variations per request or command: the server and the CLI refuse more
MAX_TEMPERATURE = 10.0  # beyond this a sample is noise, not a variation: the server and the CLI refuse it
# cells (query model) or frames (triples model) drawn per step: the server and the CLI refuse more. A step draws at
# most the cells a model's window holds (65 frames x 22 joints: 1,430), so a larger k draws as this one does
MAX_K = 4096


def _encode(model: MotionFill | NumpyMotionFill, b: dict[str, np.ndarray]):
    """Query variant: the model's encoding of the batch's known cells (torch or numpy, as the model runs)."""
    if isinstance(model, NumpyMotionFill):
        return model.encode(b)
    import torch

    with torch.inference_mode():
        return model.encode(_to_torch(b))


def _decode_queries(model: MotionFill | NumpyMotionFill, b: dict[str, np.ndarray], enc) -> dict[str, np.ndarray]:
    """Query variant: every target's distribution against an :func:`_encode` of the known cells."""
    if isinstance(model, NumpyMotionFill):
        return model.decode(b, enc)
    import torch

    with torch.inference_mode():
        return {k: v.double().numpy() for k, v in model.decode(_to_torch(b), enc).items()}


@dataclass(frozen=True)
class SamplingCalibration:
    """How wide a sampled cell's draw is, fitted on validation windows (``anyfill bench calibrate-sampling
    --model MODEL --write`` writes it into the model card's ``sampling``; a model without one samples from its
    spreads as learned). The model's spreads are scaled so that, per channel, a
    draw at temperature 1 strays from the deterministic fill as far as the fill strays from real motion; the
    default temperature is the largest of a sweep whose samples stay near the motion on the validation windows;
    a caller's temperature multiplies it (1: the default)."""

    rot_scale: tuple[float, ...] = ()  # per joint: the factor on the rotation spread 1 / sqrt(kappa) (empty: 1)
    pos_scale: tuple[tuple[float, float, float], ...] = ()  # per moving joint and axis: the factor on sigma
    # per moving joint: the farthest a draw goes from the deterministic fill (query variant; triples: from its
    # mean), in skeleton units
    pos_cap: tuple[float, ...] = ()
    temperature: float = 1.0  # the spread scale a request's temperature 1 means (chosen on validation windows)
    truncate: float = 2.0  # position draws are truncated at this many standard deviations

    @classmethod
    def from_card(cls, card: dict | None) -> SamplingCalibration | None:
        if not card:
            return None
        return cls(rot_scale=tuple(float(x) for x in card.get("rot_scale", ())),
                   pos_scale=tuple(tuple(float(y) for y in x) for x in card.get("pos_scale", ())),
                   pos_cap=tuple(float(x) for x in card.get("pos_cap", ())),
                   temperature=float(card.get("temperature", 1.0)), truncate=float(card.get("truncate", 2.0)))

    def check(self, n_joints: int, n_moving: int) -> None:
        """Refuse a calibration made for another skeleton (ValueError)."""
        if self.rot_scale and len(self.rot_scale) != n_joints:
            raise ValueError(f"rot_scale has {len(self.rot_scale)} entries for {n_joints} joints")
        if self.pos_scale and (len(self.pos_scale) != n_moving or any(len(x) != 3 for x in self.pos_scale)):
            raise ValueError(f"pos_scale must hold 3 factors for each of {n_moving} moving joints")
        if self.pos_cap and len(self.pos_cap) != n_moving:
            raise ValueError(f"pos_cap has {len(self.pos_cap)} entries for {n_moving} moving joints")
        factors = [*self.rot_scale, *(f for x in self.pos_scale for f in x), *self.pos_cap, self.temperature,
                   self.truncate]
        if not all(math.isfinite(f) for f in factors):
            raise ValueError("every factor (rot_scale, pos_scale, pos_cap, temperature, truncate) must be a finite "
                             "number")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be 0 or above, got {self.temperature}")


def calibration_of(model: MotionFill) -> SamplingCalibration:
    """The sampling calibration :func:`~training.inbetween.checkpoint.load_model` attached (none: identity)."""
    return getattr(model, "sampling", None) or SamplingCalibration()


def _scales(model: MotionFill, cal: SamplingCalibration) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rotation scale (J,), position scale (M, 3), position cap (M,)) of a calibration, ones and no cap where unset."""
    j, m = model.cfg.n_joints, model.cfg.n_moving
    rot = np.asarray(cal.rot_scale, dtype=np.float64) if cal.rot_scale else np.ones(j)
    pos = np.asarray(cal.pos_scale, dtype=np.float64).reshape(m, 3) if cal.pos_scale else np.ones((m, 3))
    cap = np.asarray(cal.pos_cap, dtype=np.float64) if cal.pos_cap else np.full(m, np.inf)
    return rot, pos, cap


def _draw(rng: np.random.Generator, mean_q: np.ndarray, log_kappa: np.ndarray, pos: np.ndarray,
          log_sigma: np.ndarray, temperature: float, cal: tuple[np.ndarray, np.ndarray, np.ndarray], truncate: float,
          joints: np.ndarray | None = None, anchor: np.ndarray | None = None):
    """Draws of cells: each mean rotation (..., 4) turned by a von Mises angle (kappa / (scale * temperature)^2)
    about a uniform random axis; each moving position (..., M, 3) from its Gaussian (sigma * scale *
    temperature), truncated at ``truncate`` standard deviations and at most the calibration's cap from
    ``anchor`` (default: its mean). ``joints`` (...,): each rotation's joint (default: the last axis is the
    joints)."""
    rot_scale, pos_scale, cap = cal
    rs = rot_scale if joints is None else rot_scale[joints]
    anchor = pos if anchor is None else anchor
    if temperature <= 0:
        return mean_q, pos
    kappa = np.exp(log_kappa) / (rs * temperature) ** 2
    angle = rng.vonmises(0.0, np.minimum(kappa, 1e12))
    axis = rng.normal(size=kappa.shape + (3,))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    q = quat_mul(mean_q, axis_angle_to_quat(axis * angle[..., None]))
    z = np.clip(rng.normal(size=pos.shape), -truncate, truncate)
    move = pos + np.exp(log_sigma) * pos_scale * temperature * z - anchor
    norm = np.linalg.norm(move, axis=-1, keepdims=True)
    return q, anchor + move * np.minimum(1.0, cap[:, None] / np.maximum(norm, 1e-12))


def _pick(order: str, rng: np.random.Generator, remaining: np.ndarray, entropy: np.ndarray, k: int) -> np.ndarray:
    """Indices (into the flat remaining mask) of the next k targets."""
    idx = np.flatnonzero(remaining)
    if order == "forward":
        chosen = idx[:k]  # flat index is frame-major: earliest frame first, joints in schema order
    elif order == "random":
        chosen = rng.choice(idx, size=min(k, len(idx)), replace=False)
    elif order == "lowest-entropy":
        chosen = idx[np.argsort(entropy.flat[idx], kind="stable")[:k]]
    elif order == "highest-entropy":
        chosen = idx[np.argsort(-entropy.flat[idx], kind="stable")[:k]]
    else:
        raise ValueError(f"unknown order {order!r}; expected one of {', '.join(ORDERS)}")
    return chosen


def sample(
    model: MotionFill,
    rotations,
    translations,
    known,
    times,
    order: str = "lowest-entropy",
    k: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
    n: int = 1,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    visit_log: list | None = None,
    refresh: int | None = None,
    cut: bool = True,
) -> list[FillResult]:
    """N variations of one window (arrays with N = 1, or without the leading axis) by any-order
    sampling. The query variant steps through cells, k per step (see :func:`_sample_cells`); the triples
    variant through frames, k per step. ``temperature`` scales the model's calibrated spread
    (:class:`SamplingCalibration`): 1 is the default its calibration chose on validation windows, 0 the
    deterministic fill. ``visit_log`` (optional) receives, per variation, the targets in the order visited.
    ``refresh`` (query variant): cells drawn between two encodings of the known cells (default: a frame's
    joints; each step in between runs the decoder only, the drawn cells reaching it through their frames'
    queries and the key curves; 1: every step encodes anew). A window longer than the model's (query variant)
    is drawn window by window, as :func:`fill` fills it (:func:`_sample_long`; ``cut`` as :func:`fill`'s)."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; expected one of {', '.join(ORDERS)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rotations, translations, known, times = _arrays(model, rotations, translations, known, times, "sample")
    long = rotations.shape[1] > model_length(model)
    if long and model.cfg.variant != "query":
        raise ValueError(f"a triples model samples windows of up to {model_length(model)} frames; a longer shot "
                         f"needs a query model")
    if known.all():
        raise ValueError("nothing to sample: every cell is known")
    if not known.any():
        raise ValueError("every window needs at least one known cell")
    holds = Holds.find(model, rotations, translations, known)
    cal = calibration_of(model)
    temperature = float(temperature) * cal.temperature
    rng = np.random.default_rng(seed)
    args = (model, rotations, translations, known, times, order, k, temperature, cal, rng, n, progress, cancel)
    with _weights_fixed(model):
        if model.cfg.variant == "triples":
            rot, trans, ent_out, spread_out, visits = _sample_frames(*args)
        elif long:
            rot, trans, ent_out, spread_out, visits = _sample_long(*args, refresh or model.cfg.n_joints, cut)
        else:
            rows = (np.repeat(rotations, n + 1, axis=0), np.repeat(translations, n + 1, axis=0))
            out = _sample_cells(model, *rows, *args[3:], refresh or model.cfg.n_joints)
            rot, trans, ent_out, spread_out = (a[1:] for a in out[:4])  # row 0 is the reference chain
            visits = out[4]
    if visit_log is not None:
        visit_log.extend(visits)
    given = np.repeat(translations, n, axis=0)
    known0 = np.repeat(known, n, axis=0)
    trans = np.where(known0[..., None] & np.isfinite(given), given, trans)  # known cells exactly as given
    held = holds.apply(smooth_partial_keys(FillResult(rot, trans, ent_out, spread_out), known0))
    return [held.window(v) for v in range(n)]


def _weights_fixed(model: MotionFill | NumpyMotionFill) -> AbstractContextManager:
    """A run changes no weight: its hundreds of steps check a torch model's traced copies against its weights once
    (:func:`.tracing.weights_fixed`; imported here, so the numpy runtime never imports torch)."""
    if isinstance(model, NumpyMotionFill):
        return nullcontext()
    from training.inbetween.tracing import weights_fixed

    return weights_fixed()


def _sample_cells(model: MotionFill, rotations, translations, known, times, order, k, temperature, cal, rng, n,
                  progress, cancel, refresh, drawable: np.ndarray | None = None, valid: np.ndarray | None = None):
    """The query variant's any-order sampling, every variation side by side in one batch with a noiseless
    reference chain (row 0) that visits the same cells and takes the deterministic fill's value at each.

    Why the reference: a model conditioned on its own predictions as if they were keys predicts worse than it
    does from the keys alone (measured on the shipped body at temperature 0: 1.25-1.42x the deterministic
    fill's L2Q). So each variation's draw is centred on the deterministic fill's value, moved by how the
    model's prediction for the cell differs between the variation and the reference: the model's response to
    the noise already drawn (which keeps a variation coherent), without the bias of self-conditioning. At
    temperature 0 every variation is the deterministic fill.

    The whole draw happens in the canonical frame of the given keys. Each step builds the network's inputs,
    runs the decoder against the encoding of the known cells (encoded anew once ``refresh`` cells were drawn
    since the last encoding), picks the next k cells by the order on the reference's spreads (every variation
    visits the cells in the same order) and draws them.

    ``rotations`` and ``translations`` (n + 1, T, J, ...): row 0 the reference's context, the others each
    variation's (equal but where an earlier window of a long shot drew them); ``known`` (1, T, J) and ``times``
    (1, T) are shared. ``drawable`` (T, J): the unknown cells to draw (default: all; a long shot's window also
    holds keys beyond its frames, and spacer frames, that are neither). ``valid`` (T,): the window's real frames
    (not spacers); their unknown cells are the network's targets, drawn or not, as :func:`.fill.fill` asks for them
    (the target mask is one of its inputs). Returns every row, the reference first, all in the canonical frame of
    row 0's keys."""
    schema = get_schema(model.cfg.skeleton)
    spec = model.cfg.features
    scales = _scales(model, cal)
    rows = n + 1
    rot, trans, given = _sanitise(model, rotations, translations, np.repeat(known, rows, axis=0))
    canon = canonical_from_known(rot[:1], trans[:1], given[:1], schema, spec.frame)
    canon = Canonical(np.repeat(canon.turn, rows, axis=0), np.repeat(canon.offset, rows, axis=0))
    rot_c, trans_c = to_canonical(rot, trans, canon, schema)
    draw = ~given[0] if drawable is None else ~given[0] & drawable
    tms = np.tile(times, (rows, 1))
    mv = list(schema.moving)
    chain = set(moving_chain(schema))  # the joints a moving joint's position hangs on
    pos_c = moving_positions(rot_c, trans_c, schema)  # the moving joints' positions: drawn ones as drawn
    known_now = given.copy()
    nt, nj = given.shape[1:]
    cells = nt * nj
    log_kappa_out = np.zeros(given.shape)
    total = int(draw.sum())
    rank = None  # the orders as a rank of every cell: forward by (frame, joint); random by a permutation
    if order == "forward":
        rank = np.arange(cells, dtype=np.float64)
    elif order == "random":
        rank = rng.permutation(cells).astype(np.float64)
    log_rot_scale = np.log(scales[0])
    enc, det = None, None
    since, done = refresh, 0
    visited: list[np.ndarray] = []
    var = np.arange(1, rows)[:, None]
    batch, drawn = None, None
    while done < total:
        if cancel is not None and cancel():
            raise Cancelled()
        targets = ~known_now & (draw if valid is None else valid[:, None])  # what the network is asked for
        if batch is None:
            batch = canonical_batch(rot_c, trans_c, tms, known_now, targets, schema, spec, given)
        else:  # only the drawn joints' columns (and the moving joints' positions they carry) changed
            update_batch(batch, rot_c, trans_c, tms, known_now, targets, schema, spec, given, drawn)
        if since >= refresh:
            enc, since = _encode(model, batch), 0
        out = _decode_queries(model, batch, enc)
        if det is None:  # the first step sees the keys alone: the deterministic fill
            det = {"q": sixd_to_quat(out["rot6d"][0]), "pos": out["pos"][0]}
        lk = out["log_kappa"]
        remaining = (~known_now[0] & draw).reshape(cells)
        if rank is None:  # entropy orders, by the reference's calibrated spread (entropy falls as kappa grows)
            key = (lk[0] - 2.0 * log_rot_scale).reshape(cells)
            key = -key if order == "lowest-entropy" else key
        else:
            key = rank
        step = min(k, total - done)
        chosen = np.argsort(np.where(remaining, key, np.inf), kind="stable")[:step]
        visited.append(chosen)
        f, j = chosen // nj, chosen % nj
        drawn = j
        # each variation: the deterministic value, moved by the model's response to the variation's draws
        mean_q = sixd_to_quat(out["rot6d"][:, f, j])  # (rows, step, 4)
        centre = quat_mul(det["q"][f, j], quat_mul(quat_conj(mean_q[:1]), mean_q[1:]))
        pos_mean = out["pos"][:, f]  # (rows, step, M, 3)
        pos_centre = det["pos"][f] + pos_mean[1:] - pos_mean[:1]
        # a moving joint's draw stays within the calibration's cap of the deterministic fill: neither the noise
        # nor the model's response to it ever puts the root further from the fill than the fill's own worst error
        q, pos = _draw(rng, centre, lk[1:, f, j], pos_centre, out["log_sigma"][1:, f], temperature, scales,
                       cal.truncate, joints=j, anchor=det["pos"][f])
        rot_c[0, f, j], rot_c[var, f, j] = det["q"][f, j], q
        log_kappa_out[:, f, j] = lk[:, f, j]
        for slot, m in enumerate(mv):  # a drawn moving joint's cell takes its drawn position
            hit = j == m
            pos_c[0, f[hit], slot] = det["pos"][f[hit], slot]
            pos_c[1:, f[hit], slot] = pos[:, hit, slot]
        known_now[:, f, j] = True
        if not chain.isdisjoint(j.tolist()):  # moving joints' local translations from their positions, the parents'
            # rotations as the inputs see them (identity where not yet drawn)
            trans_c = moving_translations(np.where(known_now[..., None], rot_c, _identity_like(rot_c)), pos_c,
                                          trans_c, schema)
        since += step
        done += step
        if progress is not None:
            progress(done, total)
    trans_c = moving_translations(rot_c, pos_c, trans_c, schema)
    rot_o, trans_o = from_canonical(rot_c, trans_c, canon, schema)
    drawn_cells = (known_now & ~given)[..., None]
    rot_o = np.where(drawn_cells, rot_o, rot)
    ent, spread = _spread({"log_kappa": log_kappa_out}, ~drawn_cells[..., 0])
    visits = [[(int(c) // nj, int(c) % nj) for c in np.concatenate(visited)]] * n if visited else [[]] * n
    return rot_o, trans_o, ent, spread, visits


def _sample_long(model: MotionFill, rotations, translations, known, times, order, k, temperature, cal, rng, n,
                 progress, cancel, refresh, cut: bool = True):
    """The query variant's sampling of a shot longer than the model's window, drawn over the windows :func:`fill`
    would fill it with: cut where every joint is keyed (the pieces on either side are independent; ``cut=False``:
    never, as on a trained-rate grid), a piece longer than a window by overlapping windows, each drawing the frames
    the fill's window commits (its first ``length - ctx``, conditioned on what the one before drew) and every window
    seeing the keys around it (:func:`_window_index`). The reference chain of :func:`_sample_cells` goes on from
    window to window too (row 0: each window's deterministic fill given the previous one's), so every variation
    stays centred on a deterministic fill of the shot, and at temperature 0 a variation is the fill."""
    length = model_length(model)
    ctx = length // 4
    known0 = known[0]
    rotations = _sanitise(model, rotations, translations, known)[0]  # known cells as unit quaternions, as sample()'s
    rot_rows = np.repeat(rotations, n + 1, axis=0)
    trans_rows = np.repeat(translations, n + 1, axis=0)
    known_now = known0.copy()
    ent = np.zeros(rot_rows.shape[:3])
    spread = np.zeros(rot_rows.shape[:3])
    total, done = int((~known0).sum()), 0
    visits: list[tuple[int, int]] = []
    for a, b in pieces(known0, length) if cut else [(0, len(known0) - 1)]:
        start, upto = a, a + (a > 0)  # a later piece's first frame is the previous one's last, a whole pose
        # the keys before a piece as given, not what the piece before it drew there (pieces are independent, and
        # fill() runs them side by side)
        seen = np.concatenate([known0[:a], known_now[a:]])
        while start <= b:
            end = min(start + length, b + 1)
            commit_to = end if end == b + 1 else end - ctx
            idx, lead = _window_index(known0, a, b, start, end)
            seen[a:] = known_now[a:]
            w_rot, w_trans, w_known, w_valid, w_times = _gather_window(rot_rows, trans_rows, seen, times[0], idx)
            own = np.zeros(len(idx), dtype=bool)
            own[lead + upto - start : lead + commit_to - start] = True
            if (own[:, None] & ~w_known).any():
                report = None if progress is None else (lambda d, _t, base=done: progress(base + d, total))
                r, tr, e, sp, vis = _sample_cells(model, w_rot, w_trans, w_known[None], w_times[None],
                                                  order, k, temperature, cal, rng, n, report, cancel, refresh,
                                                  drawable=own[:, None] & ~w_known, valid=w_valid)
                frames = np.arange(upto, commit_to)
                drawn = ~w_known[own]  # (F, J): the cells this window drew
                pick = drawn[None, ..., None]
                rot_rows[:, frames] = np.where(pick, r[:, own], rot_rows[:, frames])
                trans_rows[:, frames] = np.where(pick, tr[:, own], trans_rows[:, frames])
                ent[:, frames] = np.where(drawn, e[:, own], ent[:, frames])
                spread[:, frames] = np.where(drawn, sp[:, own], spread[:, frames])
                known_now[frames] |= drawn
                visits += [(int(idx[f]), j) for f, j in vis[0]]
                done += int(drawn.sum())
            upto = commit_to
            start = b + 1 if end == b + 1 else commit_to - ctx
    return rot_rows[1:], trans_rows[1:], ent[1:], spread[1:], [visits] * n


def _sample_frames(model: MotionFill, rotations, translations, known, times, order, k, temperature, cal, rng, n,
                   progress, cancel):
    """The triples variant's any-order sampling: frames, k per step, one variation after another within a step."""
    scales = _scales(model, cal)
    rot = np.repeat(rotations, n, axis=0)
    trans = np.repeat(translations, n, axis=0)
    known0 = np.repeat(known, n, axis=0)
    tms = np.repeat(times, n, axis=0)
    known_now = known0.copy()
    ent_out = np.zeros(known0.shape)
    spread_out = np.zeros(known0.shape)
    total = int((~known0[0]).any(-1).sum())
    done = 0
    visits: list[list] = [[] for _ in range(n)]
    while (~known_now).any():
        if cancel is not None and cancel():
            raise Cancelled()
        out, canon, rot, trans = _window_distributions(model, rot, trans, known_now, tms, known0)
        ent, spread = _spread(out, known_now)
        step = 0
        for v in range(n):
            remaining = ~known_now[v]
            if not remaining.any():
                continue
            frame_rem = remaining.any(-1)
            frame_ent = np.where(remaining, ent[v], 0.0).sum(-1)
            frames = _pick(order, rng, frame_rem, frame_ent, k)
            cells = np.zeros_like(remaining)
            cells[frames] = remaining[frames]
            visits[v].extend(int(f) for f in frames)
            step = max(step, len(frames))
            # draw and decode only the frames of the picked cells; the moving joints' translations follow
            # their joint's cell
            f = np.flatnonzero(cells.any(-1))
            sub_out = {key: a[v : v + 1, f] for key, a in out.items()}
            q_draw, pos_draw = _draw(rng, sixd_to_quat(sub_out["rot6d"]), sub_out["log_kappa"], sub_out["pos"],
                                     sub_out["log_sigma"], temperature, scales, cal.truncate)
            one = Canonical(canon.turn[v : v + 1], canon.offset[v : v + 1])
            sub = np.s_[v : v + 1, f]
            rs, trs = _decode(model, q_draw, pos_draw, one, rot[sub], trans[sub], known_now[sub])
            pick = cells[f][..., None]
            rot[v, f] = np.where(pick, rs[0], rot[v, f])
            trans[v, f] = np.where(pick, trs[0], trans[v, f])
            ent_out[v] = np.where(cells, ent[v], ent_out[v])
            spread_out[v] = np.where(cells, spread[v], spread_out[v])
            known_now[v] |= cells
        done += step
        if progress is not None:
            progress(min(done, total), total)
    return rot, trans, ent_out, spread_out, visits


def sample_at_rate(model: MotionFill, rotations, translations, known, times, fps_range: tuple[float, float],
                   fps: float | None = None, **kwargs) -> list[FillResult]:
    """:func:`sample` at a frame rate the model was trained at, as :func:`fill_at_rate` fills: a window at
    another rate (a 60 or 120 fps rig) is sampled on a grid at the nearest trained rate holding every keyed
    frame, and each variation carried back to the window's frames (``fps``: as :func:`fill_at_rate`'s). ``kwargs``:
    :func:`sample`'s (order, k,
    temperature, seed, n, progress, cancel, visit_log: frames of the grid then). Each result's ``resampled`` is
    set as :func:`fill_at_rate` sets it."""
    rotations, translations, known, times = _arrays(model, rotations, translations, known, times, "sample_at_rate")
    rate, target_rate = _rates(times, fps_range, MAX_SAMPLE_GRID_FRAMES, fps)
    if target_rate is None:
        return sample(model, rotations, translations, known, times, **kwargs)
    grid_t, g_rot, g_trans, g_known = _trained_grid(times[0], rotations[0], translations[0], known[0], target_rate)
    holds = Holds.find(model, rotations, translations, known)
    out = []
    for res in sample(model, g_rot, g_trans, g_known, grid_t, cut=target_rate == rate, **kwargs):  # as fill_at_rate
        back = FillResult(*(x[None] for x in _from_grid(grid_t, res, times[0], rotations[0], translations[0],
                                                         known[0])), resampled=resampling(rate, target_rate))
        out.append(holds.apply(back).window(0))
    return out

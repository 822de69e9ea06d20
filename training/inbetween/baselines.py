"""Non-learned fill methods: the benchmark's baselines, and what a learned model has to beat.

A fill method takes local motion with unknown frames (``known[t]`` False, values NaN) and returns the
motion with every frame filled; known frames come back unchanged.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.lapack import dgtsv

from training.motion.rotations import euler_to_quat, quat_identity, quat_slerp, quat_to_euler


def _neighbours(known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each frame, the index of the last known frame at or before it and the first at or after it
    (clamped to the ends, so leading and trailing gaps hold the nearest key)."""
    known = np.asarray(known, dtype=bool)
    if not known.any():
        raise ValueError("no known frame to fill from")
    idx = np.arange(known.size)
    prev = np.maximum.accumulate(np.where(known, idx, -1))
    nxt = np.minimum.accumulate(np.where(known, idx, known.size)[::-1])[::-1]
    first, last = idx[known][0], idx[known][-1]
    prev = np.where(prev < 0, first, prev)
    nxt = np.where(nxt >= known.size, last, nxt)
    return prev, nxt


def zero_velocity(rotations: np.ndarray, translations: np.ndarray, known: np.ndarray, schema=None):
    """Hold the last known frame (the first known one before any key)."""
    prev, _ = _neighbours(known)
    return rotations[:, prev].copy(), translations[:, prev].copy()


def interpolate(rotations: np.ndarray, translations: np.ndarray, known: np.ndarray, schema=None):
    """Slerp every local rotation and lerp every translation between the surrounding known frames.
    Arrays are (N, T, J, 4) and (N, T, J, 3); ``known`` is (T,)."""
    prev, nxt = _neighbours(known)
    span = np.maximum(nxt - prev, 1)
    t = np.clip((np.arange(len(prev)) - prev) / span, 0.0, 1.0)  # leading/trailing gaps: t = 0, hold the key
    rot = quat_slerp(rotations[:, prev], rotations[:, nxt], np.broadcast_to(t[None, :, None], rotations.shape[:3]))
    w = t[None, :, None, None]
    trans = translations[:, prev] * (1.0 - w) + translations[:, nxt] * w
    k = np.asarray(known, dtype=bool)
    rot[:, k], trans[:, k] = rotations[:, k], translations[:, k]
    return rot, trans


class FrameIndex:
    """A map from each cell (N, T', J) to another frame of its joint (``frames``) in a window of ``t`` frames, with
    its flat indices into the window's per-cell and per-frame arrays, worked out once for the several arrays
    :func:`at_frames` reads through it."""

    __slots__ = ("frames", "t", "rows", "cells")

    def __init__(self, frames: np.ndarray, t: int):
        n, _, j = frames.shape
        self.frames, self.t = frames, t
        self.rows = frames if n == 1 else frames + (np.arange(n) * t)[:, None, None]
        self.cells = self.rows * j + np.arange(j)


def at_frames(values: np.ndarray, frames: np.ndarray | FrameIndex) -> np.ndarray:
    """Each cell's value at another frame of its joint: ``values[n, frames[n, t, j], j]`` for every cell of ``frames``
    (N, T', J), values (N, T, J, ...); with values per frame (N, T), ``values[n, frames[n, t, j]]``. NumPy's indexing
    with broadcast index arrays gives the same at about ten times the cost of this flat ``take`` on a window's
    arrays, and a fill reads its keys' values a few dozen times (a :class:`FrameIndex` of ``frames`` saves working
    out the flat indices again for each)."""
    index = frames if isinstance(frames, FrameIndex) else FrameIndex(frames, values.shape[1])
    if values.shape[1] != index.t:
        raise ValueError(f"a frame index of a {index.t}-frame window read on {values.shape[1]} frames")
    if values.ndim == 2:
        return values.take(index.rows)
    return values.reshape(-1, *values.shape[3:]).take(index.cells, axis=0)


def cell_neighbours(known: np.ndarray):
    """Per cell of known (N, T, J): the frame of the joint's last known cell at or before it and of its first
    at or after it (clamped to the joint's first and last keys), and which joints have a key at all."""
    n, t, j = known.shape
    idx = np.arange(t)[None, :, None]
    prev = np.maximum.accumulate(np.where(known, idx, -1), axis=1)
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(known, idx, t), axis=1), axis=1), axis=1)
    has_key = known.any(axis=1)
    first = np.where(has_key, known.argmax(axis=1), 0)[:, None, :]
    last = np.where(has_key, t - 1 - np.flip(known, axis=1).argmax(axis=1), 0)[:, None, :]
    return np.where(prev < 0, first, prev), np.where(nxt >= t, last, nxt), has_key


def _frame_times(times, n: int, t: int) -> np.ndarray:
    return np.broadcast_to(np.arange(t, dtype=np.float64), (n, t)) if times is None else np.asarray(times, np.float64)


def span_fraction(times, prev: np.ndarray | FrameIndex, nxt: np.ndarray | FrameIndex) -> tuple[np.ndarray, np.ndarray]:
    """Per cell (N, T, J) with its keys ``prev`` and ``nxt`` (:func:`cell_neighbours`, or their
    :class:`FrameIndex`): where it lies between
    them, as a fraction of the span in time (frame ``times`` (N, T), or frame indices when None; 0 outside a
    span), and whether it lies inside one (two distinct keys at distinct times)."""
    p, x = (i.frames if isinstance(i, FrameIndex) else i for i in (prev, nxt))
    tm = _frame_times(times, *p.shape[:2])
    t_prev = at_frames(tm, prev)
    span = at_frames(tm, nxt) - t_prev
    inside = (x != p) & (span != 0)
    return np.where(inside, (tm[:, :, None] - t_prev) / np.where(inside, span, 1.0), 0.0), inside


def interpolate_cells(rotations: np.ndarray | None, translations: np.ndarray | None, known: np.ndarray, times=None,
                      neighbours=None):
    """Per-joint interpolation for any pattern of known cells: each joint is slerped (translations
    lerped) between its own nearest known frames, weighted by frame ``times`` (N, T) when given (any
    spacing), else by frame index. Arrays are (N, T, J, 4), (N, T, J, 3) and known (N, T, J). Joints
    never known in a window keep their input values; ``has_key`` (N, J) tells which joints had a key.
    ``neighbours`` is :func:`cell_neighbours` of ``known`` when the caller has it. ``rotations`` or ``translations``
    None: the other only (None in its place)."""
    known = np.asarray(known, dtype=bool)
    prev, nxt, has_key = neighbours if neighbours is not None else cell_neighbours(known)
    prev, nxt = FrameIndex(prev, known.shape[1]), FrameIndex(nxt, known.shape[1])
    w, _ = span_fraction(times, prev, nxt)
    as_given = (known | ~has_key[:, None, :])[..., None]  # known cells, and joints never known
    rot = None if rotations is None else np.where(
        as_given, rotations, quat_slerp(at_frames(rotations, prev), at_frames(rotations, nxt), w))
    if translations is None:
        return rot, None, has_key
    w = w[..., None]
    lerp = at_frames(translations, prev) * (1.0 - w) + at_frames(translations, nxt) * w
    return rot, np.where(as_given, translations, lerp), has_key


NO_KEY_TIME = 1e3  # seconds: what key_time reports for a joint without any key in the window


def key_time(known: np.ndarray, times=None, neighbours=None) -> np.ndarray:
    """Per cell of known (N, T, J): the time (seconds, or frames without ``times``) to the joint's nearest
    known cell; 0 on known cells, :data:`NO_KEY_TIME` for joints never known in the window."""
    known = np.asarray(known, dtype=bool)
    n, t, _ = known.shape
    prev, nxt, has_key = neighbours if neighbours is not None else cell_neighbours(known)
    tm = _frame_times(times, n, t)
    d = np.minimum(np.abs(tm[:, :, None] - at_frames(tm, prev)), np.abs(at_frames(tm, nxt) - tm[:, :, None]))
    return np.where(has_key[:, None, :], d, NO_KEY_TIME)


def gap_time(known: np.ndarray, times=None, neighbours=None) -> np.ndarray:
    """Per cell of known (N, T, J): the length (seconds, or frames without ``times``) of the gap it lies in,
    from the joint's previous known cell to its next; 0 on known cells, :data:`NO_KEY_TIME` outside the
    joint's keys (before its first, after its last) and for joints never known in the window."""
    known = np.asarray(known, dtype=bool)
    n, t, _ = known.shape
    prev, nxt, has_key = neighbours if neighbours is not None else cell_neighbours(known)
    tm = _frame_times(times, n, t)
    inside = (nxt != prev) | known
    return np.where(has_key[:, None, :] & inside, at_frames(tm, nxt) - at_frames(tm, prev), NO_KEY_TIME)


def key_velocities(values: np.ndarray, known: np.ndarray, times=None, neighbours=None, across_keys: bool = False,
                   clamp: bool = False, given: np.ndarray | None = None,
                   spline: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """How the motion leaves and enters each cell's surrounding keys. For values (N, T, J, D): the
    displacement (N, T, J, 2, D) the velocity at the joint's previous key would carry the cell to by its
    time, and the same from its next key; and whether each of those two velocities was measured
    (N, T, J, 2). A key's velocity is the finite difference with its known neighbour frame; with
    ``across_keys``, a key without one takes the slope from its previous key to its next (Catmull-Rom,
    the tangent Blender's automatic Bezier handles give a key); with ``clamp`` too, that slope is zero in
    every component where the key is an extreme between its neighbouring keys (Blender's auto-clamped
    handles: a curve never overshoots a key that turns); with ``spline`` instead, the slope Blender's default
    curve through the joint's keys has there (:func:`spline_key_slopes`: continuous acceleration, clamped where
    a key turns or a handle would overshoot). Unmeasured velocities are zero.
    Interpolation ignores these; an in-between model needs them (a hand still moving when the keys stop
    keeps moving). ``neighbours`` is :func:`cell_neighbours` of ``known`` when the caller has it. ``given``
    (N, T, J): the known cells whose values may measure a velocity (default: all); any-order sampling
    passes the animator's cells, so a drawn cell bends no tangent (a draw next to a key would otherwise set
    that key's velocity, and a Hermite curve would carry the draw's noise across the rest of the gap)."""
    known = np.asarray(known, dtype=bool)
    n, t, j = known.shape
    prev, nxt, _ = neighbours if neighbours is not None else cell_neighbours(known)
    tm = _frame_times(times, n, t)
    at_prev, at_next = FrameIndex(prev, t), FrameIndex(nxt, t)
    g = known if given is None else known & np.asarray(given, dtype=bool)
    dt = np.diff(tm, axis=1)[:, :, None, None]
    both = g[:, 1:] & g[:, :-1] & (dt[..., 0] != 0)
    step = np.where(both[..., None], np.diff(values, axis=1) / np.where(both[..., None], dt, 1.0), 0.0)
    zero, no = np.zeros((n, 1, j, values.shape[-1])), np.zeros((n, 1, j), dtype=bool)
    arrive = np.concatenate([zero, step], axis=1)  # at frame f: the velocity from f - 1 to f
    leave = np.concatenate([step, zero], axis=1)  # at frame f: the velocity from f to f + 1
    has_arrive, has_leave = np.concatenate([no, both], axis=1), np.concatenate([both, no], axis=1)
    if across_keys:
        f = np.arange(t)[None, :, None]
        before = prev[:, np.maximum(np.arange(t) - 1, 0)]  # each frame's previous key (itself if none)
        after = nxt[:, np.minimum(np.arange(t) + 1, t - 1)]
        at_before, at_after = FrameIndex(before, t), FrameIndex(after, t)
        span = at_frames(tm, at_after) - at_frames(tm, at_before)
        ok = g & at_frames(g, at_before) & at_frames(g, at_after) & (before < f) & (after > f) & (span != 0)
        if spline:  # solved only for the joints with a key that lacks a finite difference on a side
            needed = (ok & ~(has_arrive & has_leave)).any(axis=1)
            slope = np.where(ok[..., None], spline_key_slopes(values, g, tm, needed), 0.0)
        else:
            slope = np.where(ok[..., None], (at_frames(values, at_after) - at_frames(values, at_before))
                             / np.where(ok, span, 1.0)[..., None], 0.0)
        if clamp and not spline:
            turns = (values - at_frames(values, at_before)) * (at_frames(values, at_after) - values) <= 0
            slope = np.where(turns, 0.0, slope)
        arrive = np.where(has_arrive[..., None], arrive, slope)
        leave = np.where(has_leave[..., None], leave, slope)
        has_arrive, has_leave = has_arrive | ok, has_leave | ok
    out = np.empty((n, t, j, 2, values.shape[-1]))
    out[:, :, :, 0] = at_frames(arrive, at_prev) * (tm[:, :, None] - at_frames(tm, at_prev))[..., None]
    out[:, :, :, 1] = at_frames(leave, at_next) * (tm[:, :, None] - at_frames(tm, at_next))[..., None]
    return out, np.stack([at_frames(has_arrive, at_prev), at_frames(has_leave, at_next)], axis=-1)


def hermite_offsets(base: np.ndarray, velocities: np.ndarray, measured: np.ndarray, known: np.ndarray, times=None,
                    neighbours=None, share: float = 1.0, memory: float = 0.0) -> np.ndarray:
    """What turns the interpolation ``base`` (N, T, J, D) between each cell's two keys into a cubic Hermite
    curve that leaves the previous key and enters the next with ``share`` of their velocities
    (``velocities`` and ``measured`` are :func:`key_velocities` of the same cells). A key whose velocity
    was not measured keeps the interpolation's slope, so constant-velocity motion stays exact whatever is
    known; outside a span (before the first key, after the last) nothing is added: there a velocity would
    carry the motion on without bound. With ``memory`` > 0 (seconds) the share shrinks as ``memory / span``
    on spans longer than ``memory``: a key's velocity carries the motion about that long, not a whole long gap."""
    known = np.asarray(known, dtype=bool)
    n, t = known.shape[:2]
    prev, nxt, _ = neighbours if neighbours is not None else cell_neighbours(known)
    tm = _frame_times(times, n, t)
    prev, nxt = FrameIndex(prev, t), FrameIndex(nxt, t)
    s, inside = span_fraction(tm, prev, nxt)
    if memory > 0:
        span = np.abs(at_frames(tm, nxt) - at_frames(tm, prev))
        share = share * np.minimum(1.0, memory / np.maximum(span, 1e-9))
    w_prev = (share * (1.0 - s) ** 2 * (inside & measured[..., 0]))[..., None]
    w_next = (share * s ** 2 * (inside & measured[..., 1]))[..., None]
    # Hermite = lerp + (1-s)^2 (v0 (t - t0) - (lerp - p0)) + s^2 (v1 (t - t1) - (lerp - p1))
    return (w_prev * (velocities[..., 0, :] - (base - at_frames(base, prev)))
            + w_next * (velocities[..., 1, :] - (base - at_frames(base, nxt))))


def auto_clamped_slopes(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Slopes at keys (K,) of values (K, C) as Blender's default F-curves set them (*Auto Clamped* handles
    with *Continuous Acceleration* smoothing): flat at the first and the last key and where a key is a local
    extreme of its channel; between those, the slopes that make the curve's acceleration continuous at every
    other key (a cubic spline); a slope whose handle (a third of the way to the neighbouring key) would
    leave the range of the neighbouring keys' values is clamped to its edge (the worst first), and the rest
    is solved again with it fixed (checked against real Blender F-curves in ``tests/test_blender_bezier.py``)."""
    k, c = y.shape
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), (c, k))
    return auto_clamped_columns(t, np.asarray(y, dtype=np.float64).T, np.ones((c, k), dtype=bool)).T


def auto_clamped_columns(t: np.ndarray, y: np.ndarray, valid: np.ndarray, flat_ends: bool = True,
                         runs: np.ndarray | None = None) -> np.ndarray:
    """:func:`auto_clamped_slopes` of many channels at once, each with its own keys: times and values (C, K)
    whose first ``valid`` entries (C, K; a prefix of each row, times rising) are the channel's keys. Every
    channel's tridiagonal system is solved together (one banded solve), the clamping done a key per
    channel per round. Entries past a channel's keys get slope 0. ``flat_ends`` False: the first and the last
    key take the slope of their one segment instead of Blender's flat ends (keys at the edge of a window cut
    from a longer motion, which goes on beyond them). ``runs`` (C, K): keys inside a run of keyed frames, which
    take the slope between their two neighbours (measured motion, not a curve's choice)."""
    c, k = y.shape
    m = np.zeros((c, k))
    count = valid.sum(axis=1)
    if k < 3 or not (count >= 3).any():
        return m
    h = np.diff(t, axis=1)
    pair = valid[:, 1:]  # h[:, i] joins keys i and i + 1
    h = np.where(pair, h, 1.0)
    d = np.where(pair, np.diff(y, axis=1) / h, 0.0)
    idx = np.arange(k)[None, :]
    interior = (idx > 0) & (idx < count[:, None] - 1)
    fixed = ~interior
    fixed[:, 1:-1] |= d[:, :-1] * d[:, 1:] <= 0  # extremes (and flat steps)
    # a handle reaches h / 3 and must stay between the neighbouring keys' values: the slope has the
    # direction of the channel there and at most 3 times the gentler neighbouring segment's slope
    lo, hi = np.full((c, k), -np.inf), np.full((c, k), np.inf)
    steepest = 3 * np.minimum(np.abs(d[:, :-1]), np.abs(d[:, 1:]))
    rising = d[:, 1:] > 0
    lo[:, 1:-1], hi[:, 1:-1] = np.where(rising, 0.0, -steepest), np.where(rising, steepest, 0.0)
    hp, hn = np.ones((c, k)), np.ones((c, k))
    hp[:, 1:], hn[:, :-1] = h, h
    dp, dn = np.zeros((c, k)), np.zeros((c, k))
    dp[:, 1:], dn[:, :-1] = d, d
    if not flat_ends:
        last = np.maximum(count - 1, 1)
        m[:, 0] = d[:, 0]
        m[np.arange(c), last] = d[np.arange(c), last - 1]
    if runs is not None:
        inside = runs & interior
        m = np.where(inside, (dp * hp + dn * hn) / (hp + hn), m)
        fixed |= inside
    rhs = 3 * (dp / hp + dn / hn)
    for _ in range(k):
        # m[i-1]/h[i-1] + 2 m[i] (1/h[i-1] + 1/h[i]) + m[i+1]/h[i] = 3 (d[i-1]/h[i-1] + d[i]/h[i]) at free
        # keys; m[i] = its value at fixed ones
        m = _solve_free(m, fixed, hp, hn, rhs)
        excess = np.where(fixed, 0.0, np.maximum(lo - m, m - hi))
        worst = excess.argmax(axis=1)
        rows = np.flatnonzero(excess[np.arange(c), worst] > 1e-12)
        if not rows.size:
            break
        w = worst[rows]
        m[rows, w] = np.clip(m[rows, w], lo[rows, w], hi[rows, w])  # one a round: the others may come back inside
        fixed[rows, w] = True
    return np.where(valid & (count[:, None] >= 3), m, 0.0)


def spline_key_slopes(values: np.ndarray, keys: np.ndarray, times=None, joints: np.ndarray | None = None) -> np.ndarray:
    """Per cell of values (N, T, J, D): the slope Blender's default F-curve through each joint's keyed cells
    (``keys`` (N, T, J)) has at a key, every component a channel (:func:`auto_clamped_columns`), except that
    the window's first and last keys are not flat (the motion goes on past them) and a key between two keyed
    frames takes the slope between them; 0 elsewhere, and for the joints (N, J) that ``joints`` leaves out (the
    caller needs no slope there)."""
    n, t, j, d = values.shape
    tm = _frame_times(times, n, t)
    keys = np.asarray(keys, dtype=bool)
    out = np.zeros(values.shape)
    wi, ji = np.nonzero(keys.any(axis=1) if joints is None else keys.any(axis=1) & joints)
    if not len(wi):
        return out
    k = keys[wi, :, ji]  # (P, T): each chosen joint's keyed frames
    width = int(k.sum(axis=1).max())
    order = np.argsort(~k, axis=1, kind="stable")[:, :width]  # its keyed frames first, in time order
    valid = np.take_along_axis(k, order, axis=1)
    runs = np.zeros_like(valid)
    runs[:, 1:-1] = valid[:, 2:] & (order[:, 2:] - order[:, 1:-1] == 1) & (order[:, 1:-1] - order[:, :-2] == 1)
    cols = (len(wi), d, width)
    slopes = auto_clamped_columns(
        np.broadcast_to(tm[wi[:, None], order][:, None], cols).reshape(-1, width),
        values[wi[:, None], order, ji[:, None]].transpose(0, 2, 1).reshape(-1, width),
        np.broadcast_to(valid[:, None], cols).reshape(-1, width),
        flat_ends=False,
        runs=np.broadcast_to(runs[:, None], cols).reshape(-1, width),
    ).reshape(cols).transpose(0, 2, 1)
    out[wi[:, None], order, ji[:, None]] = np.where(valid[..., None], slopes, 0.0)
    return out


def _solve_free(m: np.ndarray, fixed: np.ndarray, hp: np.ndarray, hn: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """The continuous-acceleration slopes at the free keys (C, K) of every channel, the fixed keys' slopes ``m``
    given: one tridiagonal system over the free keys alone (a fixed key only moves its neighbours' right side),
    so its size follows the keys a curve chooses, not every key of the window. A channel's first and last entries
    are always fixed, so consecutive free keys of the flattened rows couple only within a channel."""
    free = np.flatnonzero(~fixed)
    if not free.size:
        return m
    flat_m, flat_fixed = m.ravel(), fixed.ravel()
    a, c = 1 / hp.ravel()[free], 1 / hn.ravel()[free]
    before, after = flat_fixed[free - 1], flat_fixed[free + 1]
    r = rhs.ravel()[free] - np.where(before, a * flat_m[free - 1], 0.0) - np.where(after, c * flat_m[free + 1], 0.0)
    # LAPACK's tridiagonal solver itself: scipy's solve_banded checks and converts its arguments at several times
    # the cost of solving the few hundred keys of a window
    diagonal = 2 * (a + c)
    if free.size == 1:  # (the wrapper refuses empty off-diagonals)
        x = r / diagonal
    else:
        *_, x, info = dgtsv(np.where(before, 0.0, a)[1:], diagonal, np.where(after, 0.0, c)[:-1], r[:, None],
                            overwrite_dl=True, overwrite_d=True, overwrite_du=True, overwrite_b=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"the slopes' tridiagonal system is singular (LAPACK dgtsv info {info})")
    out = m.copy()
    out.ravel()[free] = x.ravel()
    return out


def auto_clamped_curve(t: np.ndarray, y: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Blender's default F-curve through keys at times ``t`` (K,) with values ``y`` (K, C), evaluated at
    ``frames`` (F,) -> (F, C): cubic Hermite segments with :func:`auto_clamped_slopes` (handles a third of
    the way in time, so each Bezier segment is exactly this cubic). Outside the keys the curve holds."""
    from scipy.interpolate import CubicHermiteSpline

    f = np.clip(np.asarray(frames, dtype=np.float64), t[0], t[-1])
    return CubicHermiteSpline(t, y, auto_clamped_slopes(t, y))(f)


def bezier(rotations: np.ndarray, translations: np.ndarray, known: np.ndarray, schema=None):
    """What Blender does with the keys alone: every rotation channel as the capture keys it (Euler angles
    in the schema's channel order, unwrapped over time) and every translation channel follows Blender's
    default Bezier F-curve with *Auto Clamped* handles (:func:`auto_clamped_curve`). Before the first and
    after the last key a channel holds its key (constant extrapolation)."""
    order = schema.euler_order if schema is not None else "ZXY"
    k = np.unique(_neighbours(known)[0])  # the known frames (raises when there is none)
    n, t, j = rotations.shape[:3]
    if len(k) == 1:
        return np.repeat(rotations[:, k], t, axis=1), np.repeat(translations[:, k], t, axis=1)
    angles = quat_to_euler(rotations[:, k], order, degrees=False, continuous_axis=1)  # (N, K, J, 3)
    values = np.concatenate([angles, translations[:, k]], axis=-1).transpose(1, 0, 2, 3).reshape(len(k), -1)
    out = auto_clamped_curve(k.astype(np.float64), values, np.arange(t)).reshape(t, n, j, 6).transpose(1, 0, 2, 3)
    rot, trans = euler_to_quat(out[..., :3], order, degrees=False), out[..., 3:].copy()
    rot[:, k], trans[:, k] = rotations[:, k], translations[:, k]
    return rot, trans


BASELINES = {"zero": zero_velocity, "interp": interpolate, "bezier": bezier}


def by_joint_pattern(fill, rotations: np.ndarray, translations: np.ndarray, known: np.ndarray, schema=None):
    """A frame-mask fill of :data:`BASELINES` for known cells (T, J) shared by every window: the joints known
    on the same frames are filled together by ``fill`` with those frames. These fills treat every joint's
    channels on their own, so each joint gets exactly the curve it would get alone (a wrist known on every
    frame is given as is, its fingers interpolated between their own keys). A joint never known holds its
    rest pose, as a bone without keys does in Blender: identity rotation, its translation as given (a bone
    offset) or zero."""
    known = np.asarray(known, dtype=bool)
    rot, trans = rotations.copy(), translations.copy()
    patterns, group = np.unique(known.T, axis=0, return_inverse=True)
    for g, frames in enumerate(patterns):
        cols = np.flatnonzero(np.ravel(group) == g)
        if frames.all():
            continue
        if not frames.any():
            rot[:, :, cols] = quat_identity()
            trans[:, :, cols] = np.nan_to_num(translations[:, :, cols])
            continue
        r, t = fill(rotations[:, :, cols], translations[:, :, cols], frames, schema)
        rot[:, :, cols], trans[:, :, cols] = r, t
    return rot, trans

"""Blender's F-curve evaluation in numpy, for many curves and frames at once.

``fcurve.evaluate(frame)`` is one Python call per curve and frame (a 1,291-frame shot of 25 bones is a
quarter of a million calls); here the keys are read once per curve (``foreach_get``) and evaluated as Blender
does (``fcurve_eval_keyframes`` in ``blenkernel/intern/fcurve.cc``): constant or linear extrapolation, a frame
within 1e-4 of a key takes the key's value, and between keys Constant, Linear and Bezier interpolation (handles
corrected so the segment does not loop, the cubic solved for the frame). The other interpolations (easing
types), F-modifiers and baked samples are rare on a rig: those frames are evaluated by ``fcurve.evaluate``.
Blender computes in float32, this in float64: the two agree to about 1e-6 of the values' size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT = 1e-4  # a frame this close to a key takes the key's value (Blender's binary-search threshold)
FLT_EPSILON = 1.1920929e-07
_ENUMS: dict[str, int] = {}


def enum_value(prop: str, name: str) -> int:
    """A Keyframe enum's integer (what ``foreach_get`` returns), e.g. ``enum_value("interpolation", "BEZIER")``."""
    key = f"{prop}:{name}"
    if key not in _ENUMS:
        import bpy

        _ENUMS[key] = bpy.types.Keyframe.bl_rna.properties[prop].enum_items[name].value
    return _ENUMS[key]


@dataclass
class Points:
    """One F-curve's keys as arrays (sorted by frame, as Blender keeps them)."""

    co: np.ndarray  # (n, 2) frame, value
    left: np.ndarray  # (n, 2) left handles
    right: np.ndarray  # (n, 2) right handles
    interpolation: np.ndarray  # (n,) int, the interpolation of the segment that starts at each key
    linear_extrapolation: bool = False
    exact: bool = True  # False: modifiers or samples, only fcurve.evaluate knows the values

    def __len__(self) -> int:
        return len(self.co)


def bulk_get(kp, attr: str, n: int, width: int, dtype=np.float32) -> np.ndarray:
    """One attribute of ``n`` keyframe points, flat (n * width,), in one ``foreach_get``."""
    buf = np.empty(n * width, dtype=dtype)
    if n:
        kp.foreach_get(attr, buf)
    return buf


def _get(kp, attr: str, n: int, width: int, dtype=np.float32) -> np.ndarray:
    buf = bulk_get(kp, attr, n, width, dtype)
    return buf.reshape(n, width) if width > 1 else buf


def read(fc) -> Points:
    """A curve's keys, bulk-read."""
    kp = fc.keyframe_points
    n = len(kp)
    return Points(_get(kp, "co", n, 2).astype(np.float64), _get(kp, "handle_left", n, 2).astype(np.float64),
                  _get(kp, "handle_right", n, 2).astype(np.float64),
                  _get(kp, "interpolation", n, 1, np.uint8).astype(np.int32),  # enums are bytes: a block copy
                  fc.extrapolation == "LINEAR", not (len(fc.modifiers) or len(fc.sampled_points)))


def without(p: Points, drop: np.ndarray) -> Points:
    """The curve of ``p`` with the keys where ``drop`` (n,) left out, the others' handles as they are."""
    keep = ~drop
    return Points(p.co[keep], p.left[keep], p.right[keep], p.interpolation[keep], p.linear_extrapolation, p.exact)


def evaluate(curves: list, frames, points: list[Points] | None = None) -> np.ndarray:
    """Values (C, F) of F-curves at the frames, as ``fcurve.evaluate`` gives them (see the module docstring), or of
    their keys as ``points`` gives them (none empty; some keys left out, :func:`without`)."""
    frames = np.asarray(frames, dtype=np.float64)
    points = [read(fc) for fc in curves] if points is None else points
    values, known = evaluate_points(points, frames)
    for c in np.flatnonzero(~known.all(axis=1)):  # easing types, modifiers, samples: Blender's own evaluation
        fc = curves[c]
        for i in np.flatnonzero(~known[c]):
            values[c, i] = fc.evaluate(float(frames[i]))
    return values


def evaluate_points(points: list[Points], frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values (C, F) of curves given as :class:`Points` (none empty), and (C, F) whether each value is Blender's
    (False: an interpolation or a curve this module does not evaluate; the value there is NaN)."""
    frames = np.asarray(frames, dtype=np.float64)
    n_c, n_f = len(points), len(frames)
    out = np.full((n_c, n_f), np.nan)
    known = np.zeros((n_c, n_f), dtype=bool)
    if not n_c or not n_f:
        return out, known
    const, lin, bez = (enum_value("interpolation", n) for n in ("CONSTANT", "LINEAR", "BEZIER"))
    # the segments of all curves laid end to end, so one vectorised pass evaluates every (curve, frame)
    sizes = np.array([len(p) for p in points])
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    co = np.concatenate([p.co for p in points])
    left = np.concatenate([p.left for p in points])
    right = np.concatenate([p.right for p in points])
    ipo = np.concatenate([p.interpolation for p in points])
    exact_curve = np.array([p.exact for p in points])
    linear_ext = np.array([p.linear_extrapolation for p in points])
    cid = np.repeat(np.arange(n_c), n_f)
    t = np.tile(frames, n_c)
    first, last = start[cid], start[cid] + sizes[cid] - 1
    # the first key after t, per curve (searchsorted on each curve's frames, offset so curves do not mix)
    span = max(float(np.abs(co[:, 0]).max()), float(np.abs(frames).max())) * 2 + 10.0
    shift = np.repeat(np.arange(n_c) * span, sizes)
    after = np.searchsorted(co[:, 0] + shift, t + cid * span, side="right")
    after = np.clip(after, first, last)
    val = np.full(t.shape, np.nan)
    ok = np.zeros(t.shape, dtype=bool)

    # extrapolation (Blender: t <= first key, t >= last key); a curve of one key is its own neighbour (its
    # neighbour's index would be the next curve's key, or past the arrays)
    for end, nb, handle, sel in ((first, np.minimum(first + 1, last), left, t <= co[first, 0]),
                                 (last, np.maximum(last - 1, first), right, (t >= co[last, 0]) & (t > co[first, 0]))):
        e, n_ = end[sel], nb[sel]
        y = co[e, 1].copy()
        dx = co[e, 0] - t[sel]
        slope = np.zeros(len(e))
        use_lin = linear_ext[cid[sel]] & (ipo[e] != const)
        single = sizes[cid[sel]] == 1
        lin_key = use_lin & (ipo[e] == lin) & ~single
        fac = co[n_, 0] - co[e, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            s1 = np.where(fac != 0, (co[n_, 1] - co[e, 1]) / np.where(fac != 0, fac, 1.0), 0.0)
            hfac = co[e, 0] - handle[e, 0]
            s2 = np.where(hfac != 0, (co[e, 1] - handle[e, 1]) / np.where(hfac != 0, hfac, 1.0), 0.0)
        slope = np.where(lin_key, s1, np.where(use_lin & (ipo[e] != lin), s2, slope))
        val[sel] = y - slope * dx
        ok[sel] = True

    inner = ~ok
    b = after[inner]
    a = b - 1
    ti = t[inner]
    vi = np.full(ti.shape, np.nan)
    oki = np.zeros(ti.shape, dtype=bool)
    on_a, on_b = np.abs(ti - co[a, 0]) < EXACT, np.abs(ti - co[b, 0]) < EXACT
    vi[on_b], oki[on_b] = co[b[on_b], 1], True
    vi[on_a], oki[on_a] = co[a[on_a], 1], True
    seg = ~oki
    duration = co[b, 0] - co[a, 0]
    hold = seg & ((ipo[a] == const) | (duration == 0))
    vi[hold], oki[hold] = co[a[hold], 1], True
    linear = seg & ~hold & (ipo[a] == lin)
    la, lb = a[linear], b[linear]
    vi[linear] = co[la, 1] + (co[lb, 1] - co[la, 1]) * (ti[linear] - co[la, 0]) / duration[linear]
    oki[linear] = True
    curve = seg & ~hold & (ipo[a] == bez)
    if curve.any():
        vi[curve], oki[curve] = _bezier(co[a[curve]], right[a[curve]], left[b[curve]], co[b[curve]], ti[curve])
    val[inner], ok[inner] = vi, oki
    ok &= exact_curve[cid]
    out[cid, np.tile(np.arange(n_f), n_c)] = np.where(ok, val, np.nan)
    known[cid, np.tile(np.arange(n_f), n_c)] = ok
    return out, known


def _bezier(v1: np.ndarray, v2: np.ndarray, v3: np.ndarray, v4: np.ndarray, t: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Bezier segments (key, its right handle, the next key's left handle, the next key; each (n, 2)) at frames t:
    each handle shortened to the segment's length as ``BKE_fcurve_correct_bezpart`` does, x(u) = t solved by
    Newton's method where x is monotone (handles that turn back in time are left to Blender), and y(u) returned."""
    h1, h2 = v1 - v2, v4 - v3
    length = v4[:, 0] - v1[:, 0]
    long1, long2 = np.abs(h1[:, 0]) > length, np.abs(h2[:, 0]) > length  # handles reaching past the segment (few)
    if long1.any():
        v2 = v2.copy()
        v2[long1] = v1[long1] - (length[long1] / np.abs(h1[long1, 0]))[:, None] * h1[long1]
    if long2.any():
        v3 = v3.copy()
        v3[long2] = v4[long2] - (length[long2] / np.abs(h2[long2, 0]))[:, None] * h2[long2]
    flat = (np.abs(v1[:, 1] - v4[:, 1]) < FLT_EPSILON) & (np.abs(v2[:, 1] - v3[:, 1]) < FLT_EPSILON) & (
        np.abs(v3[:, 1] - v4[:, 1]) < FLT_EPSILON)
    d0, d1, d2 = v2[:, 0] - v1[:, 0], v3[:, 0] - v2[:, 0], v4[:, 0] - v3[:, 0]
    monotone = (d0 >= 0) & (d2 >= 0) & ((d1 >= 0) | (d1 * d1 <= d0 * d2))  # x'(u) >= 0 on [0, 1]
    x0, x1, x2, x3 = v1[:, 0], v2[:, 0], v3[:, 0], v4[:, 0]
    # x(u) = t: Newton from the straight line (exact at once for handles a third of the way, as auto handles are),
    # kept inside a bracket that shrinks each step (bisection where Newton leaves it)
    u = np.clip((t - x0) / np.where(x3 > x0, x3 - x0, 1.0), 0.0, 1.0)
    # the points still to solve, by index: each step works on those alone (most are solved at the start)
    idx = np.arange(len(t))
    x0i, x1i, x2i, x3i, ti, ui = x0, x1, x2, x3, t, u.copy()
    lo, hi = np.zeros(len(t)), np.ones(len(t))
    for _ in range(60):
        w = 1.0 - ui
        r = w * w * w * x0i + 3 * w * w * ui * x1i + 3 * w * ui * ui * x2i + ui * ui * ui * x3i - ti
        todo = np.abs(r) > 1e-10 * np.maximum(1.0, np.abs(ti))
        if not todo.any():
            break
        if not todo.all():
            idx, r, w, ui, lo, hi = idx[todo], r[todo], w[todo], ui[todo], lo[todo], hi[todo]
            x0i, x1i, x2i, x3i, ti = x0i[todo], x1i[todo], x2i[todo], x3i[todo], ti[todo]
        slope = 3 * (w * w * (x1i - x0i) + 2 * w * ui * (x2i - x1i) + ui * ui * (x3i - x2i))
        lo, hi = np.where(r < 0, ui, lo), np.where(r > 0, ui, hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = ui - r / slope
        ui = np.where((step > lo) & (step < hi), step, 0.5 * (lo + hi))
        u[idx] = ui
    w = 1.0 - u
    y = w * w * w * v1[:, 1] + 3 * w * w * u * v2[:, 1] + 3 * w * u * u * v3[:, 1] + u * u * u * v4[:, 1]
    y = np.where(flat, v1[:, 1], y)
    return np.where(monotone | flat, y, np.nan), monotone | flat

"""Writing filled values as F-curve keys: only at target frames, never touching the animator's keys.

* Values go to the property of the bone's ``rotation_mode``, made continuous with the neighbouring
  values: quaternions stay in the previous key's hemisphere, Euler angles are unwrapped (the Euler solution
  and turn nearest the value before, as Blender's compatible Euler picks), axis-angle keeps its axis side and
  angle branch. All of it in numpy over whole tracks (:func:`continuous_values`).
* Keys are added in bulk (``keyframe_points.add`` + ``foreach_set``), typed ``GENERATED``, laid out in frame
  order and their handles computed; every key that was there before keeps its exact handles (restored bit for bit).
* Keys Anyfill wrote earlier (``GENERATED``) at a target frame are replaced, so Fill can be run again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .fcurves import bulk_get, enum_value
from .keys import EULER_ORDERS, check_editable, generated_type_value
from .retarget import quat_to_matrix

EPS_FRAME = 1e-3
TAU = 2.0 * np.pi


# --- rotation values of each mode, in numpy -----------------------------------------------------------------


_PARITY = {"XYZ": False, "XZY": True, "YXZ": True, "YZX": False, "ZXY": False, "ZYX": True}


def euler_pair(q: np.ndarray, order: str) -> tuple[np.ndarray, np.ndarray]:
    """The two Euler solutions (..., 3) [x, y, z] of unit quaternions in a rotation order, as Blender's
    ``mat3_normalized_to_eulo2`` finds them (the first has its middle angle in [-pi/2, pi/2])."""
    m = quat_to_matrix(q)  # m[..., row, col]; Blender's mat[col][row]
    i, j, k = ("XYZ".index(a) for a in order)

    def b(c: int, r: int) -> np.ndarray:  # Blender's mat[c][r]
        return m[..., r, c]

    cy = np.hypot(b(i, i), b(i, j))
    regular = cy > 16.0 * np.finfo(np.float32).eps
    e1, e2 = np.empty(q.shape[:-1] + (3,)), np.empty(q.shape[:-1] + (3,))
    e1[..., i] = np.where(regular, np.arctan2(b(j, k), b(k, k)), np.arctan2(-b(k, j), b(j, j)))
    e1[..., j] = np.arctan2(-b(i, k), cy)
    e1[..., k] = np.where(regular, np.arctan2(b(i, j), b(i, i)), 0.0)
    e2[..., i] = np.where(regular, np.arctan2(-b(j, k), -b(k, k)), e1[..., i])
    e2[..., j] = np.where(regular, np.arctan2(-b(i, k), -cy), e1[..., j])
    e2[..., k] = np.where(regular, np.arctan2(-b(i, j), -b(i, i)), e1[..., k])
    if _PARITY[order]:
        e1, e2 = -e1, -e2
    return e1, e2


def quat_to_mode(q: np.ndarray, mode: str) -> np.ndarray:
    """Unit quaternions (..., 4) -> values of ``mode`` with nothing to be continuous with: the quaternion, the
    Euler solution of smaller angles (Blender's ``to_euler``), axis-angle with its angle in [0, pi]."""
    if mode == "QUATERNION":
        return np.array(q, dtype=np.float64)
    if mode in EULER_ORDERS:
        e1, e2 = euler_pair(q, mode)
        return np.where((np.abs(e1).sum(-1) > np.abs(e2).sum(-1))[..., None], e2, e1)
    q = np.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    axis = np.where(s > 1e-12, v / np.maximum(s, 1e-12), [0.0, 1.0, 0.0])
    return np.concatenate([2 * np.arctan2(s, np.clip(q[..., :1], -1, 1)), axis], -1)


# --- continuity along a track ------------------------------------------------------------------------------


def _segment_cumsum(x: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Cumulative sums of ``x`` (N, ...) restarting at every item where ``first`` (N,) is set. A value that is not
    a number spoils the sums of its own segment from there on, not every later one (the tracks of several bones
    are summed at once)."""
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        if bad.any():
            sums = _segment_cumsum(np.where(bad, 0.0, x), first)
            return np.where(_segment_cumsum(bad.astype(np.int64), first) > 0, np.nan, sums)
    cs = np.cumsum(x, axis=0)
    start = np.maximum.accumulate(np.where(first, np.arange(len(first)), 0))
    return cs - cs[start] + x[start]


def _wrap(d: np.ndarray) -> np.ndarray:
    return d - TAU * np.round(d / TAU)


def _walk(q: np.ndarray, first: np.ndarray, anchor: np.ndarray, mode: str,
          pair: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Values of ``mode`` for unit quaternions q (N, 4) along one direction of a track, each made continuous
    with the value before it; ``first`` (N,) marks where a walk starts from ``anchor`` (N, width; read there).
    ``pair``: :func:`euler_pair` of q when already known (both walks of a track share it)."""
    prev = np.concatenate([q[:1], q[:-1]])
    if mode == "QUATERNION":
        dots = np.where(first, (q * anchor).sum(-1), (q * prev).sum(-1))
        parity = _segment_cumsum((dots < 0).astype(np.int64), first) % 2
        return np.where(parity[:, None] == 1, -q, q)
    if mode in EULER_ORDERS:
        a, b = euler_pair(q, mode) if pair is None else pair
        pa = np.concatenate([a[:1], a[:-1]])
        pb = np.concatenate([b[:1], b[:-1]])
        # the solution nearer the value before (sum of turns, each within half a turn), as Blender's compatible
        # Euler picks; the choice flips along the track exactly where the principal solution jumps branch
        to_b = np.abs(_wrap(b - anchor)).sum(-1) < np.abs(_wrap(a - anchor)).sum(-1)
        switch = np.abs(_wrap(a - pb)).sum(-1) < np.abs(_wrap(a - pa)).sum(-1)
        state = _segment_cumsum(np.where(first, to_b, switch).astype(np.int64), first) % 2
        s = np.where(state[:, None] == 1, b, a)
        ps = np.concatenate([s[:1], s[:-1]])
        turns = np.where(first[:, None], np.round((anchor - s) / TAU), np.round((ps - s) / TAU))
        return s + TAU * _segment_cumsum(turns, first)
    # axis-angle [angle, x, y, z]: the axis on the side of the one before, the angle on the nearest branch
    v = q[:, 1:]
    s = np.linalg.norm(v, axis=1)
    angle = 2 * np.arctan2(s, np.clip(q[:, 0], -1, 1))
    valid = s > 1e-12
    anchor_axis = anchor[:, 1:4]
    # an identity rotation has no axis: it keeps the last one (or the anchor's)
    last = np.maximum.accumulate(np.where(valid | first, np.arange(len(s)), 0))
    axis = np.where(valid[:, None], v / np.maximum(s, 1e-12)[:, None], np.nan)
    axis = np.where(np.isnan(axis[last]), anchor_axis, axis[last])
    prev_axis = np.concatenate([axis[:1], axis[:-1]])
    flip = np.where(first, (axis * anchor_axis).sum(-1) < 0, (axis * prev_axis).sum(-1) < 0)
    sign = np.where(_segment_cumsum(flip.astype(np.int64), first) % 2 == 1, -1.0, 1.0)
    axis, angle = axis * sign[:, None], angle * sign
    prev_angle = np.concatenate([angle[:1], angle[:-1]])
    turns = np.where(first, np.round((anchor[:, 0] - angle) / TAU), np.round((prev_angle - angle) / TAU))
    return np.concatenate([(angle + TAU * _segment_cumsum(turns, first))[:, None], axis], 1)


def continuous_values(new_rows: np.ndarray, new_q: np.ndarray, known_rows: np.ndarray, known_values: np.ndarray,
                      mode: str, rest_values, new_track: np.ndarray | None = None,
                      known_track: np.ndarray | None = None) -> np.ndarray:
    """Values (N, width) of ``mode`` for the rotations ``new_q`` (N, 4 wxyz) at the track positions ``new_rows``,
    continuous with the known (animator's) values at ``known_rows`` (none among ``new_rows``) on *both* sides of
    every gap: each gap is walked forward from the key before it and backward from the key after it, and the two
    walks meet where their values are closest, so a curve never leaps on the frame before a key that sits on
    another Euler branch (or quaternion hemisphere, or axis-angle turn). A gap with no key on either side starts
    from ``rest_values``. Several tracks (bones) at once: ``new_track``/``known_track`` say whose each row is
    (rows sorted by track, then row) and ``rest_values`` is (tracks, width)."""
    new_rows = np.asarray(new_rows, dtype=np.int64)
    n = len(new_rows)
    rest = np.atleast_2d(np.asarray(rest_values, dtype=np.float64))
    width = rest.shape[1]
    if not n:
        return np.zeros((0, width))
    known_rows = np.asarray(known_rows, dtype=np.int64)
    new_track = np.zeros(n, dtype=np.int64) if new_track is None else np.asarray(new_track, dtype=np.int64)
    known_track = np.zeros(len(known_rows), dtype=np.int64) if known_track is None else np.asarray(known_track)
    known_values = np.asarray(known_values, dtype=np.float64).reshape(len(known_rows), width)
    q = np.asarray(new_q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    span = int(max(new_rows.max(initial=0), known_rows.max(initial=0))) + 2
    before = np.searchsorted(known_track * span + known_rows, new_track * span + new_rows) - 1  # key before
    k = len(known_rows)
    has_left = (before >= 0) & (known_track[np.maximum(before, 0)] == new_track) if k else np.zeros(n, bool)
    has_right = (before + 1 < k) & (known_track[np.minimum(before + 1, k - 1)] == new_track) if k \
        else np.zeros(n, bool)
    gap = np.where(has_left, before, -1 - new_track)  # one id per gap
    first = np.concatenate([[True], gap[1:] != gap[:-1]])
    last = np.concatenate([gap[1:] != gap[:-1], [True]])
    own_rest = rest[np.minimum(new_track, len(rest) - 1)]
    left = np.where(has_left[:, None], known_values[np.maximum(before, 0)] if k else own_rest, own_rest)
    right = np.where(has_right[:, None], known_values[np.minimum(before + 1, k - 1)] if k else own_rest, own_rest)
    pair = euler_pair(q, mode) if mode in EULER_ORDERS else None  # once for both walks
    forward = _walk(q, first, left, mode, pair)

    def rev(x: np.ndarray) -> np.ndarray:  # reversed, in order in memory (numpy is slow on reversed strides)
        return np.ascontiguousarray(x[::-1])

    backward = _walk(rev(q), rev(last), rev(right), mode, None if pair is None else (rev(pair[0]), rev(pair[1])))
    backward = rev(backward)
    # join: split s of a gap takes forward[:s] + backward[s:]; its jump is between forward[s-1] (or the left key)
    # and backward[s] (or the right key). The walks meet where they come closest (near a gimbal point two Euler
    # branches touch); where they never come close (keys on two branches, quaternion keys in two hemispheres) the
    # switch is made into the right key, so no filled frame is written in a representation away from its
    # neighbour.
    prev_forward = np.where(first[:, None], left, np.concatenate([forward[:1], forward[:-1]]))
    jump = np.abs(prev_forward - backward).max(axis=1)  # split at each item
    starts = np.flatnonzero(first)
    ends = np.flatnonzero(last)
    end_jump = np.abs(forward[ends] - right[ends]).max(axis=1)  # split after the gap's last item
    best_inner = np.minimum.reduceat(jump, starts)
    gap_of = np.cumsum(first) - 1
    at_best = jump == best_inner[gap_of]
    best_item = np.maximum.reduceat(np.where(at_best, np.arange(n), -1), starts)  # the latest split of the least jump
    split = np.where((end_jump <= best_inner) | (np.minimum(end_jump, best_inner) >= np.pi / 4), ends + 1, best_item)
    take_forward = np.arange(n) < split[gap_of]
    both = has_left & has_right
    use_forward = np.where(both, take_forward, ~has_right)
    return np.where(use_forward[:, None], forward, backward)


def continuous_track(frames: Sequence[float], new: dict, known: dict[float, Sequence[float]], mode: str,
                     rest_values: Sequence[float]) -> dict[float, list[float]]:
    """:func:`continuous_values` for rotations given per frame: ``new`` frame -> quaternion (wxyz, any
    sequence), ``known`` frame -> values of ``mode``; returns frame -> values for the frames of ``new`` that are
    not known (``frames``: the track's frames, all of ``new`` and ``known`` among them)."""
    frames = sorted(frames)
    pos = {f: i for i, f in enumerate(frames)}
    new_frames = [f for f in frames if f in new and f not in known]
    known_frames = [f for f in frames if f in known]
    values = continuous_values(np.array([pos[f] for f in new_frames], dtype=np.int64),
                               np.array([list(new[f]) for f in new_frames], dtype=np.float64).reshape(-1, 4),
                               np.array([pos[f] for f in known_frames], dtype=np.int64),
                               np.array([list(known[f]) for f in known_frames], dtype=np.float64),
                               mode, rest_values)
    return {f: values[i].tolist() for i, f in enumerate(new_frames)}


# --- bulk key writing -------------------------------------------------------------------------------------


# A key's attributes as ``foreach_get``/``foreach_set`` move them: enums as bytes (Blender stores them as one byte,
# so a byte array is copied as a block; other integer widths go item by item, many times slower), floats as
# float32 (the stored type). Everything a key holds, so keys can be laid out in order without ``sort``.
ENUMS = ("interpolation", "handle_left_type", "handle_right_type", "type", "easing")
KEY_ATTRS = (("co", 2, np.float32), ("handle_left", 2, np.float32), ("handle_right", 2, np.float32),
             *((e, 1, np.uint8) for e in ENUMS), ("back", 1, np.float32), ("amplitude", 1, np.float32),
             ("period", 1, np.float32), ("select_control_point", 1, bool), ("select_left_handle", 1, bool),
             ("select_right_handle", 1, bool))


_DEFAULTS: dict[str, object] = {}


def _added_defaults(key) -> dict[str, object]:
    """What ``keyframe_points.add`` puts in every new key, per attribute of :data:`KEY_ATTRS` (enums as their
    integers; the handles at zero), read once from such a key."""
    if not _DEFAULTS:
        for attr, _, _ in KEY_ATTRS:
            value = getattr(key, attr)
            _DEFAULTS[attr] = enum_value(attr, value) if attr in ENUMS else (
                tuple(value) if attr in ("co", "handle_left", "handle_right") else value)
    return _DEFAULTS


def new_fcurve(bag, data_path: str, index: int, group: str):
    """A new channel in the bone's group. Blender 4.5+ groups it in ``fcurves.new``; 4.4 takes no group there,
    so the group is found or made and assigned."""
    if "group_name" in bag.fcurves.bl_rna.functions["new"].parameters:
        return bag.fcurves.new(data_path, index=index, group_name=group)
    fc = bag.fcurves.new(data_path, index=index)
    fc.group = bag.groups.get(group) or bag.groups.new(group)
    return fc


def channel(bag, data_path: str, index: int, group: str):
    """The channel's F-curve, made in the bone's group if missing."""
    fc = bag.fcurves.find(data_path, index=index)
    return new_fcurve(bag, data_path, index, group) if fc is None else fc


def near(frames: np.ndarray, sorted_frames: np.ndarray) -> np.ndarray:
    """(len(frames),) whether each frame is within EPS_FRAME of one of ``sorted_frames``."""
    frames = np.asarray(frames, dtype=np.float64)
    sorted_frames = np.asarray(sorted_frames, dtype=np.float64)
    if not len(sorted_frames) or not len(frames):
        return np.zeros(len(frames), dtype=bool)
    i = np.searchsorted(sorted_frames, frames - EPS_FRAME)
    hit = sorted_frames[np.minimum(i, len(sorted_frames) - 1)]
    return (i < len(sorted_frames)) & (np.abs(hit - frames) <= EPS_FRAME)


def clear_generated(fc, frames, types: np.ndarray | None = None, x: np.ndarray | None = None) -> int:
    """Remove the GENERATED keys (Anyfill's, from an earlier fill) at the frames; returns how many. ``types``,
    ``x``: the keys' types and frames when already read."""
    kp = fc.keyframe_points
    n = len(kp)
    if not n:
        return 0
    gen = (bulk_get(kp, "type", n, 1, np.uint8) if types is None else types) == generated_type_value()
    if not gen.any():
        return 0
    x = bulk_get(kp, "co", n, 2)[0::2] if x is None else x
    stale = np.flatnonzero(gen & near(x, np.sort(np.asarray(frames, dtype=np.float64))))
    for i in stale[::-1]:  # one call per stale key (only when refilling); reverse order keeps indices valid
        kp.remove(kp[int(i)], fast=True)
    return len(stale)


def write_keys(bag, data_path: str, index: int, group: str, frames, values, interpolation: str = "BEZIER",
               fresh=None, key_type: str = "GENERATED") -> int:
    """Add keys (frame, value) to one channel, typed GENERATED (or ``key_type``: the animator's pose a Fill adopts,
    :func:`.provenance.adopt`). Existing GENERATED keys at those frames are
    replaced; a frame holding another key is skipped (the animator's key wins). Every other key keeps its handles
    exactly, except keys at the frames of ``fresh`` (keys this fill wrote a moment ago: their handles are
    computed again with their new neighbours). Returns the number of keys written.

    All in bulk, whatever the number of keys: the keys are added at the end (``keyframe_points.add``), then every
    attribute is laid out in frame order with ``foreach_set`` (the old keys moved to their places), so there is
    nothing for ``sort`` to do (Blender's sort is a bubble sort: a pass per place the farthest key moves); an
    attribute whose order leaves every key's value as it is is not written. Then Blender computes the handles
    (``handles_recalc``) and the old keys get theirs back."""
    check_editable(bag.id_data)  # a linked action takes keys but not their values: refused before any change
    fc = channel(bag, data_path, index, group)
    kp = fc.keyframe_points
    frames = np.asarray(frames, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(frames, kind="stable")
    frames, values = frames[order], values[order]
    n0 = len(kp)
    types = bulk_get(kp, "type", n0, 1, np.uint8)
    co = bulk_get(kp, "co", n0, 2)
    if clear_generated(fc, frames, types, co[0::2]):
        n0 = len(kp)
        co = bulk_get(kp, "co", n0, 2)
    existing = co[0::2].astype(np.float64)
    free = ~near(frames, np.sort(existing))
    frames, values = frames[free], values[free]
    n = len(frames)
    if not n:
        return 0
    old = {attr: bulk_get(kp, attr, n0, width, dtype).reshape(n0, width) for attr, width, dtype in KEY_ATTRS}
    kp.add(n)
    total = n0 + n
    # the merged order (stable: Blender's sort keeps equal frames in place; old keys out of order are sorted too)
    where = np.argsort(np.concatenate([existing, frames]), kind="stable")
    auto = enum_value("handle_left_type", "AUTO_CLAMPED")
    wanted = {"co": np.stack([frames, values], 1), "type": enum_value("type", key_type), "handle_left_type": auto,
              "handle_right_type": auto, "interpolation": enum_value("interpolation", interpolation)}
    defaults = _added_defaults(kp[n0])
    keep = np.ones(n0, dtype=bool) if fresh is None or not len(fresh) else ~near(
        existing, np.sort(np.asarray(fresh, dtype=np.float64)))
    # Blender's handle pass computes a key's automatic handles from its neighbours' points alone, unless the curve
    # smooths its handles together (or is cyclic): then the old keys take part and get their handles back after
    hold = fc.auto_smoothing == "NONE" and not len(fc.modifiers)
    laid = {}
    for attr, width, dtype in KEY_ATTRS:
        default, new = defaults[attr], wanted.get(attr, defaults[attr])
        if attr != "co" and new == default and (old[attr] == default).all():
            continue  # every key holds the default: nothing moves
        after = np.empty((total, width), dtype=dtype)
        after[:n0], after[n0:] = old[attr], new
        laid[attr] = after[where].ravel()
        if not (hold and attr in ("handle_left_type", "handle_right_type")):
            kp.foreach_set(attr, laid[attr])
    if hold:  # the old keys' handles held as they are (Free) through the handle pass, then their types back
        held = np.concatenate([np.where(keep, enum_value("handle_left_type", "FREE"), auto), np.full(n, auto)])
        kp.foreach_set("handle_left_type", held[where].astype(np.uint8))
        kp.foreach_set("handle_right_type", held[where].astype(np.uint8))
        kp.handles_recalc()
        for attr in ("handle_left_type", "handle_right_type"):
            kp.foreach_set(attr, laid[attr] if attr in laid else np.full(total, defaults[attr], dtype=np.uint8))
        return n
    kp.handles_recalc()
    # the old keys' handles back in their places (the handle pass changes no handle type)
    pos = np.empty(total, dtype=np.int64)
    pos[where] = np.arange(total)
    pos = pos[:n0]
    for attr in ("handle_left", "handle_right"):
        buf = bulk_get(kp, attr, total, 2).reshape(total, 2)
        buf[pos[keep]] = old[attr][keep]
        kp.foreach_set(attr, buf.ravel())
    return n


KEY_CURVE = (("co", 2, np.float32), ("handle_left", 2, np.float32), ("handle_right", 2, np.float32),
             ("handle_left_type", 1, np.int32), ("handle_right_type", 1, np.int32), ("interpolation", 1, np.int32),
             ("type", 1, np.int32), ("easing", 1, np.int32))  # what a key gives its curve (and its type)
KEY_STATE = (*KEY_CURVE, ("amplitude", 1, np.float32), ("back", 1, np.float32), ("period", 1, np.float32),
             ("select_control_point", 1, bool), ("select_left_handle", 1, bool),
             ("select_right_handle", 1, bool))  # every setting a key has


class SavedCurves:
    """A channelbag's curves as they are now, every key with every setting, to be put back exactly: a Fill of
    several parts (the body, then each hand) writes a part before it asks for the next, and one that fails later
    must leave the rig as it was, as a failed single part does (nothing written)."""

    def __init__(self, bag):
        self.bag = bag
        self.groups = {g.name for g in bag.groups}
        self.curves = {}
        for fc in bag.fcurves:
            kp = fc.keyframe_points
            n = len(kp)
            self.curves[(fc.data_path, fc.array_index)] = (n, {attr: bulk_get(kp, attr, n, width, dtype)
                                                               for attr, width, dtype in KEY_STATE})

    def restore(self) -> None:
        """Curves made since removed, every other one's keys back (count, order, values, handles, settings), then
        the groups made since, now empty, removed. Nothing is recalculated: the saved handles are the handles."""
        bag = self.bag
        for fc in list(bag.fcurves):
            saved = self.curves.get((fc.data_path, fc.array_index))
            if saved is None:
                bag.fcurves.remove(fc)
                continue
            n, state = saved
            kp = fc.keyframe_points
            if len(kp) != n:
                kp.clear()
                kp.add(n)
            for attr, values in state.items():
                if n:
                    kp.foreach_set(attr, values)
        for group in list(bag.groups):
            if group.name not in self.groups and not len(group.channels):
                bag.groups.remove(group)


def snapshot(bag) -> dict:
    """Every key of every channel, all attributes, for exact comparisons (tests, safety checks)."""
    out = {}
    if bag is None:
        return out
    for fc in bag.fcurves:
        kp = fc.keyframe_points
        n = len(kp)
        keys = {}
        for attr, width, dtype in KEY_CURVE:
            keys[attr] = bulk_get(kp, attr, n, width, dtype).tobytes()
        out[(fc.data_path, fc.array_index)] = keys
    return out

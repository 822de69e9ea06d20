"""Writing filled values as F-curve keys: only at target frames, never touching the animator's keys.

* Values go to the property of the bone's ``rotation_mode``, made continuous with the neighbouring
  values: quaternions stay in the previous key's hemisphere, Euler angles are unwrapped (``to_euler`` with
  a compatible Euler), axis-angle keeps its axis side and angle branch.
* Keys are added in bulk (``keyframe_points.add`` + ``foreach_set``), typed ``GENERATED``, then sorted and
  their handles computed; every key that was there before keeps its exact handles (restored bit for bit).
* Keys Anyfill wrote earlier (``GENERATED``) at a target frame are replaced, so Fill can be run again.
"""

from __future__ import annotations

import array
import math
from collections.abc import Sequence

from mathutils import Euler, Quaternion, Vector

from .keys import EULER_ORDERS, generated_type_value

EPS_FRAME = 1e-3


# --- continuity -------------------------------------------------------------------------------------------


def quaternion_to_mode(q: Quaternion, mode: str, prev: Sequence[float] | None) -> list[float]:
    """``q`` in the values of ``mode``, continuous with ``prev`` (the previous values of that property)."""
    if mode == "QUATERNION":
        if prev is not None and q.dot(Quaternion(prev)) < 0.0:
            q = -q
        return list(q)
    if mode in EULER_ORDERS:
        e = q.to_euler(mode, Euler(prev, mode)) if prev is not None else q.to_euler(mode)
        return list(e)
    # axis-angle: [angle, x, y, z]
    if prev is not None:
        pq = Quaternion(Vector(prev[1:4]).normalized(), prev[0]) if Vector(prev[1:4]).length > 1e-12 else Quaternion()
        if q.dot(pq) < 0.0:
            q = -q
    w = max(-1.0, min(1.0, q.w))
    v = Vector((q.x, q.y, q.z))
    angle = 2.0 * math.atan2(v.length, w)
    axis = v.normalized() if v.length > 1e-12 else (Vector(prev[1:4]) if prev is not None else Vector((0, 1, 0)))
    if prev is not None:
        pa = Vector(prev[1:4])
        if pa.length > 1e-12 and axis.dot(pa) < 0.0:
            axis, angle = -axis, -angle
        angle += 2.0 * math.pi * round((prev[0] - angle) / (2.0 * math.pi))  # the branch nearest prev
    return [angle, axis.x, axis.y, axis.z]


def continuous_track(frames: Sequence[float], new: dict[float, Quaternion], known: dict[float, list[float]],
                     mode: str, rest_values: Sequence[float]) -> dict[float, list[float]]:
    """Values of ``mode`` at the frames of ``new``, continuous along ``frames`` with the known (animator's)
    values on *both* sides of every gap: each gap is walked forward from the key before it and backward from
    the key after it, and the two walks meet where their values are closest, so a curve never leaps on the
    frame before a key that sits on another Euler branch (or quaternion hemisphere, or axis-angle turn)."""
    out: dict[float, list[float]] = {}
    run: list[float] = []
    left: list[float] | None = None
    for f in [*frames, None]:
        if f is not None and f in new and f not in known:
            run.append(f)
            continue
        right = list(known[f]) if f is not None and f in known else None
        if run:
            out.update(_fill_gap(run, new, mode, left, right, rest_values))
            run = []
        if right is not None:
            left = right
    return out


def _fill_gap(run: list[float], new: dict[float, Quaternion], mode: str, left: list[float] | None,
              right: list[float] | None, rest_values: Sequence[float]) -> dict[float, list[float]]:
    """One gap's values: walked from ``left`` and from ``right`` (the neighbouring keys' values, None where
    the gap is open on that side) and joined where the two walks are closest."""
    forward: list[list[float]] = []
    prev = left if left is not None else (None if right is not None else list(rest_values))
    if prev is not None:
        for f in run:
            prev = quaternion_to_mode(new[f], mode, prev)
            forward.append(prev)
    if right is None:
        return dict(zip(run, forward, strict=True))
    backward: list[list[float]] = []
    prev = right
    for f in reversed(run):
        prev = quaternion_to_mode(new[f], mode, prev)
        backward.append(prev)
    backward.reverse()
    if left is None:
        return dict(zip(run, backward, strict=True))

    def step(a: Sequence[float], b: Sequence[float]) -> float:
        return max(abs(x - y) for x, y in zip(a, b, strict=True))

    # split s: forward[:s] + backward[s:]; the jump is between forward[s-1] (or the left key) and backward[s]
    # (or the right key). The walks meet where they come closest (near a gimbal point two Euler branches touch);
    # where they never come close (keys on two branches, quaternion keys in two hemispheres) the switch is
    # made into the right key, so no filled frame is written in a representation away from its neighbour.
    jumps = [step(forward[s - 1] if s else left, backward[s] if s < len(run) else right) for s in range(len(run) + 1)]
    best = min(range(len(run) + 1), key=lambda s: (jumps[s], -s))
    if jumps[best] >= math.pi / 4:
        best = len(run)
    return dict(zip(run, forward[:best] + backward[best:], strict=True))


# --- bulk key writing -------------------------------------------------------------------------------------

_HANDLE_ENUMS: dict[str, int] = {}


def _enum(prop: str, name: str) -> int:
    key = f"{prop}:{name}"
    if key not in _HANDLE_ENUMS:
        import bpy

        _HANDLE_ENUMS[key] = bpy.types.Keyframe.bl_rna.properties[prop].enum_items[name].value
    return _HANDLE_ENUMS[key]


def _read(kp, attr: str, n: int, width: int, typecode: str = "f") -> array.array:
    buf = array.array(typecode, [0]) * (n * width)
    if n:
        kp.foreach_get(attr, buf)
    return buf


def new_fcurve(bag, data_path: str, index: int, group: str):
    """A new channel in the bone's group. Blender 4.5+ groups it in ``fcurves.new``; 4.4 takes no group there,
    so the group is found or made and assigned."""
    if "group_name" in bag.fcurves.bl_rna.functions["new"].parameters:
        return bag.fcurves.new(data_path, index=index, group_name=group)
    fc = bag.fcurves.new(data_path, index=index)
    fc.group = bag.groups.get(group) or bag.groups.new(group)
    return fc


def write_keys(bag, data_path: str, index: int, group: str, frames: Sequence[float], values: Sequence[float],
               interpolation: str = "BEZIER") -> int:
    """Add keys (frame, value) to one channel, typed GENERATED. Existing GENERATED keys at those frames are
    replaced; a frame holding another key is skipped (the animator's key wins). The other keys and their
    handles are left exactly as they were. Returns the number of keys written."""
    fc = bag.fcurves.find(data_path, index=index)
    if fc is None:
        fc = new_fcurve(bag, data_path, index, group)
    kp = fc.keyframe_points
    gen = generated_type_value()
    n0 = len(kp)
    co = _read(kp, "co", n0, 2)
    types = _read(kp, "type", n0, 1, "i")
    existing = co[0::2]
    targets = sorted(zip(frames, values, strict=True))
    # drop our own earlier keys at the target frames (reverse order, so indices stay valid)
    if n0 and targets:
        tf = [f for f, _ in targets]
        stale = [i for i in range(n0) if types[i] == gen and _near(existing[i], tf)]
        for i in reversed(stale):
            kp.remove(kp[i], fast=True)
        if stale:
            n0 = len(kp)
            co = _read(kp, "co", n0, 2)
            existing = co[0::2]
    taken = sorted(existing)
    targets = [(f, v) for f, v in targets if not _near(f, taken)]
    if not targets:
        return 0
    # remember every existing key's handles (and handle types) to restore them after the handle pass
    hl, hr = _read(kp, "handle_left", n0, 2), _read(kp, "handle_right", n0, 2)
    hlt, hrt = _read(kp, "handle_left_type", n0, 1, "i"), _read(kp, "handle_right_type", n0, 1, "i")
    n = len(targets)
    kp.add(n)
    total = n0 + n
    co_all = _read(kp, "co", total, 2)
    for k, (f, v) in enumerate(targets):
        co_all[2 * (n0 + k)] = f
        co_all[2 * (n0 + k) + 1] = v
    kp.foreach_set("co", co_all)
    for attr, value in (("type", gen), ("interpolation", _enum("interpolation", interpolation)),
                        ("handle_left_type", _enum("handle_left_type", "AUTO_CLAMPED")),
                        ("handle_right_type", _enum("handle_right_type", "AUTO_CLAMPED"))):
        buf = _read(kp, attr, total, 1, "i")
        for k in range(n0, total):
            buf[k] = value
        kp.foreach_set(attr, buf)
    both = _read(kp, "handle_left", total, 2)
    for k in range(n0, total):  # start the new handles on their key; handles_recalc places them
        both[2 * k], both[2 * k + 1] = co_all[2 * k], co_all[2 * k + 1]
    kp.foreach_set("handle_left", both)
    kp.foreach_set("handle_right", both)
    kp.sort()
    kp.handles_recalc()
    # where did the old keys go? merge order of (frame, is_new); frames never coincide
    order = sorted([(existing[i], 0, i) for i in range(n0)] + [(f, 1, k) for k, (f, _) in enumerate(targets)])
    new_index = {i: pos for pos, (_, is_new, i) in enumerate(order) if not is_new}
    for attr, saved, width in (("handle_left", hl, 2), ("handle_right", hr, 2), ("handle_left_type", hlt, 1),
                               ("handle_right_type", hrt, 1)):
        buf = _read(kp, attr, total, width, "f" if width == 2 else "i")
        for i, pos in new_index.items():
            for w in range(width):
                buf[width * pos + w] = saved[width * i + w]
        kp.foreach_set(attr, buf)
    return n


def _near(f: float, frames: Sequence[float]) -> bool:
    """Whether ``f`` is within EPS_FRAME of a frame of the sorted list ``frames``."""
    import bisect

    i = bisect.bisect_left(frames, f - EPS_FRAME)
    return i < len(frames) and abs(frames[i] - f) <= EPS_FRAME


def snapshot(bag) -> dict:
    """Every key of every channel, all attributes, for exact comparisons (tests, safety checks)."""
    out = {}
    if bag is None:
        return out
    for fc in bag.fcurves:
        kp = fc.keyframe_points
        n = len(kp)
        keys = {}
        for attr, width, code in (("co", 2, "f"), ("handle_left", 2, "f"), ("handle_right", 2, "f"),
                                  ("handle_left_type", 1, "i"), ("handle_right_type", 1, "i"),
                                  ("interpolation", 1, "i"), ("type", 1, "i"), ("easing", 1, "i")):
            keys[attr] = _read(kp, attr, n, width, code).tobytes()
        out[(fc.data_path, fc.array_index)] = keys
    return out

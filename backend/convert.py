"""Rotation formats of the API in and out, per request and per joint, on top of :mod:`training.rotations`.

In: rows of values in a :data:`~.schemas.RotationFormat` -> unit quaternions ``(x, y, z, w)`` (the
engine's convention), with errors that say which row is wrong. Out: a joint's quaternion curve ->
values in the format, continuous in time: filled stretches are unwrapped starting from the neighbouring
*known* value (quaternion hemisphere, Euler 2*pi shifts and the flipped triple, axis-angle turns), so a
written F-curve has no jumps at the seams, and known cells are returned exactly as they were given.
"""

from __future__ import annotations

import numpy as np

from backend.schemas import AxisAngleFormat, EulerFormat, QuaternionFormat, RotationFormat, RotationVectorFormat
from training.motion.rotations import (
    axis_angle_to_quat,
    euler_make_continuous,
    euler_to_quat,
    quat_continuous,
    quat_to_euler,
    quat_to_rotvec_as_is,
)

QUAT_TOLERANCE = 1e-3  # |norm - 1| accepted (and normalised) without ``normalize_quaternions``


class BadValue(ValueError):
    """A row that is not a valid rotation in its format; ``row`` indexes the rows given."""

    def __init__(self, row: int, message: str):
        super().__init__(message)
        self.row = row


def width(fmt: RotationFormat) -> int:
    """Numbers per rotation."""
    return 4 if isinstance(fmt, QuaternionFormat | AxisAngleFormat) else 3


def bvh_order(fmt: EulerFormat) -> str:
    """The intrinsic (BVH-named) order of an Euler format: Blender's ``XYZ`` is R = Rz·Ry·Rx, BVH ``ZYX``."""
    return fmt.order if fmt.convention == "bvh" else fmt.order[::-1]


def _perm(order: str) -> list[int]:
    return ["XYZ".index(a) for a in order]


def _radians(values: np.ndarray, units: str) -> np.ndarray:
    return np.deg2rad(values) if units == "degrees" else values


def _from_radians(values: np.ndarray, units: str) -> np.ndarray:
    return np.rad2deg(values) if units == "degrees" else values


def to_quat(values: np.ndarray, fmt: RotationFormat, normalize: bool = False) -> np.ndarray:
    """Rows (N, width) in ``fmt`` -> unit quaternions (N, 4) (x, y, z, w). The hemisphere of a given
    quaternion (and the turn of an axis-angle beyond pi) is kept, so output curves continue from it."""
    v = np.asarray(values, dtype=np.float64).reshape(-1, width(fmt))
    if isinstance(fmt, QuaternionFormat):
        q = v[:, [1, 2, 3, 0]] if fmt.layout == "wxyz" else v.copy()
        norm = np.linalg.norm(q, axis=-1)
        for i in np.flatnonzero(norm < 1e-6):
            raise BadValue(int(i), "zero quaternion")
        if not normalize:
            for i in np.flatnonzero(np.abs(norm - 1.0) > QUAT_TOLERANCE):
                raise BadValue(int(i), f"quaternion of norm {norm[i]:.6g} is not a unit quaternion "
                               "(set normalize_quaternions to accept it)")
        return q / norm[:, None]
    if isinstance(fmt, EulerFormat):
        order = bvh_order(fmt)
        return euler_to_quat(v[:, _perm(order)], order, degrees=fmt.units == "degrees")
    if isinstance(fmt, AxisAngleFormat):
        angle, axis = _radians(v[:, 0], fmt.units), v[:, 1:]
        norm = np.linalg.norm(axis, axis=-1)
        for i in np.flatnonzero((norm < 1e-9) & (np.abs(angle) > 0)):
            raise BadValue(int(i), "axis-angle with a zero axis and a non-zero angle")
        unit = axis / np.where(norm < 1e-9, 1.0, norm)[:, None]
        return axis_angle_to_quat(unit * angle[:, None])
    return axis_angle_to_quat(_radians(v, fmt.units))


def _fill_axes(axis: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Axes (L, G, 3), NaN where the angle is zero: each such row takes its neighbour's axis within its
    stretch of unknown rows (the one before, else the one after; then Blender's default, +Y), so the curve
    does not jump."""
    n = len(axis)
    rows = np.arange(n).reshape((n,) + (1,) * (axis.ndim - 2))
    brk = (known | ~known & np.concatenate([[True], known[:-1]])).reshape(rows.shape)  # stretch starts
    missing = np.isnan(axis[..., 0])
    src = np.maximum.accumulate(np.where(~missing | brk, rows, 0), axis=0)
    axis = np.where(missing[..., None], np.take_along_axis(axis, src[..., None], axis=0), axis)
    missing = np.isnan(axis[..., 0])
    brk = (known | ~known & np.concatenate([known[1:], [True]])).reshape(rows.shape)  # stretch ends
    src = np.minimum.accumulate(np.where(~missing | brk, rows, n - 1)[::-1], axis=0)[::-1]
    axis = np.where(missing[..., None], np.take_along_axis(axis, src[..., None], axis=0), axis)
    missing = np.isnan(axis[..., 0])
    return np.where(missing[..., None], [0.0, 1.0, 0.0], axis)


def _continue(fmt: RotationFormat, given: np.ndarray, q: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Values (L, G, width) for the quaternion curves q (L, G, 4) whose rows ``known`` (L,) hold the given
    values (L, G, width): every other row continues from the known row before it; a first row that is not
    known starts from a canonical value. One pass over the whole curve, whatever the number of stretches."""
    if isinstance(fmt, EulerFormat):
        order = bvh_order(fmt)
        perm = _perm(order)
        deg = fmt.units == "degrees"
        e = quat_to_euler(q, order, degrees=deg)
        e[known] = given[known][..., perm]
        e = euler_make_continuous(e, order, degrees=deg, anchors=known)
        out = np.empty_like(e)
        out[..., perm] = e
        return out
    qq = np.array(q, dtype=np.float64)
    if known.any():
        qq[known] = to_quat(given[known].reshape(-1, width(fmt)), fmt, normalize=True).reshape(qq[known].shape)
    if not known[0]:
        qq[0] = np.where(qq[0, ..., 3:] < 0, -qq[0], qq[0])
    qc = quat_continuous(qq, axis=0, anchors=known)
    if isinstance(fmt, QuaternionFormat):
        return qc[..., [3, 0, 1, 2]] if fmt.layout == "wxyz" else qc
    rv = quat_to_rotvec_as_is(qc)
    if isinstance(fmt, RotationVectorFormat):
        return _from_radians(rv, fmt.units)
    angle = np.linalg.norm(rv, axis=-1, keepdims=True)
    axis = _fill_axes(np.where(angle > 1e-9, rv / np.maximum(angle, 1e-12), np.nan), known)
    sign = _axis_signs(axis, given, known)
    return np.concatenate([_from_radians(sign * angle, fmt.units), sign * axis], axis=-1)


def _axis_signs(axis: np.ndarray, given: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(L, G, 1) signs for axis-angle rows: ``(a, v)`` and ``(-a, -v)`` are one rotation, and a key sent as -90
    degrees about +X must not be followed by frames of +90 about -X (every channel would jump). A known row takes
    the sign that matches its given axis; each other row keeps the sign of the row before it, flipped where its
    axis turns against that row's (the axes of :func:`_fill_axes` are continuous but for such flips)."""
    n = len(axis)
    flips = np.ones(axis.shape[:-1] + (1,))
    flips[1:] = np.where(np.sum(axis[1:] * axis[:-1], axis=-1, keepdims=True) < 0, -1.0, 1.0)
    chain = np.cumprod(flips, axis=0)  # the sign each row needs to continue from row 0's
    rows = np.arange(n).reshape((n,) + (1,) * (axis.ndim - 1))
    anchor = np.maximum.accumulate(np.where(known.reshape(rows.shape), rows, 0), axis=0)  # the known row before
    own = np.where(np.sum(axis * given[..., 1:], axis=-1, keepdims=True) < 0, -1.0, 1.0)  # at known rows
    at_anchor = np.take_along_axis(own * chain, np.broadcast_to(anchor, chain.shape), axis=0)
    return at_anchor * chain


def encode_track(q: np.ndarray, fmt: RotationFormat, given: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Curves q (T, ..., 4) that share one known mask (T,) -> values (T, ..., width) in ``fmt``: known rows
    are ``given`` unchanged; each stretch of other rows continues from the known value before it (after
    it, for a leading stretch). Two vectorised passes at most (the leading stretch backwards, the rest)."""
    known = np.asarray(known, dtype=bool)
    out = np.full((*q.shape[:-1], width(fmt)), np.nan)
    first = int(np.argmax(known)) if known.any() else 0
    if first > 0:
        lead = slice(first, None, -1)  # rows first, first - 1, ..., 0
        out[lead] = _continue(fmt, given[lead], q[lead], known[lead])
    out[first:] = _continue(fmt, given[first:], q[first:], known[first:])
    out[known] = given[known]
    return out

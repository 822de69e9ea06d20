"""Rotation conventions and conversions, in one place.

Inside anyfill a rotation is a unit quaternion stored scalar-last ``(x, y, z, w)``, the convention of
``scipy.spatial.transform.Rotation``; the network sees the 6D representation (the first two columns of
the rotation matrix, Zhou et al. 2019); Euler angles (any of the six orders, degrees) and axis-angle
exist only at the edges (BVH files, Blender F-curves, the HTTP API).

Curves are made continuous when converted: quaternions stay in one hemisphere from frame to frame, and
Euler angles are unwrapped (including the equivalent "flipped" solution) so that a written F-curve has
no 360-degree jumps. All functions take arrays with arbitrary leading dimensions.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")
"""Intrinsic orders: ``"ZXY"`` means R = Rz @ Rx @ Ry, i.e. BVH channels ``Zrotation Xrotation Yrotation``
and Blender's ``rotation_mode`` ``'YXZ'`` (Blender names the order in which the axes are applied)."""


def _check_order(order: str) -> str:
    order = order.upper()
    if order not in EULER_ORDERS:
        raise ValueError(f"unknown Euler order {order!r}; expected one of {', '.join(EULER_ORDERS)}")
    return order


def _flat(a: np.ndarray, last: int | tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    a = np.asarray(a, dtype=np.float64)
    tail = (last,) if isinstance(last, int) else last
    if a.shape[a.ndim - len(tail) :] != tail:
        raise ValueError(f"expected trailing shape {tail}, got array of shape {a.shape}")
    lead = a.shape[: a.ndim - len(tail)]
    return a.reshape((-1, *tail)), lead


# --- quaternion algebra ---------------------------------------------------------------------------


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot products over the last axis (broadcasting the others), without it: ``einsum``, several times faster than
    ``(a * b).sum(-1)`` or ``np.linalg.norm`` over the 3 or 4 components of a window's cells."""
    return np.einsum("...i,...i->...", a, b)


def vector_norm(x: np.ndarray) -> np.ndarray:
    """Euclidean lengths over the last axis, kept as an axis of 1 (``np.linalg.norm(x, axis=-1, keepdims=True)``)."""
    return np.sqrt(dot(x, x))[..., None]


def quat_identity(shape: tuple[int, ...] = ()) -> np.ndarray:
    q = np.zeros((*shape, 4))
    q[..., 3] = 1.0
    return q


def quat_normalize(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    n = vector_norm(q)
    if np.any(n < 1e-12):
        raise ValueError("cannot normalise a zero quaternion")
    return q / n


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b (apply b, then a), broadcasting over leading dimensions."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ax, ay, az, aw = a[..., 0], a[..., 1], a[..., 2], a[..., 3]  # the products broadcast the leading dimensions
    bx, by, bz, bw = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        axis=-1,
    )


def quat_conj(q: np.ndarray) -> np.ndarray:
    q = np.array(q, dtype=np.float64, copy=True)
    q[..., :3] *= -1.0
    return q


def quat_apply(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors v (..., 3) by unit quaternions q (..., 4)."""
    q, v = np.asarray(q, dtype=np.float64), np.asarray(v, dtype=np.float64)
    u, w = q[..., :3], q[..., 3:]
    t = 2.0 * _cross(u, v)
    return v + w * t + _cross(u, t)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.cross`` of (..., 3) arrays, the same arithmetic without its axis handling (several times faster on
    the small arrays of a fill)."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


def quat_align(q: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Flip each quaternion of q into the hemisphere of the matching reference quaternion."""
    q = np.asarray(q, dtype=np.float64)
    return np.where(dot(q, np.asarray(reference, dtype=np.float64))[..., None] < 0.0, -q, q)


def _since_anchor(anchors: np.ndarray | None, n: int) -> np.ndarray:
    """For each of n samples, the index of the last anchor at or before it (sample 0 always counts as one)."""
    mark = np.zeros(n, dtype=bool) if anchors is None else np.asarray(anchors, dtype=bool).copy()
    mark[0] = True
    return np.maximum.accumulate(np.where(mark, np.arange(n), 0))


def quat_continuous(q: np.ndarray, axis: int = 0, anchors: np.ndarray | None = None) -> np.ndarray:
    """Keep a quaternion curve in one hemisphere from sample to sample along ``axis`` (no sign jumps).
    ``anchors`` (one flag per sample along ``axis``): samples kept exactly as they are; the samples after
    one continue from it."""
    q = np.moveaxis(np.asarray(q, dtype=np.float64), axis, 0)
    if q.shape[0] < 2:
        return np.moveaxis(q.copy(), 0, axis)
    dots = np.sum(q[1:] * q[:-1], axis=-1)
    flips = np.concatenate([np.ones((1, *dots.shape[1:])), np.where(dots < 0.0, -1.0, 1.0)], axis=0)
    signs = np.cumprod(flips, axis=0)
    if anchors is not None:
        signs = signs * signs[_since_anchor(anchors, q.shape[0])]  # +-1: a sign is its own inverse
    return np.moveaxis(q * signs[..., None], 0, axis)


def quat_slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Spherical linear interpolation along the shorter arc; t broadcasts against q0[..., 0]."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = quat_align(q1, q0)
    t = np.asarray(t, dtype=np.float64)[..., None]
    theta = np.arccos(np.clip(dot(q0, q1), -1.0, 1.0)[..., None])
    sin = np.sin(theta)
    small = sin < 1e-6
    safe = np.where(small, 1.0, sin)
    w0 = np.where(small, 1.0 - t, np.sin((1.0 - t) * theta) / safe)
    w1 = np.where(small, t, np.sin(t * theta) / safe)
    return quat_normalize(w0 * q0 + w1 * q1)


def quat_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle in radians between two rotations."""
    dot = np.abs(np.sum(np.asarray(a) * np.asarray(b), axis=-1))
    return 2.0 * np.arccos(np.clip(dot, 0.0, 1.0))


# --- conversions ------------------------------------------------------------------------------------


def euler_to_quat(angles: np.ndarray, order: str, degrees: bool = True) -> np.ndarray:
    """Intrinsic Euler angles (..., 3), listed in the order's axis order, to quaternions (..., 4)."""
    order = _check_order(order)
    flat, lead = _flat(angles, 3)
    q = Rotation.from_euler(order, flat, degrees=degrees).as_quat()
    return q.reshape((*lead, 4))


def _euler_flip(e: np.ndarray) -> np.ndarray:
    """The other triple that gives the same rotation in any Tait-Bryan order: (a+pi, pi-b, c+pi)."""
    f = e.copy()
    f[..., 0] += np.pi
    f[..., 1] = np.pi - f[..., 1]
    f[..., 2] += np.pi
    return f


def _wrap_near(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return a - 2.0 * np.pi * np.round((a - ref) / (2.0 * np.pi))


def euler_make_continuous(angles: np.ndarray, order: str, axis: int = 0, degrees: bool = True,
                          anchors: np.ndarray | None = None) -> np.ndarray:
    """Unwrap an Euler curve along ``axis``: each sample takes, among its 2*pi shifts and the flipped
    equivalent triple, the one closest to the previous sample (what Blender's ``make_compatible`` does).
    ``anchors`` (one flag per sample along ``axis``): samples kept exactly as they are (an animator's
    keys); the samples after one continue from it.

    Vectorised: whether a sample takes the flipped triple depends only on whether the previous one did
    (distances after the 2*pi shift do not depend on the shift), so each step is one of four maps of a
    bit, composed over the whole curve by a prefix scan (log2 T array steps); the 2*pi shifts then add up
    as a cumulative sum of whole turns."""
    _check_order(order)
    e = np.moveaxis(np.asarray(angles, dtype=np.float64), axis, 0)
    e = np.deg2rad(e) if degrees else e.copy()
    if e.shape[0] > 1:
        f = _euler_flip(e)

        def flips_after(prev: np.ndarray) -> np.ndarray:  # does sample i take its flip after ``prev`` = i - 1
            da = np.sum((_wrap_near(e[1:], prev) - prev) ** 2, axis=-1)
            db = np.sum((_wrap_near(f[1:], prev) - prev) ** 2, axis=-1)
            return db < da - 1e-9

        # map of step i: (flip taken if the previous sample was not flipped, ... if it was)
        p0, p1 = flips_after(e[:-1]), flips_after(f[:-1])
        if anchors is not None:  # an anchor is never flipped, whatever came before it
            keep = np.asarray(anchors, dtype=bool)[1:].reshape((-1,) + (1,) * (p0.ndim - 1))
            p0, p1 = p0 & ~keep, p1 & ~keep
        k = 1
        while k < len(p0):  # prefix scan: p[i] becomes step i composed with every step before it
            g0, g1, f0, f1 = p0[:-k], p1[:-k], p0[k:], p1[k:]
            p0, p1 = (np.concatenate([p0[:k], np.where(g0, f1, f0)]),
                      np.concatenate([p1[:k], np.where(g1, f1, f0)]))
            k *= 2
        flipped = np.concatenate([np.zeros((1, *p0.shape[1:]), dtype=bool), p0])  # the first sample stays
        x = np.where(flipped[..., None], f, e)
        turns = np.concatenate([np.zeros((1, *x.shape[1:])),
                                np.cumsum(np.round((x[1:] - x[:-1]) / (2.0 * np.pi)), axis=0)])
        if anchors is not None:  # whole turns counted from the last anchor, which keeps its own value
            turns = turns - turns[_since_anchor(anchors, x.shape[0])]
        x = x - 2.0 * np.pi * turns
        e = x
    if degrees:
        e = np.rad2deg(e)
    return np.moveaxis(e, 0, axis)


def quat_to_euler(
    q: np.ndarray, order: str, degrees: bool = True, continuous_axis: int | None = None
) -> np.ndarray:
    """Quaternions (..., 4) to intrinsic Euler angles (..., 3); with ``continuous_axis`` the result is
    unwrapped along that axis (a time axis), so it can be written as an F-curve without jumps."""
    order = _check_order(order)
    flat, lead = _flat(q, 4)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # gimbal lock: scipy picks a valid triple anyway
        e = Rotation.from_quat(flat).as_euler(order, degrees=degrees).reshape((*lead, 3))
    if continuous_axis is not None:
        e = euler_make_continuous(e, order, axis=continuous_axis, degrees=degrees)
    return e


def quat_to_axis_angle(q: np.ndarray, continuous_axis: int | None = None) -> np.ndarray:
    """Quaternions to rotation vectors (axis * angle, radians). With ``continuous_axis`` the quaternion
    curve is first made continuous, so angles may exceed pi instead of flipping the axis."""
    q = np.asarray(q, dtype=np.float64)
    # a continuous curve may leave w >= 0 (angles above pi); a single rotation takes the short way
    q = quat_continuous(q, axis=continuous_axis) if continuous_axis is not None else np.where(q[..., 3:] < 0, -q, q)
    return quat_to_rotvec_as_is(q)


def quat_to_rotvec_as_is(q: np.ndarray) -> np.ndarray:
    """Rotation vectors of quaternions taken as they are: a quaternion with w < 0 gives an angle above pi (a
    curve already made continuous keeps its turns)."""
    q = np.asarray(q, dtype=np.float64)
    v = q[..., :3]
    s = vector_norm(v)
    angle = 2.0 * np.arctan2(s, q[..., 3:])
    small = s < 1e-9
    # angle / s -> 2 / w as s -> 0 (first-order expansion), so tiny rotations stay exact
    scale = np.where(small, 2.0 / q[..., 3:], angle / np.where(small, 1.0, s))
    return v * scale


def axis_angle_to_quat(rotvec: np.ndarray) -> np.ndarray:
    flat, lead = _flat(rotvec, 3)
    return Rotation.from_rotvec(flat).as_quat().reshape((*lead, 4))


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    flat, lead = _flat(q, 4)
    return Rotation.from_quat(flat).as_matrix().reshape((*lead, 3, 3))


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    flat, lead = _flat(m, (3, 3))
    return Rotation.from_matrix(flat).as_quat().reshape((*lead, 4))


def quat_to_6d(q: np.ndarray) -> np.ndarray:
    """The 6D representation: the first two columns of the rotation matrix, concatenated (written out: this
    runs on every cell of every batch and sampling step, and scipy's per-call set-up costs more than the maths)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / vector_norm(q)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y + w * z), 2 * (x * z - w * y),
                     2 * (x * y - w * z), 1 - 2 * (x * x + z * z), 2 * (y * z + w * x)], axis=-1)


def sixd_to_matrix(d6: np.ndarray) -> np.ndarray:
    """Gram-Schmidt the two columns back into a rotation matrix."""
    d6 = np.asarray(d6, dtype=np.float64)
    a, b = d6[..., :3], d6[..., 3:]
    x = a / vector_norm(a)
    b = b - dot(x, b)[..., None] * x
    y = b / vector_norm(b)
    return np.stack([x, y, _cross(x, y)], axis=-1)


def sixd_to_quat(d6: np.ndarray) -> np.ndarray:
    # Gram-Schmidt already gives a rotation matrix: scipy need not project it again (13x faster on a frame)
    flat, lead = _flat(sixd_to_matrix(d6), (3, 3))
    return Rotation.from_matrix(flat, assume_valid=True).as_quat().reshape((*lead, 4))


def quat_mirror_x(q: np.ndarray) -> np.ndarray:
    """Reflect rotations through the YZ plane (x -> -x): R' = M R M with M = diag(-1, 1, 1)."""
    q = np.array(q, dtype=np.float64, copy=True)
    q[..., 1] *= -1.0
    q[..., 2] *= -1.0
    return q

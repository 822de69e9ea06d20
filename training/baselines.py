"""Non-learned fill methods: the benchmark's baselines, and what a learned model has to beat.

A fill method takes local motion with unknown frames (``known[t]`` False, values NaN) and returns the
motion with every frame filled; known frames come back unchanged.
"""

from __future__ import annotations

import numpy as np

from .rotations import quat_slerp


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


def zero_velocity(rotations: np.ndarray, translations: np.ndarray, known: np.ndarray):
    """Hold the last known frame (the first known one before any key)."""
    prev, _ = _neighbours(known)
    return rotations[:, prev].copy(), translations[:, prev].copy()


def interpolate(rotations: np.ndarray, translations: np.ndarray, known: np.ndarray):
    """Slerp every local rotation and lerp every translation between the surrounding known frames.
    Arrays are (N, T, J, 4) and (N, T, J, 3); ``known`` is (T,)."""
    prev, nxt = _neighbours(known)
    span = np.maximum(nxt - prev, 1)
    t = (np.arange(len(prev)) - prev) / span
    rot = quat_slerp(rotations[:, prev], rotations[:, nxt], np.broadcast_to(t[None, :, None], rotations.shape[:3]))
    w = t[None, :, None, None]
    trans = translations[:, prev] * (1.0 - w) + translations[:, nxt] * w
    k = np.asarray(known, dtype=bool)
    rot[:, k], trans[:, k] = rotations[:, k], translations[:, k]
    return rot, trans


BASELINES = {"zero": zero_velocity, "interp": interpolate}

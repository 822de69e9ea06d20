"""What a fill writes: a key on every filled frame (dense), or editable curves with keys only where needed.

Editable output puts keys where Blender's own curves need them to stay within a tolerance of the dense fill:
each bone's rotation channels share their key frames (as an animator keys a pose), its location channels too.
The keys are Bezier with Auto Clamped handles, so moving or retiming one reshapes its neighbours as animators
expect. The reduction is greedy and measured on the real curves: start from the animator's keys alone (the
curve Blender draws through them), evaluate the written F-curves at every filled frame (:mod:`.fcurves`, what
``fcurve.evaluate`` gives), and in every stretch between two keys that strays past the tolerance key the frame
that strays most; write, let Blender compute the handles, measure again, until every filled frame is within the
tolerance (rotations: the angle between the curve's rotation and the fill's, any mode; locations: the distance).
The animator's keys keep their values and handles exactly (see :func:`.curves.write_keys`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import curves, fcurves, retarget


@dataclass
class Track:
    """One bone property to write: its channels' dense fill at the target frames."""

    bone: str
    path: str  # the property's data path (rotation_* of ``mode``, or location)
    mode: str  # the rotation mode, or "LOCATION"
    frames: np.ndarray  # (n,) sorted target frames
    values: np.ndarray  # (n, width) the dense fill there, continuous with the keys
    keyed: np.ndarray  # the bone's keyed frames (sorted): where the animator's curve is pinned
    static: tuple  # the property's current values (a channel without keys holds them)
    chosen: np.ndarray = field(default_factory=lambda: np.zeros(0))  # frames keyed by this fill so far
    quats: np.ndarray | None = None  # the dense fill's rotations (n, 4), once measured

    @property
    def width(self) -> int:
        return self.values.shape[1]


@dataclass
class Written:
    """What a fill wrote, for the report and the panel."""

    keys: int = 0
    dense_keys: int = 0  # what a key on every filled frame would have written
    editable: bool = False
    max_rotation_deg: float = 0.0  # largest deviation from the dense fill (editable), degrees
    max_location: float = 0.0  # the same for locations, in the rig's units
    seconds: dict[str, float] = field(default_factory=dict)  # how long each stage of writing took

    def add(self, other: Written) -> Written:
        return Written(self.keys + other.keys, self.dense_keys + other.dense_keys, self.editable or other.editable,
                       max(self.max_rotation_deg, other.max_rotation_deg), max(self.max_location, other.max_location))


def write_dense(bag, tracks: list[Track]) -> Written:
    """A key on every target frame of every channel."""
    n = 0
    for t in tracks:
        for c in range(t.width):
            n += curves.write_keys(bag, t.path, c, t.bone, t.frames, t.values[:, c])
    return Written(n, sum(len(t.frames) * t.width for t in tracks))


def deviation(bag, t: Track) -> np.ndarray:
    """(n,) how far the track's F-curves, as written now, are from its dense fill at the target frames: the
    rotation angle (radians) or the distance (rig units)."""
    found = [bag.fcurves.find(t.path, index=c) for c in range(t.width)]
    live = [c for c, fc in enumerate(found) if fc is not None and len(fc.keyframe_points)]
    now = np.broadcast_to(np.asarray(t.static, dtype=np.float64), t.values.shape).copy()
    if live:
        now[:, live] = fcurves.evaluate([found[c] for c in live], t.frames).T
    if t.mode == "LOCATION":
        return np.linalg.norm(now - t.values, axis=1)
    if t.quats is None:
        t.quats = retarget.mode_to_quat(t.values, t.mode)
    dot = np.abs((retarget.mode_to_quat(now, t.mode) * t.quats).sum(-1))
    dot = np.minimum(dot, 1.0)
    return 2.0 * np.arctan2(np.sqrt(1.0 - dot * dot), dot)


def worst_frames(t: Track, err: np.ndarray, tolerance: float) -> np.ndarray:
    """Frames to key next: in each stretch between two keys (the animator's or this fill's) whose deviation
    passes the tolerance, the frame that deviates most."""
    err = np.where(curves.near(t.frames, t.chosen), 0.0, err)
    bad = err > tolerance
    if not bad.any():
        return np.zeros(0)
    knots = np.union1d(t.keyed, t.chosen)
    seg = np.searchsorted(knots, t.frames)  # stretch of each target frame (frames are sorted, so stretches are runs)
    first = np.concatenate([[True], seg[1:] != seg[:-1]])
    starts = np.flatnonzero(first)
    worst = np.maximum.reduceat(err, starts)
    seg_of = np.cumsum(first) - 1
    first_worst = np.minimum.reduceat(np.where(err == worst[seg_of], np.arange(len(err)), len(err)), starts)
    return t.frames[first_worst[worst > tolerance]]


def write_editable(bag, tracks: list[Track], rotation_tolerance: float, location_tolerance: float,
                   max_rounds: int = 200) -> Written:
    """Keys only where needed (see the module docstring); tolerances in radians and rig units."""
    for t in tracks:  # Anyfill's keys of an earlier fill on these frames go first: the animator's curve is the start
        for c in range(t.width):
            fc = bag.fcurves.find(t.path, index=c)
            if fc is not None:
                curves.clear_generated(fc, t.frames)
        t.chosen = np.zeros(0)
    errors = {id(t): deviation(bag, t) for t in tracks}
    written = 0

    def key(t: Track, new: np.ndarray) -> None:
        nonlocal written
        rows = np.searchsorted(t.frames, new)
        for c in range(t.width):
            written += curves.write_keys(bag, t.path, c, t.bone, new, t.values[rows, c], fresh=t.chosen)
        t.chosen = np.union1d(t.chosen, new)
        errors[id(t)] = deviation(bag, t)

    pending = list(tracks)
    for _ in range(max_rounds):
        step = []
        for t in pending:
            tolerance = location_tolerance if t.mode == "LOCATION" else rotation_tolerance
            new = worst_frames(t, errors[id(t)], tolerance)
            if len(new):
                step.append((t, new))
        for t, new in step:
            key(t, new)
        pending = [t for t, _ in step]
        if not pending:
            break
    for t in pending:  # never seen on a real fill: what is still off gets a key on every frame
        key(t, t.frames[~curves.near(t.frames, t.chosen)])
    rot = [errors[id(t)].max(initial=0.0) for t in tracks if t.mode != "LOCATION"]
    loc = [errors[id(t)].max(initial=0.0) for t in tracks if t.mode == "LOCATION"]
    return Written(written, sum(len(t.frames) * t.width for t in tracks), True,
                   float(np.degrees(max(rot, default=0.0))), float(max(loc, default=0.0)))

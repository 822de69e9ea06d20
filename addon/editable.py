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
    locked: tuple[int, ...] = ()  # channels the animator locked: never written (see skip_locked)
    muted: tuple[int, ...] = ()  # channels whose curve the animator muted: never written (see skip_muted)
    held: tuple[int, ...] = ()  # channels the bone itself locks (a Rigify IK twist control's X and Z): not written

    @property
    def width(self) -> int:
        return self.values.shape[1]

    @property
    def channels(self) -> list[int]:
        """The channels (array indices) this track writes."""
        return [c for c in range(self.width) if c not in self.locked and c not in self.muted and c not in self.held]


@dataclass
class Written:
    """What a fill wrote, for the report and the panel."""

    keys: int = 0
    dense_keys: int = 0  # what a key on every filled frame would have written
    editable: bool = False
    max_rotation_deg: float = 0.0  # largest deviation from the dense fill (editable), degrees
    max_location: float = 0.0  # the same for locations, in the rig's units
    locked: int = 0  # channels not written because the animator locked them
    seconds: dict[str, float] = field(default_factory=dict)  # how long each stage of writing took
    muted: list[str] = field(default_factory=list)  # channels left because their curve is muted (report's names)
    limbs: list[str] = field(default_factory=list)  # Rigify limbs in IK written through their IK controls too
    limb_error: float = 0.0  # the largest distance of such a limb's IK joints from their FK places (rig units)

    def add(self, other: Written) -> Written:
        return Written(self.keys + other.keys, self.dense_keys + other.dense_keys, self.editable or other.editable,
                       max(self.max_rotation_deg, other.max_rotation_deg), max(self.max_location, other.max_location),
                       self.locked + other.locked, muted=list(dict.fromkeys(self.muted + other.muted)),
                       limbs=list(dict.fromkeys(self.limbs + other.limbs)),
                       limb_error=max(self.limb_error, other.limb_error))


def is_locked(bag, path: str, index: int, group: str) -> bool:
    """Whether Blender's own keying would refuse the channel: the F-curve, or the bone's channel group, locked
    (``BKE_fcurve_is_protected``; a channel not made yet is refused when its group is locked)."""
    fc = bag.fcurves.find(path, index=index) if bag is not None else None
    grp = fc.group if fc is not None else (bag.groups.get(group) if bag is not None else None)
    return bool((fc is not None and fc.lock) or (grp is not None and grp.lock))


def skip_locked(bag, tracks: list[Track]) -> tuple[list[Track], int]:
    """The tracks with the channels the animator locked marked not to be written (a track with every channel
    locked is left out), and how many channels were skipped (a muted one is left for being muted)."""
    out, skipped = [], 0
    for t in tracks:
        t.locked = tuple(c for c in range(t.width) if c not in t.muted and c not in t.held
                         and is_locked(bag, t.path, c, t.bone))
        skipped += len(t.locked)
        if t.channels:
            out.append(t)
    return out, skipped


def is_muted(bag, path: str, index: int) -> bool:
    """Whether the channel's F-curve is muted: Blender does not evaluate it (the property holds its static value),
    the animator's way of saying the channel is not to be driven. (A muted channel group does not stop its curves
    in Blender 5.0: only the curve's own flag counts.)"""
    fc = bag.fcurves.find(path, index=index) if bag is not None else None
    return fc is not None and fc.mute


def channels_text(bone: str, prop: str, channels, width: int) -> str:
    """A bone's channels as the report names them: "'Chest' rotation_euler" (all), "'Chest' rotation_euler[0]"."""
    channels = list(channels)
    return f"{bone!r} {prop}" if len(channels) == width else f"{bone!r} {prop}[{', '.join(map(str, channels))}]"


def skip_muted(bag, tracks: list[Track]) -> tuple[list[Track], list[str]]:
    """The tracks with the channels whose curve is muted marked not to be written (a track with every channel
    muted is left out): a muted curve is left exactly as it is. Also the channels left, as the report names them."""
    out, names = [], []
    for t in tracks:
        t.muted = tuple(c for c in range(t.width) if is_muted(bag, t.path, c))
        if t.muted:
            names.append(channels_text(t.bone, t.path.rsplit(".", 1)[1], t.muted, t.width))
        if t.channels:
            out.append(t)
    return out, names


def write_dense(bag, tracks: list[Track]) -> Written:
    """A key on every target frame of every channel (not the locked or muted ones)."""
    n = 0
    for t in tracks:
        for c in t.channels:
            n += curves.write_keys(bag, t.path, c, t.bone, t.frames, t.values[:, c])
    return Written(n, sum(len(t.frames) * len(t.channels) for t in tracks))


def _without_stale(fc, frames: np.ndarray) -> tuple[fcurves.Points, bool]:
    """A curve's keys as :func:`.curves.clear_generated` leaves them (Anyfill's keys of an earlier fill at the
    frames dropped; the others keep their handles, as ``remove(fast=True)`` leaves them), and whether any
    were dropped."""
    p = fcurves.read(fc)
    n = len(p)
    gen = fcurves.bulk_get(fc.keyframe_points, "type", n, 1, np.uint8) == curves.generated_type_value()
    stale = gen & curves.near(p.co[:, 0], np.sort(np.asarray(frames, dtype=np.float64)))
    if not stale.any():
        return p, False
    return fcurves.without(p, stale), True


def deviation(bag, t: Track, cleared: bool = False) -> tuple[np.ndarray, bool]:
    """(n,) how far the track's F-curves, as written now, are from its dense fill at the target frames: the
    rotation angle (radians) or the distance (rig units); locked and muted channels count as matching (they are
    not written). ``cleared``: measured as the curves will be once Anyfill's earlier keys at the target frames are
    gone, without changing them. Also returns whether that measure needs taking again once they are gone
    (a curve with modifiers and such keys: only Blender evaluates it)."""
    found = [bag.fcurves.find(t.path, index=c) for c in range(t.width)]
    now = np.broadcast_to(np.asarray(t.static, dtype=np.float64), t.values.shape).copy()
    again = False
    if not cleared:
        live = [c for c, fc in enumerate(found) if fc is not None and len(fc.keyframe_points)]
        if live:
            now[:, live] = fcurves.evaluate([found[c] for c in live], t.frames).T
    else:
        kept = {c: _without_stale(fc, t.frames) for c, fc in enumerate(found)
                if fc is not None and len(fc.keyframe_points)}
        live = [c for c, (p, _) in kept.items() if len(p)]
        if live:
            values, known = fcurves.evaluate_points([kept[c][0] for c in live], t.frames)
            for i, c in enumerate(live):
                if not known[i].all():  # modifiers: only Blender evaluates the curve (as it is now)
                    again = again or kept[c][1]
                    values[i, ~known[i]] = [found[c].evaluate(float(f)) for f in t.frames[~known[i]]]
            now[:, live] = values.T
    held = [c for c in range(t.width) if c not in t.channels]
    now[:, held] = t.values[:, held]
    if t.mode == "LOCATION":
        return np.linalg.norm(now - t.values, axis=1), again
    if t.quats is None:
        t.quats = retarget.mode_to_quat(t.values, t.mode)
    dot = np.abs((retarget.mode_to_quat(now, t.mode) * t.quats).sum(-1))
    dot = np.minimum(dot, 1.0)
    return 2.0 * np.arctan2(np.sqrt(1.0 - dot * dot), dot), again


def worst_frames(t: Track, err: np.ndarray, tolerance: float) -> np.ndarray:
    """Frames to key next: in each stretch between two keys (the animator's or this fill's) whose deviation
    passes the tolerance, the frame that deviates most."""
    chosen = curves.near(t.frames, t.chosen)
    err = np.where(chosen, 0.0, err)
    bad = (err > tolerance) & ~chosen  # a frame keyed already is never keyed again (whatever the tolerance)
    if not bad.any():
        return np.zeros(0)
    knots = np.union1d(t.keyed, t.chosen)
    seg = np.searchsorted(knots, t.frames)  # stretch of each target frame (frames are sorted, so stretches are runs)
    first = np.concatenate([[True], seg[1:] != seg[:-1]])
    starts = np.flatnonzero(first)
    worst = np.maximum.reduceat(err, starts)
    seg_of = np.cumsum(first) - 1
    first_worst = np.minimum.reduceat(np.where(bad & (err == worst[seg_of]), np.arange(len(err)), len(err)),
                                      starts)
    return t.frames[first_worst[(first_worst < len(err))]]


def write_editable(bag, tracks: list[Track], rotation_tolerance: float, location_tolerance: float,
                   max_rounds: int = 200) -> Written:
    """Keys only where needed (see the module docstring); tolerances in radians and rig units. The start, the
    animator's curve, is measured before anything changes; then Anyfill's keys of an earlier fill on these
    frames go."""
    measured = {id(t): deviation(bag, t, cleared=True) for t in tracks}
    for t in tracks:
        for c in t.channels:
            fc = bag.fcurves.find(t.path, index=c)
            if fc is not None:
                curves.clear_generated(fc, t.frames)
        t.chosen = np.zeros(0)
    errors = {k: deviation(bag, t)[0] if measured[k][1] else measured[k][0]
              for k, t in ((id(t), t) for t in tracks)}
    written = 0

    def key(t: Track, new: np.ndarray) -> None:
        nonlocal written
        rows = np.searchsorted(t.frames, new)
        for c in t.channels:
            written += curves.write_keys(bag, t.path, c, t.bone, new, t.values[rows, c], fresh=t.chosen)
        t.chosen = np.union1d(t.chosen, new)
        errors[id(t)] = deviation(bag, t)[0]

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
    return Written(written, sum(len(t.frames) * len(t.channels) for t in tracks), True,
                   float(np.degrees(max(rot, default=0.0))), float(max(loc, default=0.0)))

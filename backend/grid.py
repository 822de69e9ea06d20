"""A request's window as the fill engine's cell grid, and the engine's answer back as per-joint tracks.

:func:`prepare` validates everything the schema cannot (joint names, shapes per rotation format, unit
quaternions, frame order, targets that are also known, ...) and raises :class:`~.errors.RequestError`
naming the field; :func:`encode` turns a :class:`~training.inbetween.fill.FillResult` into the JSON
tracks of the answer: known cells exactly as given, targets filled, everything else ``null``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from backend import convert
from backend.errors import RequestError
from backend.registry import LoadedModel, Registry
from backend.schemas import MIN_FRAME_STEP, FillRequest, JointTrack, RotationFormat
from training.inbetween.fill import MAX_SECONDS, FillResult
from training.motion.rotations import quat_apply, quat_mul

_LAYOUT = {"quaternion": "quaternion [w, x, y, z] or [x, y, z, w]", "euler": "Euler [x, y, z]",
           "axis_angle": "axis-angle [angle, x, y, z]", "rotation_vector": "rotation vector [x, y, z]"}


@dataclass
class Track:
    joint: int
    fmt: RotationFormat
    given: np.ndarray  # (T, width) as sent, NaN where not known
    known: np.ndarray  # (T,)
    target: np.ndarray  # (T,)
    translations: np.ndarray | None  # (T, 3) as sent, for moving joints


@dataclass
class Window:
    lm: LoadedModel
    frames: list[float]
    rotations: np.ndarray  # (1, T, J, 4) xyzw
    translations: np.ndarray  # (1, T, J, 3)
    known: np.ndarray  # (1, T, J)
    times: np.ndarray  # (1, T) seconds
    fps: float  # the rate the frames are numbered at
    tracks: dict[str, Track] = field(default_factory=dict)
    folded: list[int] = field(default_factory=list)  # joints above the root keyed at rest (:func:`hold_above_root`)

    @property
    def n_targets(self) -> int:
        return int(sum(t.target.sum() for t in self.tracks.values()))


def _rows(values: list | None, n: int, width: int, where: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A list of n entries, each ``null`` or ``width`` numbers -> (values (n, width) with NaN, given mask)."""
    out = np.full((n, width), np.nan)
    given = np.zeros(n, dtype=bool)
    if values is None:
        return out, given
    if len(values) != n:
        raise RequestError(where, f"has {len(values)} entries; expected {n}, one per frame")
    present = [i for i, v in enumerate(values) if v is not None]
    for i in present:
        if len(values[i]) != width:
            raise RequestError(f"{where}[{i}]", f"expected {width} numbers ({what}), got {len(values[i])}")
    if present:
        out[present] = np.array([values[i] for i in present], dtype=np.float64)
        given[present] = True
    return out, given


def _frame(x: float) -> str:
    """A frame number as short as it can be written and still be that number (3, 3.5, 3.000000001)."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def _check_frames(frames: list[float]) -> None:
    """Frames strictly increasing and more than :data:`~backend.schemas.MIN_FRAME_STEP` apart; the first that is not
    is named with the frame before it."""
    f = np.asarray(frames, dtype=np.float64)
    bad = np.flatnonzero(np.diff(f) <= MIN_FRAME_STEP)
    if len(bad):
        i = int(bad[0]) + 1
        a, b = _frame(frames[i - 1]), _frame(frames[i])
        if f[i] > f[i - 1]:
            raise RequestError(f"frames[{i}]", f"frame {b} is {f[i] - f[i - 1]:.3g} frames after frame {a}: frames "
                               f"must be more than {MIN_FRAME_STEP:g} apart (closer ones are one frame, as Blender's "
                               "extension reads them); send it once")
        kind = "repeats" if f[i] == f[i - 1] else "comes before"
        raise RequestError(f"frames[{i}]", f"frame {b} {kind} frame {a}: frames must be strictly increasing")


def _targets(targets: list[float] | None, known: np.ndarray, index: dict[float, int], base: str) -> np.ndarray:
    """A track's target mask (T,): every frame not known unless ``targets`` lists them. Each listed target must be
    one of the request's frames, not known, and listed once: a frame listed twice is refused as a repeated frame
    is (a client's mistake, a frame meant and another sent, which a fill would hide)."""
    if targets is None:
        return ~known
    target = np.zeros(len(known), dtype=bool)
    listed: dict[int, int] = {}  # frame index -> where in targets it was listed first
    for i, f in enumerate(targets):
        k = index.get(float(f))
        if k is None:
            raise RequestError(f"{base}.targets[{i}]", f"frame {f:g} is not one of the request's frames")
        if k in listed:
            raise RequestError(f"{base}.targets[{i}]", f"frame {f:g} is listed twice (targets[{listed[k]}] and "
                               f"targets[{i}]): list each target once")
        listed[k] = i
        if known[k]:
            raise RequestError(f"{base}.targets[{i}]", f"frame {f:g} is a target but also known")
        target[k] = True
    return target


def _track(req: FillRequest, lm: LoadedModel, name: str, tr: JointTrack, index: dict[float, int], win: Window):
    schema = lm.schema
    base = f"joints.{name}"
    if name not in schema.joints:
        raise RequestError(base, f"unknown joint {name!r} for the {schema.name} skeleton of model {lm.name!r}; "
                           f"joints are {', '.join(schema.joints)}")
    j = schema.joints.index(name)
    moving = j in schema.moving
    t = len(req.frames)
    fmt = tr.rotation_format or req.rotation_format
    w = convert.width(fmt)
    given, known = _rows(tr.rotations, t, w, f"{base}.rotations", _LAYOUT[fmt.type])
    trans = None
    if moving:
        if tr.offset is not None:
            raise RequestError(f"{base}.offset", f"{name} is a moving joint: send its translations instead")
        if tr.translations is None and known.any():
            raise RequestError(f"{base}.translations", f"{name} is a moving joint: its known frames need "
                               "translations [x, y, z] too")
        trans, tgiven = _rows(tr.translations, t, 3, f"{base}.translations", "[x, y, z]")
        mismatch = np.flatnonzero(tgiven != known)
        if len(mismatch):
            i = int(mismatch[0])
            which = "has a translation but no rotation" if tgiven[i] else "has a rotation but no translation"
            raise RequestError(f"{base}.translations[{i}]", f"frame {req.frames[i]:g} {which}: a moving joint's "
                               "known frames need both")
        win.translations[0, :, j] = trans
    else:
        if tr.translations is not None:
            raise RequestError(f"{base}.translations", f"{name} is not a moving joint: give its bone offset as "
                               "`offset` instead")
        if tr.offset is not None:
            if len(tr.offset) != 3:
                raise RequestError(f"{base}.offset", f"expected 3 numbers [x, y, z], got {len(tr.offset)}")
            win.translations[0, :, j] = tr.offset
    target = _targets(tr.targets, known, index, base)
    win.known[0, :, j] = known
    win.tracks[name] = Track(j, fmt, given, known, target, trans)


def _known_rotations(win: Window, normalize: bool) -> None:
    """Every track's known rotations as quaternions in the window, the tracks of one format converted in one call
    (a bad value still names its joint and row)."""
    by_format: dict[str, list[tuple[str, Track]]] = {}
    for name, tr in win.tracks.items():
        if tr.known.any():
            by_format.setdefault(tr.fmt.model_dump_json(), []).append((name, tr))
    for tracks in by_format.values():
        rows = [np.flatnonzero(tr.known) for _, tr in tracks]
        values = np.concatenate([tr.given[r] for (_, tr), r in zip(tracks, rows, strict=True)])
        try:
            q = convert.to_quat(values, tracks[0][1].fmt, normalize=normalize)
        except convert.BadValue as e:
            ends = np.cumsum([len(r) for r in rows])
            k = int(np.searchsorted(ends, e.row, side="right"))
            row = int(rows[k][e.row - (ends[k - 1] if k else 0)])
            raise RequestError(f"joints.{tracks[k][0]}.rotations[{row}]", str(e)) from None
        start = 0
        for (_, tr), r in zip(tracks, rows, strict=True):
            win.rotations[0, r, tr.joint] = q[start : start + len(r)]
            start += len(r)


def hold_above_root(win: Window) -> None:
    """Joints above the skeleton's root that the request leaves out (the body's ``joint_Root``, which the
    capture keeps near the origin) are keyed at rest (identity rotation, zero translation) on every frame that
    has a key, as the capture's joint_Root is keyed with the rest of the body in training; between keys the model
    moves them with the root, and :func:`fold_above_root` carries that motion into the root's answer. (Known at
    rest on every frame instead, the shipped body filled its test windows worse: L2P at gap 30 / 45 1.24 / 1.81
    against 1.02 / 1.35 keyed like the rest, `anyfill bench inbetween`'s windows.)"""
    schema = win.lm.schema
    keyed = win.known[0].any(-1)
    for j in schema.above_root():
        if schema.joints[j] not in win.tracks:
            win.rotations[0, :, j] = (0.0, 0.0, 0.0, 1.0)
            win.translations[0, :, j] = 0.0
            win.known[0, keyed, j] = True
            win.folded.append(j)


def fold_above_root(win: Window, result: FillResult) -> FillResult:
    """The root's answer as the client's rig has it, with no joint above it: the model's fill of the joints above
    the root that :func:`hold_above_root` keyed at rest, composed into the root's local rotation and translation
    (the root's place in the world is the model's; at key frames the fold is the identity)."""
    if not win.folded:
        return result
    root = win.lm.schema.root
    rot, trans = result.rotations.copy(), result.translations.copy()
    q, t = rot[:, :, root], trans[:, :, root]
    for j in win.folded:  # the root's parent first, then up to the top
        q, t = quat_mul(rot[:, :, j], q), trans[:, :, j] + quat_apply(rot[:, :, j], t)
    rot[:, :, root], trans[:, :, root] = q, t
    return replace(result, rotations=rot, translations=trans)


def prepare(req: FillRequest, registry: Registry) -> Window:
    """Validate a request against its model and build the engine's arrays (see the module docstring)."""
    lm = registry.get(req.model)
    if lm is None:
        raise RequestError("model", f"unknown model {req.model!r}; loaded models are "
                           f"{', '.join(registry.names()) or 'none'}")
    _check_frames(req.frames)
    t = len(req.frames)
    span = (req.frames[-1] - req.frames[0]) / req.fps
    if span > MAX_SECONDS:
        raise RequestError("frames", f"the window spans {span:.6g} s at {req.fps:g} fps; at most {MAX_SECONDS:g} s")
    schema = lm.schema
    rot = np.zeros((1, t, schema.n_joints, 4))
    rot[..., 3] = 1.0
    trans = np.broadcast_to(lm.rest_offsets, (1, t, schema.n_joints, 3)).copy()
    trans[:, :, list(schema.moving)] = np.nan  # unknown unless sent
    frames = np.asarray(req.frames, dtype=np.float64)
    win = Window(lm, list(req.frames), rot, trans, np.zeros((1, t, schema.n_joints), dtype=bool),
                 ((frames - frames[0]) / req.fps)[None], req.fps)
    index = {float(f): i for i, f in enumerate(req.frames)}
    for name, tr in req.joints.items():
        _track(req, lm, name, tr, index, win)
    _known_rotations(win, req.normalize_quaternions)
    if not win.known.any():
        raise RequestError("joints", "no known cells: give at least one known rotation")
    hold_above_root(win)
    if win.n_targets == 0:
        raise RequestError("joints", "no target cells: every listed cell is known (or targets are empty)")
    return win


FILLED_DECIMALS = 9
"""Filled values (and their uncertainties) are written rounded to 1e-9: the model computes in float32 (about seven
significant digits), so the further digits carry nothing; they were a third of the answer's bytes and of a
client's time to parse it. Known values come back exactly as given."""


def _rounded_rows(values: np.ndarray, exact: np.ndarray | None = None) -> list:
    """``values`` (T, G, ...) as each of the G tracks' T rows (nested lists), rounded to :data:`FILLED_DECIMALS`
    except the rows where ``exact`` (T,): all tracks at once, so the answer costs a few array calls, not a few per
    joint."""
    rounded = np.round(values, FILLED_DECIMALS)
    if exact is not None:
        rounded[exact] = values[exact]
    return np.moveaxis(rounded, 1, 0).tolist()


def _masked(rows: list, mask: list[bool]) -> list:
    """A track's rows where ``mask``, else None."""
    return [r if m else None for r, m in zip(rows, mask, strict=True)]


def encode(win: Window, result: FillResult, index: int = 0) -> dict:
    """The answer's ``joints`` for one window of ``result`` (JSON-ready dicts). Joints that share a
    rotation format and a known mask are converted (and written) together."""
    groups: dict[tuple, list[str]] = {}
    for name, tr in win.tracks.items():
        groups.setdefault((tr.fmt.model_dump_json(), tr.known.tobytes()), []).append(name)
    rotations, formats, broken = {}, {}, set()
    for names in groups.values():
        trs = [win.tracks[n] for n in names]
        q = result.rotations[index][:, [tr.joint for tr in trs]]
        v = convert.encode_track(q, trs[0].fmt, np.stack([tr.given for tr in trs], axis=1), trs[0].known)
        keep = np.stack([tr.known | tr.target for tr in trs], axis=1)  # (T, group)
        bad = (~np.isfinite(v).all(axis=-1) & keep).any(axis=0)
        broken.update(n for n, b in zip(names, bad.tolist(), strict=True) if b)
        rotations.update(zip(names, _rounded_rows(v, trs[0].known), strict=True))
        fmt = trs[0].fmt.model_dump()
        formats.update((n, fmt) for n in names)
    names = list(win.tracks)
    cols = [win.tracks[n].joint for n in names]
    targets = np.stack([win.tracks[n].target for n in names], axis=1)  # (T, tracks)
    spread = result.spread_deg[index][:, cols]
    bad = (~np.isfinite(spread) & targets).any(axis=0)
    broken.update(n for n, b in zip(names, bad.tolist(), strict=True) if b)
    if broken:
        raise RuntimeError(f"the model produced non-finite values for joint {min(broken, key=names.index)}")
    uncertainty = _rounded_rows(spread)
    entropy = _rounded_rows(result.entropy[index][:, cols])
    out = {}
    for k, name in enumerate(names):
        tr = win.tracks[name]
        keep, target = (tr.known | tr.target).tolist(), tr.target.tolist()
        entry = {
            "rotation_format": formats[name],
            "rotations": _masked(rotations[name], keep),
            "translations": None,
            "known": tr.known.tolist(),
            "target": target,
            "uncertainty_deg": _masked(uncertainty[k], target),
            "entropy": _masked(entropy[k], target),
        }
        if tr.translations is not None:
            trans = np.where(tr.known[:, None], tr.translations, result.translations[index, :, tr.joint])
            if not np.isfinite(trans[tr.known | tr.target]).all():
                raise RuntimeError(f"the model produced non-finite translations for joint {name}")
            entry["translations"] = _masked(_rounded_rows(trans[:, None], tr.known)[0], keep)
        out[name] = entry
    return out

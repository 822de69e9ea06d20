"""What the network sees of a window of motion, computed the same way in training and at fill time.

A window is put in a canonical frame computed from its *known* cells only (so nothing of the answer
leaks in): centred on the mean known root position (horizontal for bodies, all axes for hands) and turned: bodies
about the vertical axis so that the root's +Z at the middle known root frame faces +X, hands (models
trained with ``frame='root'``) so that the wrist is unrotated at that frame.
The canonical rotation is applied to the top joint, which carries the whole skeleton with it. Rotations
go to 6D; the moving joints' translations are kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from training.inbetween.baselines import (
    FrameIndex,
    at_frames,
    cell_neighbours,
    gap_time,
    hermite_offsets,
    interpolate_cells,
    key_time,
    key_velocities,
    span_fraction,
)
from training.motion.rotations import (
    axis_angle_to_quat,
    quat_apply,
    quat_conj,
    quat_mul,
    quat_to_6d,
    quat_to_rotvec_as_is,
)
from training.motion.skeleton import Schema


@dataclass
class Canonical:
    """Per window: canonical = turn * (x - offset), applied to the top joint."""

    turn: np.ndarray  # (N, 4) quaternion
    offset: np.ndarray  # (N, 3)


def _root_global(rot: np.ndarray, trans: np.ndarray, schema: Schema) -> tuple[np.ndarray, np.ndarray]:
    """Global rotation and position of the schema's root joint (the chain above it is short)."""
    chain = [schema.root]
    while schema.parents[chain[-1]] >= 0:
        chain.append(schema.parents[chain[-1]])
    g_rot, g_pos = rot[..., chain[-1], :], trans[..., chain[-1], :]
    for j in reversed(chain[:-1]):
        g_pos = g_pos + quat_apply(g_rot, trans[..., j, :])
        g_rot = quat_mul(g_rot, rot[..., j, :])
    return g_rot, g_pos


@dataclass(frozen=True)
class FeatureSpec:
    """What a model reads of a window besides its cells: each setting defined here once, with its one default.
    The model's config holds it (``MotionConfig.features``), the training config sets it (``AnyOrderTrainConfig
    .features``, each setting also given by its own name), and it is computed the same way in training and at
    fill time (:func:`canonical_batch`)."""

    frame: str | None = None  # the canonical frame windows are turned into (FRAMES); None: the skeleton's own
    key_velocity: bool = True  # queries see the displacement the velocity at their keys would give
    base_velocity: float = 0.0  # > 0: the baseline is a Hermite curve keeping this share of the key velocities
    across_keys: bool = False  # a key with no known neighbour frame takes the slope between its neighbouring keys
    hermite_positions: bool = True  # moving joints' positions follow the Hermite curve too (False: straight lines)
    velocity_memory: float = 0.0  # > 0 (seconds): on longer spans the Hermite share shrinks as memory / span
    clamp_keys: bool = False  # with across_keys: no slope in a component where a key is an extreme (auto-clamped)
    spline_keys: bool = False  # with across_keys: a key's slope is that of Blender's default curve through the keys
    # the space the rotations' Hermite baseline is drawn in (ROTATION_CURVES): 6d, or rotvec, rotation vectors
    # from each joint's first key in the window (a hinge then turns at its angle's own rate, as an Euler channel)
    rotation_curve: str = "6d"

    def __post_init__(self) -> None:
        if self.rotation_curve not in ROTATION_CURVES:
            raise ValueError(f"rotation_curve must be one of {', '.join(ROTATION_CURVES)}, "
                             f"got {self.rotation_curve!r}")
        if self.spline_keys and self.clamp_keys:
            raise ValueError("spline_keys and clamp_keys are two slopes for the same keys: choose one "
                             "(spline_keys' curve is clamped as Blender's)")

    def for_skeleton(self, skeleton: str) -> FeatureSpec:
        """This spec with its canonical frame settled (``frame``, or :func:`default_frame` of the skeleton)."""
        frame = default_frame(skeleton) if self.frame is None else self.frame
        if frame not in FRAMES:
            raise ValueError(f"frame must be one of {', '.join(FRAMES)}, got {frame!r}")
        return replace(self, frame=frame)

    @classmethod
    def from_card(cls, config: dict[str, Any]) -> FeatureSpec:
        """The features of a model card's config: its ``features``, or, in a card written before they were one
        object, its flat settings, each one it leaves out taking what models then defaulted to
        (:data:`CARD_DEFAULTS`). Removes what it reads from ``config``."""
        if "features" in config:
            given = config.pop("features")
            return given if isinstance(given, cls) else cls(**given)
        flat = {f.name: config.pop(f.name) for f in fields(cls) if f.name in config}
        return cls(**{**CARD_DEFAULTS, **flat})


# the settings a model card without ``features`` meant where it left them out (its model config's defaults then)
CARD_DEFAULTS = {"frame": "yaw", "key_velocity": False}

ROTATION_CURVES = ("6d", "rotvec")

DEFAULT_FEATURES = FeatureSpec()


FRAMES = ("yaw", "root")
"""How a window is turned: ``yaw`` about the vertical so the root faces +X (bodies; hands are not turned,
which is how the first hand models were trained), ``root`` by the inverse of the root's whole rotation,
so the root is unrotated at the reference frame (hands: a grasp looks the same however the wrist is
held, and the wrist's motion becomes a small rotation near identity)."""


def default_frame(skeleton: str) -> str:
    """The canonical frame new models of a skeleton use unless told otherwise: ``root`` for hands, ``yaw``
    for bodies."""
    return "root" if skeleton == "hand" else "yaw"


def canonical_from_known(
    rot: np.ndarray, trans: np.ndarray, known: np.ndarray, schema: Schema, frame: str = "yaw"
) -> Canonical:
    """The canonical frame of windows (N, T, J, ...) from the frames whose root cell is known; the
    reference frame for the turn is the middle known root frame."""
    if frame not in FRAMES:
        raise ValueError(f"unknown canonical frame {frame!r}; expected one of {', '.join(FRAMES)}")
    n, t = known.shape[:2]
    root_known = known[:, :, schema.root]
    has_root = root_known.any(axis=1)  # without a known root a window keeps its own frame
    g_rot, g_pos = _root_global(rot, trans, schema)
    w = root_known[..., None].astype(np.float64)
    pos = np.where(root_known[..., None], g_pos, 0.0)
    offset = pos.sum(axis=1) / np.maximum(w.sum(axis=1), 1.0)
    turn = np.zeros((n, 4))
    turn[:, 3] = 1.0
    if frame == "yaw" and schema.name != "body":
        return Canonical(turn, offset)
    idx = np.arange(t)[None, :]
    frames = np.where(root_known, idx, -1)
    counts = root_known.sum(axis=1)
    # the middle known root frame: the (count // 2)-th known frame
    order = np.sort(np.where(frames >= 0, frames, 0), axis=1)[:, ::-1]  # known frames first, descending
    ref_rot = g_rot[np.arange(n), order[np.arange(n), np.maximum(counts - 1, 0) // 2]]
    if frame == "root":
        turn = np.where(has_root[:, None], quat_conj(ref_rot), turn)
        return Canonical(turn, offset)
    offset[:, schema.up] = 0.0
    fwd = quat_apply(ref_rot, np.array([0.0, 0.0, 1.0]))
    theta = np.where(has_root, np.arctan2(fwd[:, 2], fwd[:, 0]), 0.0)
    turn[:, 1], turn[:, 3] = np.sin(theta / 2.0), np.cos(theta / 2.0)
    return Canonical(turn, offset)


def top_joint(schema: Schema) -> int:
    """The joint with no parent: turning it turns the whole skeleton."""
    return schema.parents.index(-1)


def to_canonical(rot: np.ndarray, trans: np.ndarray, c: Canonical, schema: Schema):
    """Rotate and move windows (N, T, J, ...) into their canonical frame (copies)."""
    top = top_joint(schema)
    rot, trans = rot.copy(), trans.copy()
    y = c.turn[:, None, :]
    rot[:, :, top] = quat_mul(y, rot[:, :, top])
    trans[:, :, top] = quat_apply(y, trans[:, :, top] - c.offset[:, None, :])
    return rot, trans


def from_canonical(rot: np.ndarray, trans: np.ndarray, c: Canonical, schema: Schema):
    """Undo :func:`to_canonical`."""
    top = top_joint(schema)
    rot, trans = rot.copy(), trans.copy()
    y = quat_conj(c.turn)[:, None, :]
    rot[:, :, top] = quat_mul(y, rot[:, :, top])
    trans[:, :, top] = quat_apply(y, trans[:, :, top]) + c.offset[:, None, :]
    return rot, trans


def sixd(rot: np.ndarray) -> np.ndarray:
    return quat_to_6d(rot).astype(np.float32)


def _chain_globals(rot: np.ndarray, trans: np.ndarray, schema: Schema, upto: int):
    """Global position of every joint from the top down to ``upto`` (inclusive), and global rotation of every joint
    above it."""
    g_rot: dict[int, np.ndarray] = {}
    g_pos: dict[int, np.ndarray] = {}
    for j in range(upto + 1):
        p = schema.parents[j]
        if p < 0:
            g_rot[j], g_pos[j] = rot[..., j, :], trans[..., j, :]
        else:
            g_pos[j] = g_pos[p] + quat_apply(g_rot[p], trans[..., j, :])
            if j < upto:  # the last joint's own rotation places nothing asked for
                g_rot[j] = quat_mul(g_rot[p], rot[..., j, :])
    return g_rot, g_pos


def moving_positions(rot: np.ndarray, trans: np.ndarray, schema: Schema) -> np.ndarray:
    """Global positions (..., M, 3) of the schema's moving joints: what the network sees of translation."""
    _, g_pos = _chain_globals(rot, trans, schema, max(schema.moving))
    return np.stack([g_pos[m] for m in schema.moving], axis=-2)


def moving_translations(rot: np.ndarray, positions: np.ndarray, trans: np.ndarray, schema: Schema) -> np.ndarray:
    """Inverse of :func:`moving_positions`: local translations (..., J, 3) whose moving joints land at
    ``positions`` (..., M, 3) given local rotations; other joints keep ``trans``."""
    out = trans.copy()
    for k, m in enumerate(schema.moving):
        g_rot, g_pos = _chain_globals(rot, out, schema, m)
        p = schema.parents[m]
        if p < 0:
            out[..., m, :] = positions[..., k, :]
        else:
            out[..., m, :] = quat_apply(quat_conj(g_rot[p]), positions[..., k, :] - g_pos[p])
    return out


def rotation_vectors(rot_in: np.ndarray, known: np.ndarray, neighbours) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's rotation (N, T, J, 3) as a rotation vector from its joint's first key in the window (returned
    too, (N, 1, J, 4)), each key on the side of its previous key's quaternion, so a turn past 180 degrees goes on
    turning: the values :func:`rotvec_curve` draws its curve through."""
    t = known.shape[1]
    prev = neighbours[0]
    first = at_frames(rot_in, prev[:, :1])
    rel = quat_mul(quat_conj(first), rot_in)
    before = prev[:, np.maximum(np.arange(t) - 1, 0)]
    flip = known & (np.einsum("ntjc,ntjc->ntj", rel, at_frames(rel, before)) < 0)
    rel = rel * np.cumprod(np.where(flip, -1.0, 1.0), axis=1)[..., None]
    return quat_to_rotvec_as_is(rel), first


def rotvec_curve(rot_in: np.ndarray, known: np.ndarray, times, neighbours, spec: FeatureSpec, vectors: np.ndarray,
                 first: np.ndarray, velocities: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """The rotations' baseline (N, T, J, 4) drawn as rotation vectors from each joint's first key in the
    window (:func:`rotation_vectors`: ``vectors``, ``first``): interpolated between the joint's keys, then the
    Hermite curve of ``spec`` (its slopes at the keys in the same vectors: ``velocities`` and ``measured``, from
    :func:`.baselines.key_velocities` of the vectors). A hinge's vector is its angle times its axis, so the curve
    turns it at the rate an Euler channel would (a 6D curve between two keys far apart cuts the corner of the
    turn). Known cells and joints without a key keep ``rot_in``."""
    prev, nxt, has_key = neighbours
    prev, nxt = FrameIndex(prev, known.shape[1]), FrameIndex(nxt, known.shape[1])
    w, _ = span_fraction(times, prev, nxt)
    base = at_frames(vectors, prev) * (1.0 - w[..., None]) + at_frames(vectors, nxt) * w[..., None]
    base = base + hermite_offsets(base, velocities, measured, known, times, neighbours, spec.base_velocity,
                                  spec.velocity_memory)
    curve = quat_mul(first, axis_angle_to_quat(base))
    return np.where(known[..., None] | ~has_key[:, None, :, None], rot_in, curve)


def canonical_batch(rot_c, trans_c, times, known, target, schema: Schema, spec: FeatureSpec = DEFAULT_FEATURES,
                    given: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The network's inputs of windows already in their canonical frame (training batches and fill alike),
    with frame times in seconds. The key velocities are computed only for models that read them (``spec``);
    with ``spec.base_velocity`` > 0 the baseline between two keys is a cubic Hermite curve leaving and entering
    the keys with that share of their velocities (0: plain interpolation). ``given``: the known cells that may
    measure velocities (any-order sampling: not the drawn ones; see :func:`.baselines.key_velocities`)."""
    out = {"known": known, "target": target, "times": np.asarray(times, dtype=np.float32)}
    out.update(_joint_inputs(rot_c, known, times, spec, given))
    out.update(_moving_inputs(rot_c, trans_c, times, known, schema, spec, given))
    return out


def update_batch(batch: dict[str, np.ndarray], rot_c, trans_c, times, known, target, schema: Schema,
                 spec: FeatureSpec, given: np.ndarray | None, joints) -> None:
    """:func:`canonical_batch` of a window whose cells changed only in the columns of ``joints`` (rotations,
    knowns; and the moving joints' translations where one of ``joints`` carries a moving joint), brought up to
    date in place by computing those columns alone: each joint's inputs read its own column only, the moving
    joints' positions the joints they hang on. Any-order sampling draws a cell or a few per step; this keeps a
    step's inputs from costing a whole window's."""
    cols = np.unique(np.asarray(joints, dtype=np.int64))
    sub = _joint_inputs(rot_c[:, :, cols], known[:, :, cols], times, spec,
                        None if given is None else given[:, :, cols])
    for key, value in sub.items():
        if key == "has_key":
            batch[key][:, cols] = value
        else:
            batch[key][:, :, cols] = value
    batch["known"], batch["target"] = known, target
    if not set(moving_chain(schema)).isdisjoint(cols.tolist()):
        batch.update(_moving_inputs(rot_c, trans_c, times, known, schema, spec, given))


def moving_chain(schema: Schema, strict: bool = False) -> list[int]:
    """The joints the moving joints' positions hang on (the moving joints and every joint above them); ``strict``:
    only the joints above a moving joint, whose rotations place it (a moving joint's own rotation places none)."""
    chain: set[int] = set()
    for m in schema.moving:
        j = schema.parents[m] if strict else m
        while j >= 0 and j not in chain:
            chain.add(j)
            j = schema.parents[j]
    return sorted(chain)


_IDENTITY_6D = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=np.float32)


def _unknown_as_identity(rot_c: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The baseline sees known cells only: unknown rotations become identity."""
    return np.where(known[..., None], rot_c, np.array([0.0, 0.0, 0.0, 1.0]))


def _joint_inputs(rot_c, known, times, spec: FeatureSpec, given) -> dict[str, np.ndarray]:
    """The inputs each joint has from its own column of cells alone: its rotations, its key curve, the times to
    its keys and the velocities at them (arrays (N, T, J, ...); ``has_key`` (N, J))."""
    rot_in = _unknown_as_identity(rot_c, known)
    neighbours = cell_neighbours(known)
    out = {
        "rot6d": sixd(rot_c),  # (float32: the identity's 6D below is exact)
        "has_key": neighbours[2],
        "key_time": key_time(known, times, neighbours).astype(np.float32),
        "gap_time": gap_time(known, times, neighbours).astype(np.float32),
    }
    rotvec = spec.base_velocity and spec.rotation_curve == "rotvec"
    if spec.key_velocity or spec.base_velocity:
        values = np.where(known[..., None], out["rot6d"], _IDENTITY_6D)  # sixd(rot_in), computed once
        if rotvec:  # the curve in rotation vectors replaces the slerp between keys; its slopes solved with 6D's
            vectors, first = rotation_vectors(rot_in, known, neighbours)
            values = np.concatenate([values, vectors], axis=-1)
        vel, measured = key_velocities(values, known, times, neighbours, spec.across_keys, spec.clamp_keys, given,
                                       spec.spline_keys)
        vel6d = vel[..., :6]
    if rotvec:
        out["base6d"] = sixd(rotvec_curve(rot_in, known, times, neighbours, spec, vectors, first, vel[..., 6:],
                                          measured))
    else:
        base_rot, _, _ = interpolate_cells(rot_in, None, known, times, neighbours)
        out["base6d"] = sixd(base_rot)
        if spec.base_velocity:
            out["base6d"] = _hermite(out["base6d"], vel6d, measured, known, times, neighbours, spec)
    if spec.key_velocity:
        out["keyvel6d"] = vel6d.astype(np.float32)
    return out


def _hermite(base: np.ndarray, velocities, measured, known, times, neighbours, spec: FeatureSpec) -> np.ndarray:
    """A float32 interpolation baseline turned into the Hermite curve of ``spec`` (its share of the key
    velocities; :func:`.baselines.hermite_offsets`, in float64)."""
    return base + hermite_offsets(base.astype(np.float64), velocities, measured, known, times, neighbours,
                                  spec.base_velocity, spec.velocity_memory).astype(np.float32)


def _moving_inputs(rot_c, trans_c, times, known, schema: Schema, spec: FeatureSpec, given) -> dict[str, np.ndarray]:
    """The inputs of the moving joints' positions (their global positions, their key curve and the velocities
    at their keys), from the joints they hang on (:func:`moving_chain`)."""
    mv = list(schema.moving)
    moving = np.zeros(schema.n_joints, dtype=bool)
    moving[mv] = True
    # unknown moving translations are 0 (bone offsets of the other joints are the rig's, not the answer)
    rot_in = _unknown_as_identity(rot_c, known)
    trans_in = np.where(known[..., None] | ~moving[None, None, :, None], trans_c, 0.0)
    moving_known = known[:, :, mv]
    moving_neighbours = cell_neighbours(moving_known)
    # the interpolation between keys of what the positions read: the rotations of the joints above a moving joint
    # and the moving joints' translations (the other joints' translations are constant bone offsets)
    above = moving_chain(schema, strict=True)
    base_rot, base_trans = rot_in.copy(), trans_in.copy()
    if above:
        base_rot[:, :, above] = interpolate_cells(rot_in[:, :, above], None, known[:, :, above], times)[0]
    base_trans[:, :, mv] = interpolate_cells(None, trans_in[:, :, mv], moving_known, times, moving_neighbours)[1]
    out = {
        "offsets": trans_c.mean(axis=1).astype(np.float32),  # every joint's: the moving joints' vary
        "pos": moving_positions(rot_c, trans_c, schema).astype(np.float32),
        "basepos": moving_positions(base_rot, base_trans, schema).astype(np.float32),
        "moving_has_key": moving_known.any(axis=1),
    }
    if spec.key_velocity or spec.base_velocity:
        pos_in = moving_positions(rot_in, trans_in, schema)
        velpos, measuredpos = key_velocities(pos_in, moving_known, times, moving_neighbours, spec.across_keys,
                                             spec.clamp_keys, None if given is None else given[:, :, mv],
                                             spec.spline_keys)
        if spec.base_velocity and spec.hermite_positions:
            out["basepos"] = _hermite(out["basepos"], velpos, measuredpos, moving_known, times, moving_neighbours,
                                      spec)
        if spec.key_velocity:
            out["keyvelpos"] = velpos.astype(np.float32)
    return out

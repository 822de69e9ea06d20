"""How the training data holds each joint: what a rig's rest pose is matched against.

A rig's rest pose fixes each bone's direction but not its twist about that direction, and the model is
sensitive to twists that move no joint position (a knee off its hinge axis, a forearm turned the
other way). So each joint's habit is measured on the training capture, in the joint's own frame:

* ``axis``: the bone direction (towards its first child; a leaf continues its parent's line),
* for each of two body-anchored references (body: the character's ``forward`` and ``up``; hand: the
  ``finger`` direction and the ``palm`` normal), the mean direction of the reference perpendicular to
  the axis, and how consistent it is (``strength``: the length of the mean of unit vectors, 0..1),
* ``mean_local``: the mean local rotation (a joint a rig does not have is held at it) and ``spread``, the
  covariance (rad^2) of the local rotation's rotation vector about it,
* ``hinge``: the dominant axis of the local rotation's spread (in the parent's frame, which a hinge shares
  with the joint) and the share of the spread along it (a knee: 1.0).

Bodies also get their ``ground``: the height (up axis, model units) of the lowest ankle over each clip, its
median and range over the clips. The capture's floor is a constant (each Bandai clip's lowest ankle is
11.0-12.2 cm high), so the network knows where the floor is; a rig's floor is wherever its author put
it, and the extension brings the rig's keyed feet onto the model's (``addon/retarget.py``).

The Blender extension turns these into the matching pose of a rig (see ``addon/retarget.py``); the
backend serves them in ``/v1/models``; model cards carry them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.motion.rotations import quat_apply, quat_conj, quat_mul, quat_normalize
from training.motion.skeleton import Schema

REFERENCES = {"body": ("forward", "up"), "hand": ("finger", "palm")}
GROUND_JOINTS = {"body": ("Foot_L", "Foot_R")}  # the joints nearest the floor a capture stands on (ankles)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _rotvec(q: np.ndarray) -> np.ndarray:
    """Rotation vectors (F, 3) of quaternions (F, 4) xyzw."""
    q = np.where(q[:, 3:] < 0, -q, q)
    s = np.linalg.norm(q[:, :3], axis=-1)
    angle = 2 * np.arctan2(s, q[:, 3])
    return q[:, :3] * (angle / np.maximum(s, 1e-12))[:, None]


def bone_axes(schema: Schema, offsets: np.ndarray) -> np.ndarray:
    """(J, 3) unit bone direction of each joint in its own frame: towards its first child with a non-zero
    offset; a joint without one continues the line of its own offset (the capture's rest convention)."""
    children = schema.children()
    axes = np.zeros((schema.n_joints, 3))
    for j in range(schema.n_joints):
        kids = [k for k in children[j] if np.linalg.norm(offsets[k]) > 1e-6]
        v = offsets[kids[0]] if kids else offsets[j]
        axes[j] = _unit(v) if np.linalg.norm(v) > 1e-9 else np.array([1.0, 0.0, 0.0])
    return axes


def reference_directions(schema: Schema, positions: np.ndarray) -> dict[str, np.ndarray]:
    """The two body-anchored unit directions (F, 3) of each frame of global positions (F, J, 3)."""
    idx = schema.index
    if schema.name == "body":
        up = np.zeros_like(positions[:, 0])
        up[:, schema.up] = 1.0
        lateral = positions[:, idx("UpperLeg_L")] - positions[:, idx("UpperLeg_R")]
        forward = _unit(np.cross(lateral, up))
        toes = positions[:, idx("Toes_L")] + positions[:, idx("Toes_R")] - positions[:, idx("Foot_L")] \
            - positions[:, idx("Foot_R")]
        forward *= np.where(np.sum(forward * toes, axis=-1, keepdims=True) < 0, -1.0, 1.0)
        return {"forward": forward, "up": up}
    wrist = positions[:, idx("WRIST")]
    finger = _unit(positions[:, idx("MIDDLE_MCP")] - wrist)
    across = positions[:, idx("INDEX_MCP")] - positions[:, idx("PINKY_MCP")]
    return {"finger": finger, "palm": _unit(np.cross(finger, across))}


def measure(schema: Schema, rotations: Sequence[np.ndarray], translations: Sequence[np.ndarray]) -> dict:
    """The per-joint habits (see the module docstring) of clips given as local rotations (F, J, 4) xyzw and
    translations (F, J, 3)."""
    from training.motion.skeleton import forward_kinematics

    g_rot, g_pos, local = [], [], []
    for r, t in zip(rotations, translations, strict=True):
        gr, gp = forward_kinematics(r, t, schema.parents)
        g_rot.append(gr)
        g_pos.append(gp)
        local.append(r)
    per_clip = g_pos  # the ground is each clip's own
    g_rot, g_pos, local = np.concatenate(g_rot), np.concatenate(g_pos), np.concatenate(local)
    offsets = np.concatenate(list(translations)).mean(axis=0)
    axes = bone_axes(schema, offsets)
    refs = reference_directions(schema, g_pos)
    joints = []
    for j, name in enumerate(schema.joints):
        inv = quat_conj(g_rot[:, j])
        entry = {"name": name, "axis": axes[j].tolist(), "references": {}}
        for ref, world in refs.items():
            v = quat_apply(inv, world)
            v = _unit(v - np.sum(v * axes[j], axis=-1, keepdims=True) * axes[j])
            mean = v.mean(axis=0)
            entry["references"][ref] = {"direction": _unit(mean).tolist(), "strength": float(np.linalg.norm(mean))}
        q = local[:, j]
        q = np.where(np.sum(q * q[:1], axis=-1, keepdims=True) < 0, -q, q)
        # the quaternion mean: the principal eigenvector of sum q q^T (Markley et al. 2007)
        w, vecs = np.linalg.eigh(q.T @ q)
        m = quat_normalize(vecs[:, -1])
        m = -m if m[3] < 0 else m
        entry["mean_local"] = [float(m[3]), float(m[0]), float(m[1]), float(m[2])]  # wxyz
        # the spread about the mean: covariance of the rotation vectors of mean^-1 q
        rel = quat_mul(quat_conj(np.broadcast_to(m, q.shape)), q)
        v = _rotvec(rel)
        entry["spread"] = np.cov(v.T).tolist()
        # the hinge: the dominant axis of the local rotation vectors' spread and the share of it
        rv = _rotvec(q)
        _, sv, vt = np.linalg.svd(rv - rv.mean(axis=0), full_matrices=False)
        share = float(sv[0] ** 2 / max(np.sum(sv**2), 1e-12))
        entry["hinge"] = {"axis": vt[0].tolist(), "share": share}
        joints.append(entry)
    out = {"skeleton": schema.name, "references": list(refs), "joints": joints}
    if schema.name in GROUND_JOINTS:
        out["ground"] = ground(schema, per_clip)
    return out


def ground(schema: Schema, positions: Sequence[np.ndarray]) -> dict:
    """The lowest height (up axis: y) of the :data:`GROUND_JOINTS` over each clip of global positions
    (F, J, 3): ``height`` their median over the clips, ``low``/``high`` their range."""
    joints = [schema.index(n) for n in GROUND_JOINTS[schema.name]]
    lows = np.array([p[:, joints, 1].min() for p in positions])
    return {"joints": list(GROUND_JOINTS[schema.name]), "height": float(np.median(lows)),
            "low": float(lows.min()), "high": float(lows.max())}


def from_training(skeleton: str, root=None, every: int = 4) -> dict:
    """:func:`measure` on the training split (every ``every``-th frame), on the model's own side: hands are
    right hands (left-hand takes are mirrored, as the network sees them)."""
    from pathlib import Path

    from training.motion import clip as clip_io
    from training.motion.skeleton import get_schema
    from training.motion.splits import split_files

    schema = get_schema(skeleton)
    rots, trans = [], []
    for f in split_files(skeleton, "train", root):
        c = clip_io.load(f, schema)
        if skeleton == "hand" and "left" in Path(f).name.lower():
            c = c.mirrored()
        rots.append(c.rotations[::every])
        trans.append(c.translations[::every])
    return measure(schema, rots, trans)


# Rig conventions: twists that move no joint position. A rig may hold any bone turned about its own axis
# against the training data (a forearm's roll, a knee's hinge axis), which changes every local rotation
# and no joint position. Training windows get random ones (an augmentation, so the network learns not to
# care) and `anyfill bench` applies fixed ones (so the robustness is measured).

# joints whose twist tilts a hinge below them: (parent, hinge) pairs turned together by one angle, so the
# hinge stays a pure hinge about an axis tilted by that angle (a knee off its hinge)
HINGES = {"body": (("UpperLeg_L", "LowerLeg_L"), ("UpperLeg_R", "LowerLeg_R"))}
# the joints the robustness bench turns by the full twist (forearm, hand, foot, toe, head roll)
BENCH_TWISTS = {"body": ("LowerArm_L", "LowerArm_R", "Hand_L", "Hand_R", "Foot_L", "Foot_R", "Toes_L", "Toes_R",
                         "Head")}


def twistable(schema: Schema) -> np.ndarray:
    """(J,) bool: joints a rig convention may turn about their bone axis: not moving, at most one child (a
    bone with several children, such as the hips or chest, has no single axis to turn about)."""
    children = schema.children()
    return np.array([j not in schema.moving and len(children[j]) <= 1 for j in range(schema.n_joints)])


def twist_joints(schema: Schema, twist_deg: float, hinge_deg: float, joints: Sequence[str] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per joint, the largest twist (J,) in degrees and a group id (J,) (joints of one group turn by the
    same angle: a hinge and its parent; -1: a joint of its own). ``joints``: only these turn by ``twist_deg``
    (default: every :func:`twistable` joint); hinges and their parents turn by ``hinge_deg``."""
    can = twistable(schema)
    limit = np.zeros(schema.n_joints)
    if joints is None:
        limit[can] = twist_deg
    else:
        for name in joints:
            limit[schema.index(name)] = twist_deg
    group = -np.ones(schema.n_joints, dtype=np.int64)
    for g, pair in enumerate(HINGES.get(schema.name, ())):
        for name in pair:
            limit[schema.index(name)] = hinge_deg
            group[schema.index(name)] = g
    limit[~can] = 0.0
    return limit, group


def random_twists(rng: np.random.Generator, n: int, schema: Schema, twist_deg: float, hinge_deg: float,
                  joints: Sequence[str] | None = None, share: float = 1.0, full: bool = False) -> np.ndarray:
    """(n, J) twist angles in radians for n windows: uniform in +-limit (``full``: exactly +-limit, random
    signs), a hinge's pair alike; each window is turned with probability ``share`` (else all zero)."""
    limit, group = twist_joints(schema, twist_deg, hinge_deg, joints)
    u = rng.uniform(-1.0, 1.0, size=(n, schema.n_joints))
    if full:
        u = np.where(u < 0, -1.0, 1.0)
    for g in range(group.max() + 1):  # a hinge and its parent share one angle
        members = np.flatnonzero(group == g)
        u[:, members] = u[:, members[:1]]
    on = rng.random(n) < share
    return np.deg2rad(limit)[None] * u * on[:, None]


def apply_twists(rot: np.ndarray, trans: np.ndarray, angles: np.ndarray, schema: Schema
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Turn each joint about its own bone axis by a constant angle, moving no joint position.

    rot (n, T, J, 4) local quaternions xyzw, trans (n, T, J, 3) local translations, angles (n, J) radians.
    Each global rotation becomes G_j R_j (R_j: ``angles[j]`` about the joint's bone axis, in its own frame,
    from the window's mean offsets), so the local one becomes R_parent^-1 L_j R_j and each child's offset
    R_parent^-1 t_j: every joint position is unchanged (exactly: the child's offset turns with the frame)."""
    n, _, j_count, _ = rot.shape
    axes = np.stack([bone_axes(schema, trans[i].mean(axis=0)) for i in range(n)])  # (n, J, 3)
    half = 0.5 * angles[..., None]
    r = np.concatenate([axes * np.sin(half), np.cos(half)], axis=-1)  # (n, J, 4)
    parents = np.asarray(schema.parents)
    r_parent = np.where((parents >= 0)[None, :, None], r[:, np.maximum(parents, 0)], np.array([0.0, 0.0, 0.0, 1.0]))
    inv_parent = quat_conj(r_parent)[:, None]  # (n, 1, J, 4)
    new_rot = quat_mul(quat_mul(inv_parent, rot), r[:, None])
    new_trans = quat_apply(np.broadcast_to(inv_parent, trans.shape[:-1] + (4,)), trans)
    return new_rot, new_trans


def main(argv: list[str] | None = None) -> int:
    """Write the training data's joint habits into model cards (``schema.conventions``); weights untouched."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m training.motion.conventions", description=main.__doc__)
    parser.add_argument("cards", nargs="+", type=Path, help="model cards (.json) to update")
    parser.add_argument("--data", default=None, help="the data folder (default: ../shared/data or $ANYFILL_DATA)")
    args = parser.parse_args(argv)
    for card_file in args.cards:
        card = json.loads(card_file.read_text())
        skeleton = card["schema"]["name"]
        card["schema"]["conventions"] = from_training(skeleton, args.data)
        tmp = card_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(card, indent=2) + "\n")
        tmp.replace(card_file)
        print(f"{card_file}: conventions of the {skeleton} training data written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

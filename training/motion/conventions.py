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

The Blender extension turns these into the matching pose of a rig (see ``addon/retarget.py``); the
backend serves them in ``/v1/models``; model cards carry them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.motion.rotations import quat_apply, quat_conj, quat_mul, quat_normalize
from training.motion.skeleton import Schema

REFERENCES = {"body": ("forward", "up"), "hand": ("finger", "palm")}


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
    return {"skeleton": schema.name, "references": list(refs), "joints": joints}


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

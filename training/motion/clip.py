"""A motion clip in a skeleton schema: what models, benchmarks and the backend work on.

A :class:`Clip` holds local joint rotations (quaternions), the moving root translation and constant
bone offsets, in the joint order of its schema, whatever the order or channel layout of the file it
came from. It converts back to BVH through the file it was read from (or any template of the schema).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from training.motion import bvh as bvh_io
from training.motion.rotations import euler_make_continuous, quat_continuous, quat_slerp
from training.motion.skeleton import Schema, forward_kinematics, get_schema, mirror_x


class SchemaMismatch(ValueError):
    """A file or rig whose joints do not fit the requested skeleton schema."""


@dataclass
class Clip:
    """Local rotations (F, J, 4) as quaternions (x, y, z, w), hemisphere-continuous in time, and local
    translations (F, J, 3). Only the schema's ``moving`` joints have translations that change over time
    (Bandai: ``Hips`` and, in a few files, ``joint_Root``; ManipNet: ``WRIST``); the others hold their
    bone offsets."""

    schema: Schema
    fps: float
    rotations: np.ndarray
    translations: np.ndarray
    name: str = ""

    @property
    def n_frames(self) -> int:
        return int(self.rotations.shape[0])

    @property
    def root_pos(self) -> np.ndarray:
        return self.translations[:, self.schema.root]

    @property
    def offsets(self) -> np.ndarray:
        """Bone offsets (J, 3): the mean local translation of each joint."""
        return self.translations.mean(axis=0)

    def fk(self) -> tuple[np.ndarray, np.ndarray]:
        """Global rotations (F, J, 4) and positions (F, J, 3)."""
        return forward_kinematics(self.rotations, self.translations, self.schema.parents)

    def frames(self, index) -> Clip:
        """A clip of the selected frames (a slice or index array); a slice step changes the fps."""
        step = index.step if isinstance(index, slice) and index.step else 1
        return replace(self, rotations=self.rotations[index], translations=self.translations[index],
                       fps=self.fps / step)

    def mirrored(self) -> Clip:
        """The mirror image through the YZ plane (a left hand becomes a right hand)."""
        rot, trans = mirror_x(self.rotations, self.translations)
        return replace(self, rotations=rot, translations=trans)

    def reversed(self) -> Clip:
        """The clip played backwards (a grasp becomes a release): a training augmentation."""
        return replace(self, rotations=self.rotations[::-1].copy(), translations=self.translations[::-1].copy())

    def at_speed(self, speed: float) -> Clip:
        """The same frames played ``speed`` times as fast (the frame rate scales; resample afterwards)."""
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        return replace(self, fps=self.fps * speed)


def from_bvh(data: bvh_io.BVH, schema: Schema | str, name: str = "") -> Clip:
    """Map a parsed BVH onto a schema by joint name (any joint order, any channel layout)."""
    schema = get_schema(schema) if isinstance(schema, str) else schema
    missing = [n for n in schema.joints if n not in data.names]
    if missing:
        raise SchemaMismatch(f"{name or 'file'}: not a {schema.name} skeleton, missing joints {', '.join(missing)}")
    order = [data.names.index(n) for n in schema.joints]
    for j, src in enumerate(order):
        p = data.parents[src]
        want = schema.parents[j]
        got = schema.joints.index(data.names[p]) if p >= 0 and data.names[p] in schema.joints else -1
        if got != want:
            parent_name = schema.joints[want] if want >= 0 else "none"
            raise SchemaMismatch(f"{name or 'file'}: joint {schema.joints[j]} should have parent {parent_name}")
    rot = data.local_rotations()[:, order]
    trans = data.local_translations()[:, order]
    return Clip(schema=schema, fps=data.fps, rotations=quat_continuous(rot, axis=0), translations=trans, name=name)


def load(path: str | Path, schema: Schema | str) -> Clip:
    path = Path(path)
    return from_bvh(bvh_io.read(path), schema, name=str(path))


def to_bvh(clip: Clip, template: bvh_io.BVH, keep: np.ndarray | None = None) -> bvh_io.BVH:
    """Write a clip into the channel layout of ``template`` (a file of the same schema). When the template has the
    clip's frames (the file the clip was read from), its joints that the schema lacks (a prop, extra bones) keep
    their channels as they are, and the cells of ``keep`` (T, J: kept keys, frames not filled) are the template's
    own numbers; every other cell's Euler angles continue from those (a key written back as -170.9 degrees is not
    followed by 189.1, nor rewritten as it)."""
    order = [template.names.index(n) for n in clip.schema.joints]
    rot = np.tile(np.array([0.0, 0.0, 0.0, 1.0]), (clip.n_frames, template.n_joints, 1))
    rot[:, order] = clip.rotations
    trans = np.broadcast_to(template.offsets, (clip.n_frames, template.n_joints, 3)).copy()
    trans[:, order] = clip.translations
    out = template.set_local(rot, trans)
    out.frame_time = 1.0 / clip.fps
    if template.n_frames != clip.n_frames:
        return out
    cols = template.channel_index()
    extra = [c for j, idx in enumerate(cols) if j not in set(order) for c in idx.values()]
    out.motion[:, extra] = template.motion[:, extra]
    for k, j in enumerate(order if keep is not None else []):
        rows = np.asarray(keep[:, k], dtype=bool)
        if not rows.any():
            continue
        rot_order = template.rotation_order(j)
        if rot_order is not None:
            rc = [cols[j][f"{a}rotation"] for a in rot_order]
            e = out.motion[:, rc]
            e[rows] = template.motion[rows][:, rc]
            out.motion[:, rc] = _continue_from_kept(e, rot_order, rows)
        pc = [cols[j][c] for c in bvh_io.POSITION_CHANNELS if c in cols[j]]
        out.motion[np.ix_(rows, pc)] = template.motion[np.ix_(rows, pc)]
    return out


def _continue_from_kept(e: np.ndarray, order: str, kept: np.ndarray) -> np.ndarray:
    """Euler angles (T, 3) in degrees whose ``kept`` rows stay as they are, every other row unwrapped to continue
    from the kept row before it (the rows before the first kept one: from the one after them, backwards)."""
    out = euler_make_continuous(e, order, degrees=True, anchors=kept)
    first = int(np.argmax(kept))
    if first > 0:
        lead = slice(first, None, -1)
        out[lead] = euler_make_continuous(e[lead], order, degrees=True, anchors=kept[lead])
    return out


def resample(clip: Clip, fps: float) -> Clip:
    """Resample to another frame rate: slerp rotations and lerp translations between the nearest frames."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    duration = (clip.n_frames - 1) / clip.fps
    n = int(np.floor(duration * fps + 1e-6)) + 1
    src = np.arange(n) * clip.fps / fps
    i0 = np.clip(np.floor(src).astype(int), 0, clip.n_frames - 1)
    i1 = np.clip(i0 + 1, 0, clip.n_frames - 1)
    t = src - i0
    rot = quat_slerp(clip.rotations[i0], clip.rotations[i1], t[:, None])
    w = t[:, None, None]
    trans = clip.translations[i0] * (1.0 - w) + clip.translations[i1] * w
    return replace(clip, fps=fps, rotations=quat_continuous(rot, axis=0), translations=trans)

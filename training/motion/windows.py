"""Fixed-length windows cut from clips, and the canonical frame each window is seen in.

Shared by the benchmark (LaFAN1 protocol) and the training datasets, so that a model is trained in the
same frame it is scored in. Body windows are centred on the window's mean horizontal ``Hips`` position
and turned about the vertical axis so that ``Hips``' local +Z axis at the last context frame faces +X;
hand windows are centred on the window's mean ``WRIST`` position, without rotation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.motion.clip import Clip, resample
from training.motion.rotations import quat_apply, quat_continuous, quat_mul
from training.motion.skeleton import Schema, forward_kinematics

PROTOCOL_FPS = 30.0


@dataclass
class Windows:
    """A batch of windows of local motion: rotations (N, T, J, 4), translations (N, T, J, 3)."""

    schema: Schema
    fps: float
    rotations: np.ndarray
    translations: np.ndarray
    sources: list[tuple[str, int]]  # (clip name, first frame) per window

    def __len__(self) -> int:
        return int(self.rotations.shape[0])

    def fk(self) -> tuple[np.ndarray, np.ndarray]:
        return forward_kinematics(self.rotations, self.translations, self.schema.parents)


def at_protocol_rate(clip: Clip, fps: float = PROTOCOL_FPS) -> list[Clip]:
    """Clips at the protocol rate. A capture at an integer multiple k of ``fps`` gives k decimated
    clips, one per phase offset (ManipNet's 120 fps hands: every 4th frame, 4 phases); any other rate
    is resampled."""
    ratio = clip.fps / fps
    k = int(round(ratio))
    if abs(ratio - k) < 1e-3 and k >= 1:
        return [clip.frames(slice(phase, None, k)) for phase in range(k)]
    return [resample(clip, fps)]


def cut(clips: list[Clip], length: int, stride: int) -> Windows:
    """Every window of ``length`` frames starting every ``stride`` frames, from each clip."""
    if not clips:
        raise ValueError("no clips to cut windows from")
    rots, trans, sources = [], [], []
    for c in clips:
        for s in range(0, c.n_frames - length + 1, stride):
            rots.append(c.rotations[s : s + length])
            trans.append(c.translations[s : s + length])
            sources.append((c.name, s))
    schema = clips[0].schema
    if not rots:
        shape = (0, length, schema.n_joints)
        return Windows(schema, clips[0].fps, np.zeros((*shape, 4)), np.zeros((*shape, 3)), [])
    return Windows(schema, clips[0].fps, np.stack(rots), np.stack(trans), sources)


def canonical_frame(
    g_rot: np.ndarray, g_pos: np.ndarray, schema: Schema, ref_frame: int
) -> tuple[np.ndarray, np.ndarray]:
    """The window normalisation as (yaw quaternion (N, 4), offset (N, 3)): canonical = yaw * (p - offset).
    Computed from global motion (N, T, J, ...) of the ground truth; applied alike to every prediction."""
    n = g_pos.shape[0]
    root = schema.root
    offset = g_pos[:, :, root].mean(axis=1)
    yaw = np.zeros((n, 4))
    yaw[:, 3] = 1.0
    if schema.name == "body":
        up = schema.up
        horizontal = [a for a in range(3) if a != up]
        offset[:, up] = 0.0
        fwd = quat_apply(g_rot[:, ref_frame, root], np.array([0.0, 0.0, 1.0]))
        # angle about +Y that takes (fx, 0, fz) onto +X: theta = atan2(fz, fx)
        x, z = fwd[:, horizontal[0]], fwd[:, horizontal[1]]
        theta = np.arctan2(z, x)
        yaw[:, 1] = np.sin(theta / 2.0)
        yaw[:, 3] = np.cos(theta / 2.0)
    return yaw, offset


def to_canonical(
    g_rot: np.ndarray, g_pos: np.ndarray, yaw: np.ndarray, offset: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a window normalisation to global rotations (N, T, J, 4) and positions (N, T, J, 3)."""
    y = yaw[:, None, None, :]
    pos = quat_apply(y, g_pos - offset[:, None, None, :])
    rot = quat_continuous(quat_mul(y, g_rot), axis=1)
    return rot, pos

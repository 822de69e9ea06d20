"""Data and metrics of the STCFormer-report task: from 10 observed frames of 3D joints, predict the next 25.

Human3.6M is not available, so the Bandai body capture stands in (22 joints, like the report's H3.6M
subset): global joint positions from forward kinematics, resampled to 25 fps (H3.6M's rate in that
benchmark), in millimetres. Each window of 10 + 25 frames is put in a canonical frame computed from its
10 observed frames only (centred on their mean horizontal ``Hips`` position, turned so that ``Hips``
faces +X at the last observed frame). That is a rigid motion, so MPJPE is the same as in world space, and
no future frame leaks into the input. Test windows come from the test split; validation files are a
fixed slice of the training files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from training.motion import clip as clip_io
from training.motion.skeleton import BODY
from training.motion.splits import split_files
from training.motion.windows import canonical_frame, to_canonical

FPS = 25.0
N_IN, N_OUT = 10, 25
HORIZONS_MS = (80, 160, 320, 400, 560, 1000)
MM_PER_CM = 10.0


def horizon_index(ms: int, fps: float = FPS) -> int:
    """Index into the output frames of the frame ``ms`` milliseconds after the last observed one."""
    return int(round(ms * fps / 1000.0)) - 1


@dataclass
class Sequence3D:
    """One clip as global joint positions (F, J, 3) in mm at 25 fps, with the hips' global rotation
    (F, 4), which fixes the facing direction of the canonical frame."""

    name: str
    positions: np.ndarray
    hips_rotation: np.ndarray


def load_sequence(path: str | Path, fps: float = FPS) -> Sequence3D:
    c = clip_io.resample(clip_io.load(path, BODY), fps)
    g_rot, g_pos = c.fk()
    return Sequence3D(str(path), (g_pos * MM_PER_CM).astype(np.float32), g_rot[:, BODY.root].astype(np.float64))


@lru_cache(maxsize=4)
def _load_split(split: str, root: str | None, max_files: int | None) -> tuple[Sequence3D, ...]:
    files = split_files("body", split, root)
    if max_files is not None:
        files = files[:max_files]
    return tuple(load_sequence(f) for f in files)


def load_split(split: str, root: str | Path | None = None, max_files: int | None = None) -> list[Sequence3D]:
    """Every file of a split as 25 fps global positions (cached per process: parsing takes ~20 s)."""
    return list(_load_split(split, None if root is None else str(root), max_files))


def train_val_files(seqs: Sequence[Sequence3D], val_every: int) -> tuple[list[Sequence3D], list[Sequence3D]]:
    """Validation = every ``val_every``-th training file (by sorted name), so no window straddles the two."""
    train = [s for i, s in enumerate(seqs) if val_every <= 0 or i % val_every != val_every - 1]
    val = [s for i, s in enumerate(seqs) if val_every > 0 and i % val_every == val_every - 1]
    return train, val


def cut_windows(seqs: Sequence[Sequence3D], stride: int, n_in: int = N_IN, n_out: int = N_OUT) -> np.ndarray:
    """Windows (N, n_in + n_out, J, 3) in mm, each in the canonical frame of its observed frames."""
    length = n_in + n_out
    pos, rot = [], []
    for s in seqs:
        for start in range(0, s.positions.shape[0] - length + 1, stride):
            pos.append(s.positions[start : start + length])
            rot.append(s.hips_rotation[start : start + n_in])
    if not pos:
        return np.zeros((0, length, BODY.n_joints, 3), np.float32)
    p = np.stack(pos).astype(np.float64)
    r = np.stack(rot)
    g_rot = np.zeros((*r.shape[:2], BODY.n_joints, 4))
    g_rot[:, :, BODY.root] = r
    yaw, offset = canonical_frame(g_rot, p[:, :n_in], BODY, n_in - 1)  # observed frames only: no leak
    _, canon = to_canonical(g_rot[:, :1].repeat(length, axis=1), p, yaw, offset)
    return canon.astype(np.float32)


def zero_velocity(observed: np.ndarray, n_out: int = N_OUT) -> np.ndarray:
    """The baseline: repeat the last observed frame. (N, n_in, J, 3) -> (N, n_out, J, 3)."""
    return np.repeat(observed[:, -1:], n_out, axis=1)


def mpjpe_per_frame(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Mean per-joint position error (mm) of each output frame, over windows and joints: (T,)."""
    return np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1).mean(axis=(0, 2))


def summarise(per_frame: np.ndarray, fps: float = FPS) -> dict[str, float]:
    """A-MPJPE (mean over the output frames) and MPJPE at each horizon of the report (that frame only)."""
    out = {"A-MPJPE": float(per_frame.mean())}
    for ms in HORIZONS_MS:
        i = horizon_index(ms, fps)
        if i < len(per_frame):
            out[f"{ms}ms"] = float(per_frame[i])
    return out

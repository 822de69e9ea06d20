"""Data for the 2D-to-3D LiftModel: real Bandai body poses seen by seeded random virtual cameras.

Every frame of a Bandai clip gives the global positions of its joints (forward kinematics, centimetres,
Y up). A virtual pinhole camera placed at random around the subject and looking at its ``Hips`` turns
them into camera-relative 3D positions and their perspective projections. The model reads the 2D
projections relative to the projected ``Hips`` (pixels) and predicts the 3D positions relative to the
``Hips`` (millimetres, camera frame).

The 15 joints (:data:`LIFT_JOINTS`) mirror the 16-joint Human3.6M set of Martinez et al. (2017) minus
its pelvis, which is the origin of root-relative coordinates and so always zero:
``Chest`` (spine), ``Neck`` (thorax), ``Head``, shoulders (``UpperArm``), elbows (``LowerArm``),
wrists (``Hand``), hips (``UpperLeg``), knees (``LowerLeg``) and ankles (``Foot``). Left out:
``joint_Root`` (a point on the floor, not on the body), ``Spine`` (15 cm above ``Hips`` and nearly
rigid with them), the clavicles ``Shoulder_L/R`` (nearly rigid with the chest) and the short ``Toes``.

Cameras (:class:`CameraRig`): azimuth uniform over the full circle, elevation uniform in
[-5, 35] degrees, distance uniform in [3, 6] m from the ``Hips``, no roll; intrinsics like Human3.6M's
(focal length 1150 px, 1000 x 1000 image, principal point at the centre). Camera frame as in OpenCV:
x right, y down, z forward. Cameras are drawn from a generator seeded by (seed, split), so the test
inputs are the same for every run. Validation poses come from every 10th training file; the test split's
files are used only for testing.
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

LIFT_JOINTS: tuple[str, ...] = (
    "Chest", "Neck", "Head",
    "UpperArm_L", "LowerArm_L", "Hand_L",
    "UpperArm_R", "LowerArm_R", "Hand_R",
    "UpperLeg_L", "LowerLeg_L", "Foot_L",
    "UpperLeg_R", "LowerLeg_R", "Foot_R",
)  # fmt: skip
ROOT_JOINT = "Hips"
SPLITS = ("train", "val", "test")
CM_TO_MM = 10.0


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera without distortion, in pixels."""

    focal: float = 1150.0
    cx: float = 500.0
    cy: float = 500.0


@dataclass(frozen=True)
class CameraRig:
    """Where random virtual cameras stand relative to the subject's ``Hips``."""

    distance_mm: tuple[float, float] = (3000.0, 6000.0)
    elevation_deg: tuple[float, float] = (-5.0, 35.0)
    intrinsics: Intrinsics = Intrinsics()


def look_at(eye: np.ndarray, target: np.ndarray, up: Sequence[float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """World-to-camera rotations (N, 3, 3) of cameras at ``eye`` (N, 3) looking at ``target`` (N, 3), no
    roll. Rows are the camera axes in world coordinates: x right, y down, z forward (OpenCV)."""
    fwd = target - eye
    fwd = fwd / np.linalg.norm(fwd, axis=-1, keepdims=True)
    right = np.cross(fwd, np.broadcast_to(np.asarray(up, dtype=float), fwd.shape))
    right = right / np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(fwd, right)
    return np.stack([right, down, fwd], axis=-2)


def world_to_camera(points: np.ndarray, rot: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """Points (N, K, 3) in world coordinates -> the coordinates of camera n (rotation (N, 3, 3), centre (N, 3))."""
    return np.einsum("nij,nkj->nki", rot, points - eye[:, None, :])


def camera_to_world(points: np.ndarray, rot: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """The inverse of :func:`world_to_camera`."""
    return np.einsum("nji,nkj->nki", rot, points) + eye[:, None, :]


def project(points: np.ndarray, intr: Intrinsics = Intrinsics()) -> np.ndarray:
    """Perspective projection of camera-frame points (..., 3), z > 0, to pixels (..., 2)."""
    z = points[..., 2]
    return np.stack([intr.focal * points[..., 0] / z + intr.cx, intr.focal * points[..., 1] / z + intr.cy], axis=-1)


def unproject(pixels: np.ndarray, depth: np.ndarray, intr: Intrinsics = Intrinsics()) -> np.ndarray:
    """The inverse of :func:`project` given each point's depth z (...): camera-frame points (..., 3)."""
    x = (pixels[..., 0] - intr.cx) * depth / intr.focal
    y = (pixels[..., 1] - intr.cy) * depth / intr.focal
    return np.stack([x, y, depth], axis=-1)


def random_cameras(rng: np.random.Generator, targets: np.ndarray, rig: CameraRig = CameraRig()):
    """One random camera per target (N, 3): (rotation (N, 3, 3), centre (N, 3)), looking at the target."""
    n = len(targets)
    az = rng.uniform(0.0, 2.0 * np.pi, n)
    el = np.deg2rad(rng.uniform(*rig.elevation_deg, n))
    dist = rng.uniform(*rig.distance_mm, n)
    direction = np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], axis=-1)
    eye = targets + dist[:, None] * direction
    return look_at(eye, targets), eye


@dataclass
class LiftSet:
    """Samples of the lifting task: root-relative 2D pixels (N, 15, 2), root-relative camera-frame
    millimetres (N, 15, 3), and the root's camera-frame position (N, 3) and pixel (N, 2), which give back
    absolute coordinates."""

    x2d: np.ndarray
    y3d: np.ndarray
    root_cam: np.ndarray
    root_px: np.ndarray

    def __len__(self) -> int:
        return len(self.x2d)


def joint_indices() -> tuple[int, list[int]]:
    """Index of the root and of the 15 lifted joints in the body schema."""
    return BODY.index(ROOT_JOINT), [BODY.index(n) for n in LIFT_JOINTS]


@lru_cache(maxsize=8)
def _positions(files: tuple[Path, ...], frame_stride: int) -> np.ndarray:
    """Global positions (F, 16, 3) in mm of the root and the 15 joints, every ``frame_stride``-th frame of
    each file (cached: a sweep loads the capture once)."""
    root, joints = joint_indices()
    out = []
    for f in files:
        _, pos = clip_io.load(f, BODY).fk()
        out.append(pos[::frame_stride][:, [root, *joints]] * CM_TO_MM)
    return np.concatenate(out).astype(np.float64)


def files_for(split: str, val_every: int = 10, max_files: int = 0, root: str | Path | None = None) -> list[Path]:
    """Files of a split: 'val' is every ``val_every``-th training file, 'train' the other training files,
    'test' the fixed test split. ``max_files`` > 0 keeps that many, evenly spaced (quick runs, tests)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "test":
        files = split_files("body", "test", root)
    else:
        train = split_files("body", "train", root)
        files = [f for i, f in enumerate(train) if (i % val_every == val_every - 1) == (split == "val")]
    if max_files > 0 and len(files) > max_files:
        files = [files[i] for i in np.linspace(0, len(files) - 1, max_files).round().astype(int)]
    return files


def make_set(positions: np.ndarray, cameras_per_pose: int, rng: np.random.Generator,
             rig: CameraRig = CameraRig()) -> LiftSet:
    """Lift samples from global positions (F, 16, 3) (root first): each pose seen by ``cameras_per_pose``
    random cameras."""
    pos = np.repeat(positions, cameras_per_pose, axis=0)
    rot, eye = random_cameras(rng, pos[:, 0], rig)
    cam = world_to_camera(pos, rot, eye)
    px = project(cam, rig.intrinsics)
    return LiftSet(
        x2d=(px[:, 1:] - px[:, :1]).astype(np.float32),
        y3d=(cam[:, 1:] - cam[:, :1]).astype(np.float32),
        root_cam=cam[:, 0].astype(np.float32),
        root_px=px[:, 0].astype(np.float32),
    )


def build(split: str, *, frame_stride: int = 1, cameras_per_pose: int = 1, seed: int = 0, val_every: int = 10,
          max_files: int = 0, root: str | Path | None = None, rig: CameraRig = CameraRig()) -> LiftSet:
    """The samples of one split. Cameras come from a generator seeded by (seed, split), so a split is the
    same in every run with the same settings."""
    files = tuple(files_for(split, val_every, max_files, root))
    if not files:
        raise ValueError(f"no {split} files for the lift data")
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    return make_set(_positions(files, frame_stride), cameras_per_pose, rng, rig)

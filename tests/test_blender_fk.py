"""Our BVH reading and forward kinematics agree with real Blender's own BVH importer.

Blender (the ``bpy`` wheel) imports the file with ``import_anim.bvh``; the world-space bone heads at a
few frames must equal our FK joint positions after the importer's axis conversion and global scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.motion import bvh, clip
from training.motion.rotations import EULER_ORDERS
from training.motion.skeleton import forward_kinematics

pytestmark = pytest.mark.blender

HAND_FILE = "manipnet/teapot3/leftHand.bvh"
BODY_FILE = "bandai/dataset-1/dataset-1_walk-back_normal_001.bvh"  # test split; joint_Root moves


def import_bvh(bpy, path: Path, **options):
    """Import with Blender's own importer into an empty scene; return the armature object."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert bpy.ops.import_anim.bvh(filepath=str(path), **options) == {"FINISHED"}
    (arm,) = [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
    return arm


def conversion(axis_forward: str = "-Z", axis_up: str = "Y") -> np.ndarray:
    """The importer's axis conversion (BVH space to Blender world) as a 3x3 matrix."""
    from bpy_extras.io_utils import axis_conversion

    return np.array(axis_conversion(from_forward=axis_forward, from_up=axis_up))


def bone_heads(bpy, arm, names, blender_frame: int) -> np.ndarray:
    bpy.context.scene.frame_set(blender_frame)
    mw = arm.matrix_world
    return np.array([list(mw @ arm.pose.bones[n].head) for n in names])


def skeleton_size(positions: np.ndarray) -> float:
    """The extent of the skeleton: the largest distance between two joints at one frame."""
    return float(np.max(np.linalg.norm(positions[:, None] - positions[None], axis=-1)))


def compare(bpy, arm, names, positions: np.ndarray, m: np.ndarray, scale: float, frame_start: int = 1) -> float:
    """Max error, relative to the skeleton's size, over 5 frames spread over the clip."""
    size = skeleton_size(positions[0])
    worst = 0.0
    for f in np.linspace(0, len(positions) - 1, 5).round().astype(int):
        got = bone_heads(bpy, arm, names, frame_start + int(f))  # the importer's frame_start is BVH frame 0
        want = scale * positions[f] @ m.T
        worst = max(worst, float(np.abs(got - want).max()) / (scale * size))
    return worst


def test_default_axis_conversion_is_y_up_to_z_up(bpy) -> None:
    # BVH (x, y, z), Y up and -Z forward, lands in Blender as (x, -z, y)
    assert np.array_equal(conversion(), [[1, 0, 0], [0, 0, -1], [0, 1, 0]])
    assert np.array_equal(conversion("Y", "Z"), np.eye(3))


@pytest.mark.data
@pytest.mark.parametrize("rotate_mode", ["NATIVE", "QUATERNION"])
def test_real_hand_matches_blender(bpy, data_root: Path, rotate_mode: str) -> None:
    path = data_root / HAND_FILE
    c = clip.load(path, "hand")
    _, pos = c.fk()
    arm = import_bvh(bpy, path, rotate_mode=rotate_mode)  # default axes: -Z forward, Y up
    assert len(arm.pose.bones) == 17
    if rotate_mode == "NATIVE":
        # the importer names the bone's Euler mode after the channel letters (Y X Z -> 'YXZ'), although
        # Blender's 'YXZ' is R = Rz Rx Ry, the reverse of the file's R = Ry Rx Rz: it re-solves the angles
        # in each bone's rest frame, so the values differ from the file's but the poses agree
        assert arm.pose.bones["INDEX_MCP"].rotation_mode == "YXZ"
    assert compare(bpy, arm, c.schema.joints, pos, conversion(), 1.0) < 1e-4


@pytest.mark.data
@pytest.mark.parametrize(
    ("rotate_mode", "axis_forward", "axis_up", "scale"),
    [("NATIVE", "-Z", "Y", 0.01), ("QUATERNION", "Y", "Z", 1.0)],
)
def test_real_body_matches_blender(
    bpy, data_root: Path, rotate_mode: str, axis_forward: str, axis_up: str, scale: float
) -> None:
    path = data_root / BODY_FILE
    c = clip.load(path, "body")
    assert np.ptp(c.translations[:, 0], axis=0).max() > 10.0  # joint_Root really moves in this take
    _, pos = c.fk()
    arm = import_bvh(bpy, path, rotate_mode=rotate_mode, axis_forward=axis_forward, axis_up=axis_up, global_scale=scale)
    assert len(arm.pose.bones) == 22
    assert compare(bpy, arm, c.schema.joints, pos, conversion(axis_forward, axis_up), scale) < 1e-4


@pytest.mark.data
def test_our_written_file_matches_blender(bpy, data_root: Path, tmp_path: Path) -> None:
    """A clip written back through our writer (continuous Euler curves) imports to the same motion."""
    template = bvh.read(data_root / HAND_FILE)
    c = clip.from_bvh(template, "hand").frames(slice(0, 400))
    out = tmp_path / "rewritten_hand.bvh"
    bvh.write(clip.to_bvh(c, template), out)
    _, pos = c.fk()
    arm = import_bvh(bpy, out, axis_forward="Y", axis_up="Z")
    assert compare(bpy, arm, c.schema.joints, pos, np.eye(3), 1.0) < 1e-4


def synthetic_file(path: Path, n_frames: int = 12, seed: int = 0) -> bvh.BVH:
    """A 6-joint chain: every Euler order once, channel lists in odd orders, and position channels on
    joints below the root whose values are far from the joints' offsets."""
    rng = np.random.default_rng(seed)
    names = [f"J{j}" for j in range(6)]
    lines = ["HIERARCHY"]
    channels = []
    for j, order in enumerate(EULER_ORDERS):
        rot = [f"{a}rotation" for a in order]
        pos = ["Zposition", "Xposition", "Yposition"]
        chans = [*pos, *rot] if j == 0 else ([*rot, *pos] if j % 2 else rot)
        if j == 3:
            chans = [rot[0], pos[1], rot[1], pos[0], rot[2], pos[2]]  # interleaved
        channels.append(chans)
        ind = "  " * j
        lines += [
            f"{ind}{'ROOT' if j == 0 else 'JOINT'} {names[j]}",
            f"{ind}{{",
            f"{ind}  OFFSET {' '.join(f'{v:.3f}' for v in rng.uniform(-1, 1, 3) + [0, 1.5, 0])}",
            f"{ind}  CHANNELS {len(chans)} {' '.join(chans)}",
        ]
    lines += ["  " * 6 + "End Site", "  " * 6 + "{", "  " * 6 + "  OFFSET 0 1 0", "  " * 6 + "}"]
    lines += ["  " * j + "}" for j in reversed(range(6))]
    n_channels = sum(len(c) for c in channels)
    lines += ["MOTION", f"Frames: {n_frames}", "Frame Time: 0.0416667"]
    for _ in range(n_frames):
        row = []
        for chans in channels:
            row += [rng.uniform(-179, 179) if c.endswith("rotation") else rng.uniform(-3, 3) for c in chans]
        assert len(row) == n_channels
        lines.append(" ".join(f"{v:.4f}" for v in row))
    path.write_text("\n".join(lines) + "\n")
    return bvh.read(path)


def test_channel_orders_and_joint_positions_match_blender(bpy, tmp_path: Path) -> None:
    path = tmp_path / "synthetic.bvh"
    b = synthetic_file(path)
    assert [b.rotation_order(j) for j in range(6)] == list(EULER_ORDERS)
    moving = [j for j in range(6) if "Xposition" in b.channels[j]]
    assert moving == [0, 1, 3, 5]
    # position channels replace the offsets (as in Blender's importer), so the test tells them apart
    assert np.abs(b.local_translations()[:, moving[1:]] - b.offsets[moving[1:]]).max() > 1.0
    _, pos = forward_kinematics(b.local_rotations(), b.local_translations(), b.parents)
    arm = import_bvh(bpy, path, frame_start=7)
    assert compare(bpy, arm, b.names, pos, conversion(), 1.0, frame_start=7) < 1e-4

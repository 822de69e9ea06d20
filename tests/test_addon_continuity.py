"""Written curves are continuous with the animator's keys on both sides of every gap, in every rotation mode: a
real walk imported in each of Blender's rotation modes, a key kept every 10 frames, filled. Each bone's
rotation never turns further between two frames (into and out of keys included) than twice the ground
truth's largest turn of that bone, plus 2 degrees, and no channel leaps by a quarter turn or more (an Euler
branch flip, a quaternion sign flip) between keys the capture itself joins without a channel swing (keys on
two Euler branches, with a gimbal point between them, need a switch somewhere)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from blender_support import clean_scene, import_bvh, short_bvh
from test_addon_fill import run_fill, thin_keys

pytestmark = [pytest.mark.blender, pytest.mark.data, pytest.mark.slow]

WALK = "bandai/dataset-1/dataset-1_walk_angry_001.bvh"
FRAMES = 61


def rotation_curves(ext, ob, frames) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per bone: its rotation channels (F, width) at the frames and the turn (F - 1,) between frames."""
    out = {}
    for pb in ob.pose.bones:
        bone_keys = ext.keys.read_bone(ob, ext.keys.channelbag(ob), pb.name, False, include_generated=True)
        values = np.array([bone_keys.rotation_values(f) for f in frames])
        quats = [bone_keys.rotation(f) for f in frames]
        turns = np.array([a.rotation_difference(b).angle for a, b in zip(quats, quats[1:], strict=False)])
        out[pb.name] = (values, np.minimum(turns, 2 * math.pi - turns))
    return out


def nearest_values(values: np.ndarray, prev: np.ndarray, mode: str) -> np.ndarray:
    """The representation of the same rotation nearest to ``prev`` (Blender's compatible Euler, the quaternion
    of the same hemisphere)."""
    from mathutils import Euler

    if mode == "QUATERNION":
        q = np.asarray(values)
        return -q if np.dot(q, prev) < 0 else q
    return np.array(Euler(values, mode).to_quaternion().to_euler(mode, Euler(prev, mode)))


@pytest.mark.parametrize("mode", ["QUATERNION", "NATIVE", "XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"])
def test_filled_rotation_curves_never_leap(bpy, ext, prefs, data_root, mode):
    clean_scene(bpy)
    ob = import_bvh(bpy, short_bvh(data_root / WALK, FRAMES), rotate_mode=mode)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, FRAMES
    scene.anyfill.range_mode, scene.anyfill.bones = "SCENE", "ALL"
    frames = list(range(1, FRAMES + 1))
    truth = rotation_curves(ext, ob, frames)
    thin_keys(bpy, ob, set(range(1, FRAMES + 1, 10)))
    assert run_fill(bpy, ob) == {"FINISHED"}
    filled = rotation_curves(ext, ob, frames)
    for bone, (values, turns) in filled.items():
        assert turns.max() <= 2 * truth[bone][1].max() + math.radians(2.0), (bone, turns.max())
        # no filled frame written in a representation farther from the frame before than another of the same
        # rotation (an Euler branch flip or 2*pi wrap, a quaternion sign flip); near a gimbal point Euler
        # channels swing whatever the representation, and keys on two branches need one switch somewhere
        mode_name = ob.pose.bones[bone].rotation_mode
        for i in range(len(values) - 1):
            step = np.abs(values[i + 1] - values[i]).max()
            if step < math.pi / 4 or frames[i + 1] % 10 == 1:  # small, or into a key: the animator's values stand
                continue
            nearest = nearest_values(values[i + 1], values[i], mode_name)
            assert np.abs(nearest - values[i]).max() > 0.5 * step, (bone, frames[i + 1], step)

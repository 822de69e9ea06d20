"""The extension's key reading, key writing and rest-pose conversion in real Blender (no backend needed)."""

from __future__ import annotations

import math
import random

import pytest
from blender_support import clean_scene, import_bvh, rolled_copy, short_bvh

pytestmark = pytest.mark.blender

MODES = ("QUATERNION", "XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX", "AXIS_ANGLE")
HAND = "manipnet/teapot3/rightHand.bvh"



def make_rig(bpy, name="Rig", rolls=(0.0, 0.0), mode="QUATERNION"):
    """A two-bone armature, active, in pose mode's data (object mode)."""
    arm = bpy.data.armatures.new(name)
    ob = bpy.data.objects.new(name, arm)
    bpy.context.scene.collection.objects.link(ob)
    bpy.context.view_layer.objects.active = ob
    bpy.ops.object.mode_set(mode="EDIT")
    a = arm.edit_bones.new("A")
    a.head, a.tail, a.roll = (0, 0, 0), (0, 0, 1), rolls[0]
    b = arm.edit_bones.new("B")
    b.head, b.tail, b.roll, b.parent = (0, 0, 1), (0, 0.3, 1.8), rolls[1], a
    bpy.ops.object.mode_set(mode="OBJECT")
    for pb in ob.pose.bones:
        pb.rotation_mode = mode
    return ob


def random_quat(rng: random.Random):
    from mathutils import Quaternion, Vector

    axis = Vector((rng.gauss(0, 1), rng.gauss(0, 1), rng.gauss(0, 1))).normalized()
    return Quaternion(axis, rng.uniform(-2.5, 2.5))


def set_rotation(pb, q):
    ext_keys = pb.id_data  # noqa: F841 - keep the owner alive
    if pb.rotation_mode == "QUATERNION":
        pb.rotation_quaternion = q
    elif pb.rotation_mode == "AXIS_ANGLE":
        axis, angle = q.to_axis_angle()
        pb.rotation_axis_angle = (angle, *axis)
    else:
        pb.rotation_euler = q.to_euler(pb.rotation_mode)


@pytest.mark.parametrize("mode", MODES)
def test_keys_read_and_written_in_every_rotation_mode(bpy, ext, mode):
    clean_scene(bpy)
    ob = make_rig(bpy, mode=mode)
    pb = ob.pose.bones["B"]
    prop = ext.keys.rotation_path(mode)[0]
    rng = random.Random(1)
    qs = {1.0: random_quat(rng), 7.5: random_quat(rng), 12.0: random_quat(rng)}  # a subframe key too
    for f, q in qs.items():
        set_rotation(pb, q)
        pb.keyframe_insert(prop, frame=f)
    bag = ext.keys.channelbag(ob)
    bone_keys = ext.keys.read_bone(ob, bag, "B", with_location=False)
    assert bone_keys.frames == sorted(qs)
    for f, q in qs.items():
        assert abs(abs(bone_keys.rotation(f).dot(q)) - 1.0) < 1e-5, (mode, f)
    # write a smooth turn at frames 2..6 and read it back
    new = {float(f): qs[1.0].slerp(qs[7.5], (f - 1) / 6.5) for f in range(2, 7)}
    known = {f: bone_keys.rotation_values(f) for f in bone_keys.frames}
    track = ext.curves.continuous_track(sorted(set(new) | set(known)), new, known, mode, tuple(getattr(pb, prop)))
    path = ext.keys.bone_path("B", prop)
    for c in range(len(track[2.0])):
        ext.curves.write_keys(bag, path, c, "B", sorted(track), [track[f][c] for f in sorted(track)])
    bk2 = ext.keys.read_bone(ob, bag, "B", with_location=False, include_generated=True)
    for f, q in new.items():
        assert abs(abs(bk2.rotation(f).dot(q)) - 1.0) < 1e-5, (mode, f)
    assert ext.keys.read_bone(ob, bag, "B", with_location=False).frames == sorted(qs)  # generated keys ignored
    # continuity: neighbouring written values never jump by a half turn or more
    values = [bk2.rotation_values(f) for f in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.5)]
    for a, b in zip(values, values[1:], strict=False):
        if mode == "QUATERNION":
            assert sum(x * y for x, y in zip(a, b, strict=True)) > 0
        elif mode == "AXIS_ANGLE":
            assert abs(a[0] - b[0]) < math.pi
        else:
            assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < math.pi


def test_euler_writes_are_unwrapped(bpy, ext):
    from mathutils import Quaternion

    clean_scene(bpy)
    ob = make_rig(bpy, mode="XYZ")
    pb = ob.pose.bones["A"]
    pb.rotation_euler = (0, 0, 0)
    pb.keyframe_insert("rotation_euler", frame=0)
    bag = ext.keys.channelbag(ob)
    known = {0.0: [0.0, 0.0, 0.0]}
    new = {float(f): Quaternion((0, 0, 1), 0.3 * f) for f in range(1, 31)}  # 9 rad: more than one turn
    track = ext.curves.continuous_track([0.0, *new], new, known, "XYZ", (0, 0, 0))
    z = [track[f][2] for f in sorted(track)]
    assert max(abs(b - a) for a, b in zip(z, z[1:], strict=False)) < 0.31
    assert z[-1] == pytest.approx(9.0, abs=1e-4)
    path = ext.keys.bone_path("A", "rotation_euler")
    for c in range(3):
        ext.curves.write_keys(bag, path, c, "A", sorted(track), [track[f][c] for f in sorted(track)])
    fc = bag.fcurves.find(path, index=2)
    assert fc.evaluate(30) == pytest.approx(9.0, abs=1e-4)


def test_writing_leaves_the_animators_keys_and_handles_bit_identical(bpy, ext):
    clean_scene(bpy)
    ob = make_rig(bpy, mode="XYZ")
    pb = ob.pose.bones["A"]
    rng = random.Random(3)
    for f in (1, 10, 20, 35.5, 50):
        pb.rotation_euler = (rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-1, 1))
        pb.keyframe_insert("rotation_euler", frame=f)
    bag = ext.keys.channelbag(ob)
    fc = bag.fcurves.find(ext.keys.bone_path("A", "rotation_euler"), index=0)
    kp = fc.keyframe_points
    kp[1].handle_left_type = "FREE"  # an animator's hand-made handle
    kp[1].handle_left = (7.0, 3.0)
    kp[2].interpolation = "CONSTANT"
    kp[3].type = "BREAKDOWN"

    def keys_of(fc):
        return [(tuple(k.co), tuple(k.handle_left), tuple(k.handle_right), k.handle_left_type, k.handle_right_type,
                 k.interpolation, k.type, k.easing) for k in fc.keyframe_points if k.type != "GENERATED"]

    before = keys_of(fc)
    frames = [f for f in range(1, 51) if f not in (1, 10, 20, 50)]
    n = ext.curves.write_keys(bag, fc.data_path, 0, "A", frames, [0.1 * f for f in frames])
    assert n == len(frames)
    assert keys_of(fc) == before  # bit-identical (floats compared exactly)
    gen = [k for k in fc.keyframe_points if k.type == "GENERATED"]
    assert sorted(k.co[0] for k in gen) == frames
    xs = [k.co[0] for k in fc.keyframe_points]
    assert xs == sorted(xs)
    # writing again replaces our own keys, still never the animator's
    n2 = ext.curves.write_keys(bag, fc.data_path, 0, "A", frames[:5], [0.0] * 5)
    assert n2 == 5 and keys_of(fc) == before
    assert len(fc.keyframe_points) == len(before) + len(frames)
    # a frame holding an animator's key is never written
    assert ext.curves.write_keys(bag, fc.data_path, 0, "A", [10.0], [5.0]) == 0


@pytest.mark.parametrize("smoothing", ["NONE", "CONT_ACCEL"])
def test_keys_laid_out_in_order_are_what_blenders_sort_gives(bpy, ext, smoothing):
    """``write_keys`` puts every key in frame order itself (no ``keyframe_points.sort``): the channel, every
    attribute of every key, equals adding the keys at the end and letting Blender sort them, on keys with
    hand-made handles, easing and selections, whatever the curve's handle smoothing."""
    import numpy as np

    clean_scene(bpy)
    ob = make_rig(bpy, mode="XYZ")
    pb = ob.pose.bones["A"]
    rng = random.Random(5)
    for f in (1, 10, 20, 35.5, 50):
        x = rng.uniform(-1, 1)
        pb.rotation_euler = (x, x, 0.0)  # the X and Y curves are twins
        pb.keyframe_insert("rotation_euler", frame=f)
    bag = ext.keys.channelbag(ob)
    fcs = [bag.fcurves.find(ext.keys.bone_path("A", "rotation_euler"), index=i) for i in (0, 1)]
    for fc in fcs:
        fc.auto_smoothing = smoothing
        kp = fc.keyframe_points
        kp[1].handle_left_type, kp[1].handle_left = "FREE", (7.0, 3.0)
        kp[2].interpolation, kp[2].easing, kp[2].back = "BACK", "EASE_IN", 2.5
        kp[3].type, kp[3].amplitude, kp[3].period = "BREAKDOWN", 0.5, 3.0
        kp[4].handle_right_type, kp[4].select_control_point = "VECTOR", False
        kp[0].select_left_handle = False
    frames = np.array([f for f in range(1, 51) if f not in (1, 10, 20, 50)] + [35.25], dtype=np.float64)
    values = np.sin(frames / 7.0)
    ext.curves.write_keys(bag, fcs[0].data_path, 0, "A", frames, values)

    kp = fcs[1].keyframe_points  # the same keys, as Blender's own sort lays them out
    n0, n = len(kp), len(frames)
    old = {a: ext.fcurves.bulk_get(kp, a, n0, w, t) for a, w, t in ext.curves.KEY_ATTRS}
    kp.add(n)
    kp.foreach_set("co", np.concatenate([old["co"], np.stack([frames, values], 1).astype(np.float32).ravel()]))
    kp.foreach_set("type", np.concatenate([old["type"], np.full(n, ext.keys.generated_type_value(), np.uint8)]))
    kp.sort()
    kp.handles_recalc()
    co = ext.fcurves.bulk_get(kp, "co", n0 + n, 2).reshape(-1, 2)
    is_old = np.isin(co[:, 0], old["co"][0::2])
    for attr in ("handle_left", "handle_right"):
        buf = ext.fcurves.bulk_get(kp, attr, n0 + n, 2).reshape(-1, 2)
        buf[is_old] = old[attr].reshape(-1, 2)
        kp.foreach_set(attr, buf.ravel())
    written, sorted_ = ({a: ext.fcurves.bulk_get(fc.keyframe_points, a, n0 + n, w, t).tobytes()
                         for a, w, t in ext.curves.KEY_ATTRS} for fc in fcs)
    assert written == sorted_


def _hand_model(ext, offsets=None) -> dict:
    from backend.rest import REST_OFFSETS

    offsets = REST_OFFSETS["hand"] if offsets is None else offsets
    return {"name": "hand", "skeleton": "hand", "up_axis": "y", "joints": [
        {"name": n, "parent": ext.rig.HAND_JOINTS[p] if p >= 0 else None, "moving": n == "WRIST",
         "rest_offset": list(offsets[i])}
        for i, (n, p) in enumerate(zip(ext.rig.HAND_JOINTS, ext.rig.HAND_PARENTS, strict=True))]}


@pytest.mark.data
def test_rolled_rig_posed_through_the_model_matches_world_positions(bpy, ext, data_root):
    """A rig with the BVH rig's joint positions but other bone rolls and directions, posed through the model
    space (reference rig -> model -> rolled rig), has the same world-space joint positions at every frame;
    and the model space is the BVH file's (the importer's pose reads back as the file's local rotation)."""
    from blender_support import transfer_pose

    clean_scene(bpy)
    ref = import_bvh(bpy, short_bvh(data_root / HAND, 20, step=4), rotate_mode="QUATERNION")
    rolled = rolled_copy(bpy, ref, seed=7, bend=(0.2, 0.9))
    rolled.matrix_world = ref.matrix_world
    model = _hand_model(ext)
    mapping = {n: n for n in ext.rig.HAND_JOINTS}
    r1 = ext.retarget.build(model, ext.keys.armature_rig(ref.data), mapping, "OFF")
    r2 = ext.retarget.build(model, ext.keys.armature_rig(rolled.data), mapping, "OFF")
    assert r1.rest_mode == "MODEL"
    size = max((b.head_local - c.head_local).length for b in ref.data.bones for c in ref.data.bones)
    frames = [1, 8, 15]
    transfer_pose(bpy, ext, ref, rolled, r1, r2, frames)
    worst = 0.0
    for frame in frames:
        bpy.context.scene.frame_set(frame)
        for j in ext.rig.HAND_JOINTS:
            h1 = ref.matrix_world @ ref.pose.bones[j].head
            h2 = rolled.matrix_world @ rolled.pose.bones[j].head
            worst = max(worst, (h1 - h2).length / size)
    assert worst < 1e-4
    from blender_support import pose_matrices

    from training.motion import bvh as bvh_mod
    from training.motion.rotations import euler_to_quat

    b = bvh_mod.read(short_bvh(data_root / HAND, 20, step=4))
    idx = b.channel_index()
    j = b.names.index("INDEX_MCP")
    order = b.rotation_order(j)
    angles = [b.motion[0, idx[j][f"{a}rotation"]] for a in order]  # the importer puts BVH frame 0 on frame 1
    q = euler_to_quat(angles, order)  # degrees; (x, y, z, w)
    local, _ = r1.model_locals(pose_matrices(bpy, ref, r1.rig, [1]))
    got = local[0, ext.rig.HAND_JOINTS.index("INDEX_MCP")]  # w, x, y, z
    assert abs(abs(got[0] * q[3] + got[1] * q[0] + got[2] * q[1] + got[3] * q[2]) - 1.0) < 1e-5


@pytest.mark.data
def test_left_hand_rig_is_mirrored_onto_the_right_hand_model(bpy, ext, data_root):
    model = _hand_model(ext)
    mapping = {n: n for n in ext.rig.HAND_JOINTS}
    for side, mirrored in (("rightHand", False), ("leftHand", True)):
        clean_scene(bpy)
        ob = import_bvh(bpy, short_bvh(data_root / f"manipnet/teapot3/{side}.bvh", 5))
        retargeting = ext.retarget.build(model, ext.keys.armature_rig(ob.data), mapping)
        assert retargeting.mirrored == mirrored, side
        assert retargeting.rest_mode == "MODEL", side
        assert retargeting.scale == pytest.approx(1.0, abs=0.02)

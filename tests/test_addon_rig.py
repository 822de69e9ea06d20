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
    bk = ext.keys.read_bone(ob, bag, "B", with_location=False)
    assert bk.frames == sorted(qs)
    for f, q in qs.items():
        assert abs(abs(bk.rotation(f).dot(q)) - 1.0) < 1e-5, (mode, f)
    # write a smooth turn at frames 2..6 and read it back
    new = {float(f): qs[1.0].slerp(qs[7.5], (f - 1) / 6.5) for f in range(2, 7)}
    known = {f: bk.rotation_values(f) for f in bk.frames}
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


def _posed_heads(bpy, ob, frame):
    bpy.context.scene.frame_set(frame)
    return {pb.name: ob.matrix_world @ pb.head for pb in ob.pose.bones}


@pytest.mark.data
def test_rest_pose_conversion_rolled_rig_matches_world_positions(bpy, ext, data_root):
    """A rig with the BVH rig's joint positions but other bone rolls and directions, posed through the model
    space (reference rig -> model -> rolled rig), has the same world-space joint positions at every frame."""
    clean_scene(bpy)
    ref = import_bvh(bpy, short_bvh(data_root / HAND, 20, step=4), rotate_mode="QUATERNION")
    # the second rig: same heads and hierarchy, random rolls, tails pointing elsewhere
    rolled = rolled_copy(bpy, ref, seed=7, bend=(0.2, 0.9))
    arm2 = rolled.data
    rolled.matrix_world = ref.matrix_world
    model = {"name": "hand", "up_axis": "y", "joints": [
        {"name": n, "parent": ext.rig.HAND_JOINTS[p] if p >= 0 else None, "moving": n == "WRIST",
         "rest_offset": [0, 0, 0]} for n, p in zip(ext.rig.HAND_JOINTS, ext.rig.HAND_PARENTS, strict=True)]}
    mapping = {n: n for n in ext.rig.HAND_JOINTS}
    r1 = ext.rig.build_retarget(ext.rig.rest_of_armature(ref.data), mapping, model, "OFF", "OFF")
    r2 = ext.rig.build_retarget(ext.rig.rest_of_armature(arm2), mapping, model, "OFF", "OFF")
    size = max((b.head_local - c.head_local).length for b in ref.data.bones for c in ref.data.bones)
    worst = 0.0
    for frame in (1, 8, 15):
        bpy.context.scene.frame_set(frame)
        for j in ext.rig.HAND_JOINTS:
            pb1, pb2 = ref.pose.bones[j], rolled.pose.bones[j]
            pb2.rotation_mode = "QUATERNION"
            pb2.rotation_quaternion = r2.joints[j].from_model(r1.joints[j].to_model(pb1.rotation_quaternion))
            if j == "WRIST":
                pb2.location = r2.joints[j].loc_from(r1.joints[j].loc_to(pb1.location, 1.0), 1.0)
        bpy.context.view_layer.update()
        for j in ext.rig.HAND_JOINTS:
            h1 = ref.matrix_world @ ref.pose.bones[j].head
            h2 = rolled.matrix_world @ rolled.pose.bones[j].head
            worst = max(worst, (h1 - h2).length / size)
    assert worst < 1e-4
    # and the model space is the BVH file's: the reference conversion of the importer's pose is the file's
    # local rotation (the importer applies B^-1 C R C^-1 B)
    from training.motion import bvh as bvh_mod
    from training.motion.rotations import euler_to_quat

    b = bvh_mod.read(short_bvh(data_root / HAND, 20, step=4))
    idx = b.channel_index()
    j = b.names.index("INDEX_MCP")
    order = b.rotation_order(j)
    angles = [b.motion[0, idx[j][f"{a}rotation"]] for a in order]  # the importer puts BVH frame 0 on frame 1
    q = euler_to_quat(angles, order)  # degrees; (x, y, z, w)
    bpy.context.scene.frame_set(1)
    got = r1.joints["INDEX_MCP"].to_model(ref.pose.bones["INDEX_MCP"].rotation_quaternion)
    assert abs(abs(got.w * q[3] + got.x * q[0] + got.y * q[1] + got.z * q[2]) - 1.0) < 1e-5


def test_rest_alignment_of_a_rig_in_another_rest_pose(bpy, ext):
    """A rig whose rest pose differs from the model's: with alignment, the model's rest pose (identity local
    rotations) poses the rig so that its joints sit where the model's rest joints are."""
    from mathutils import Matrix, Quaternion, Vector

    model = {"name": "m", "up_axis": "z", "joints": [
        {"name": "r", "parent": None, "moving": True, "rest_offset": [0, 0, 0]},
        {"name": "a", "parent": "r", "moving": False, "rest_offset": [0, 0, 1]},
        {"name": "b", "parent": "a", "moving": False, "rest_offset": [1, 0, 0]}]}
    # rig rest: r -> a points along -y (not +z), a -> b along +z (not +x); bone axes arbitrary
    rest = {"R": (Matrix.Rotation(0.3, 3, "X"), Vector((0, 0, 0))),
            "A": (Matrix.Rotation(0.4, 3, "Z"), Vector((0, -1, 0))),
            "B": (Matrix.Rotation(-1.0, 3, "Y"), Vector((0, -1, 1)))}
    ret = ext.rig.build_retarget(rest, {"r": "R", "a": "A", "b": "B"}, model, "OFF", "AUTO")
    assert ret.aligned and ret.max_rest_deviation_deg == pytest.approx(90.0)
    deltas = {}
    for j, bone, parent in (("r", "R", None), ("a", "A", "r"), ("b", "B", "a")):
        b = rest[bone][0]
        local = b @ ret.joints[j].from_model(Quaternion()).to_matrix() @ b.inverted()
        deltas[j] = deltas[parent] @ local if parent else local
    assert (deltas["r"] @ Vector((0, -1, 0)) - Vector((0, 0, 1))).length < 1e-6
    assert (deltas["a"] @ Vector((0, 0, 1)) - Vector((1, 0, 0))).length < 1e-6


@pytest.mark.data
def test_left_hand_rig_is_mirrored_onto_the_right_hand_model(bpy, ext, data_root):
    from backend.rest import REST_OFFSETS

    model = {"name": "hand", "up_axis": "y", "joints": [
        {"name": n, "parent": ext.rig.HAND_JOINTS[p] if p >= 0 else None, "moving": n == "WRIST",
         "rest_offset": REST_OFFSETS["hand"][i]}
        for i, (n, p) in enumerate(zip(ext.rig.HAND_JOINTS, ext.rig.HAND_PARENTS, strict=True))]}
    mapping = {n: n for n in ext.rig.HAND_JOINTS}
    for side, mirrored in (("rightHand", False), ("leftHand", True)):
        clean_scene(bpy)
        ob = import_bvh(bpy, short_bvh(data_root / f"manipnet/teapot3/{side}.bvh", 5))
        ret = ext.rig.build_retarget(ext.rig.rest_of_armature(ob.data), mapping, model)
        assert ret.mirrored == mirrored, side
        assert not ret.aligned and ret.max_rest_deviation_deg < 5.0, side
        assert ret.scale == pytest.approx(1.0, abs=0.02)

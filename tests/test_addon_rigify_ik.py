"""Fill on a generated Rigify rig whose limbs are in IK (``IK_FK`` 0), in the real ``bpy`` against a real backend.

A generated rig (Blender's bundled Rigify, Human metarig, Generate Rig) with its legs keyed through their IK
controls (``foot_ik``: a stride and a lifted foot), its left arm switched to FK and keyed on its FK controls, its
right arm left in IK with no key. Fill reads the legs as Blender shows them and writes them through their IK
controls (and their FK controls), so the evaluated legs between the keys are the fill; the same poses keyed on the
FK controls with the legs in FK fill the same motion.
"""

from __future__ import annotations

import math

import pytest
from test_addon_fill import generated_frames, own_keys
from test_addon_interactive import driven, rigify_human

pytestmark = [pytest.mark.blender, pytest.mark.slow]

KEYS = (1, 11, 21)
TARGETS = [float(f) for f in range(2, 21) if f not in KEYS]
LEG = ["ORG-thigh.{s}", "ORG-shin.{s}", "ORG-foot.{s}", "ORG-toe.{s}"]
# the IK target sits exactly on the FK foot (float32 matrices): the foot and toe within 1 mm; the knee is where
# Blender's IK solver puts it, which stretches a Rigify chain (IK Stretch) by a fraction of a percent even within
# reach: the chain's first control's scale undoes most of it (as Rigify's own snap does), the shin's stays, so the
# knee within 2 cm of the FK one on this rig's 0.45 m shin (measured: under 1.5 cm)
TOLERANCE = 1e-3  # metres, on a rig 1.9 m tall: feet, toes, hips
KNEE_TOLERANCE = 0.02


def _own(ext, rig) -> dict:
    return {k: v for k, v in own_keys(ext, rig).items() if v}


def _key_scene(bpy, rig) -> None:
    """Legs keyed in IK (foot_ik location and rotation, a hip bob on the torso) on KEYS, within the legs' reach;
    the left arm in FK with its FK controls keyed; the right arm in IK, never keyed."""
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 25  # frames 22-25 lie after the last key: never written
    rig.pose.bones["upper_arm_parent.L"]["IK_FK"] = 1.0
    for f, s in zip(KEYS, (0.0, 1.0, 0.0), strict=True):
        scene.frame_set(f)
        torso = rig.pose.bones["torso"]
        torso.location = (0.0, 0.0, -0.04 * s)
        torso.keyframe_insert("location", frame=f)
        torso.keyframe_insert("rotation_quaternion", frame=f)
        for side, sign in (("L", 1.0), ("R", -1.0)):
            foot = rig.pose.bones[f"foot_ik.{side}"]
            foot.location = (0.0, -0.15 * sign * (1 - 2 * s), 0.06 * s * (sign > 0))
            foot.rotation_quaternion = (math.cos(0.15 * s), math.sin(0.15 * s), 0.0, 0.0)
            foot.keyframe_insert("location", frame=f)
            foot.keyframe_insert("rotation_quaternion", frame=f)
        for name, angle in (("upper_arm_fk.L", 0.5 * s), ("forearm_fk.L", 0.3 * s), ("hand_fk.L", 0.0)):
            pb = rig.pose.bones[name]
            pb.rotation_quaternion = (math.cos(angle / 2), math.sin(angle / 2), 0.0, 0.0)
            pb.keyframe_insert("rotation_quaternion", frame=f)
    scene.anyfill.range_mode, scene.anyfill.bones, scene.anyfill.keys_output = "SCENE", "ALL", "DENSE"
    bpy.context.view_layer.objects.active = rig
    rig.select_set(True)
    rig.anyfill.model = "body"


def _switch(bpy, rig, value: float) -> None:
    """Both legs' IK/FK switch (a custom property: its drivers see it once the rig is tagged)."""
    for s in "LR":
        rig.pose.bones[f"thigh_parent.{s}"]["IK_FK"] = value
    rig.update_tag()
    bpy.context.view_layer.update()


def _heads(bpy, rig, names, frames) -> dict:
    out = {}
    for f in frames:
        bpy.context.scene.frame_set(int(f))
        out[f] = {n: (rig.matrix_world @ rig.pose.bones[n].head).copy() for n in names}
    return out


def _fill(bpy, ext):
    op = driven(ext, ext.operators.ANYFILL_OT_fill)
    assert op.execute(bpy.context) == {"FINISHED"}, op.reports
    return op.reports[-1]


def test_fill_writes_legs_in_ik_through_their_ik_controls(bpy, ext, prefs):
    rig = rigify_human(bpy)
    _key_scene(bpy, rig)
    before = _own(ext, rig)
    saved = ext.curves.SavedCurves(ext.keys.channelbag(rig))
    props = ("location", "rotation_quaternion", "rotation_euler", "scale")
    static = {pb.name: {p: tuple(getattr(pb, p)) for p in props} for pb in rig.pose.bones}
    level, message = _fill(bpy, ext)
    assert "foot.L, foot.R in IK filled through their IK controls" in message, message
    assert "limbs in IK (" not in message, message  # the old warning: every limb in IK was driven or left alone
    assert "not moved: hand.R in IK" in message, message
    assert _own(ext, rig) == before  # the animator's keys (the IK ones too), bit for bit
    written = {p: f for p, f in generated_frames(ext, rig).items() if f}
    by_bone = {}
    for (path, _), frames in written.items():
        by_bone.setdefault(path.split('"')[1], set()).update(frames)
    # the legs' IK controls keyed on exactly the frames between the keys, none on a key nor after the last one
    for side in "LR":
        for bone in (f"foot_ik.{side}", f"thigh_ik.{side}", f"toe_ik.{side}", f"thigh_fk.{side}"):
            assert sorted(by_bone.get(bone, ())) == TARGETS, (bone, by_bone.get(bone))
    assert not any(p[0].startswith('pose.bones["thigh_ik.L"].rotation_euler') and p[1] != 1 for p in written)
    assert all(1.0 <= f <= 21.0 for frames in by_bone.values() for f in frames)  # nothing outside the keys' span
    # the arm left in IK with no key, and the FK arm's IK controls: untouched
    for bone in ("upper_arm_fk.R", "forearm_fk.R", "hand_fk.R", "hand_ik.R", "upper_arm_ik.R", "hand_ik.L",
                 "upper_arm_ik.L", "upper_arm_ik_target.L", "foot_heel_ik.L", "foot_spin_ik.L"):
        assert bone not in by_bone, bone
    assert sorted(by_bone["forearm_fk.L"]) == TARGETS
    # the evaluated legs between the keys are the fill: the IK chain where the FK controls Fill wrote are
    names = [n.format(s=s) for n in LEG for s in "LR"] + [f"{b}_fk.{s}" for b in ("thigh", "shin", "foot", "toe")
                                                          for s in "LR"]
    ik = _heads(bpy, rig, names, TARGETS)
    for f in TARGETS:
        for s in "LR":
            for org, fk in zip(LEG, ("thigh_fk", "shin_fk", "foot_fk", "toe_fk"), strict=True):
                gap = (ik[f][org.format(s=s)] - ik[f][f"{fk}.{s}"]).length
                assert gap < (KNEE_TOLERANCE if "shin" in org else TOLERANCE), (f, org, s, gap)
    moved = max((ik[f]["ORG-foot.L"] - ik[TARGETS[0]]["ORG-foot.L"]).length for f in TARGETS)
    assert moved > 0.1  # the stride is filled, not held

    # a refill replaces Anyfill's keys on the IK controls (their provenance is recorded: none is taken as the
    # animator's); a pose the animator keys over one of them (Blender keeps it typed Generated) is the animator's
    level, message = _fill(bpy, ext)
    assert "kept as your keys" not in message, message
    assert {p: f for p, f in generated_frames(ext, rig).items() if f} == written
    scene = bpy.context.scene
    scene.frame_set(5)
    foot = rig.pose.bones["foot_ik.L"]
    foot.location = (0.0, 0.0, 0.2)
    foot.keyframe_insert("location", frame=5)
    mine = [k.co[1] for k in ext.keys.channelbag(rig).fcurves.find('pose.bones["foot_ik.L"].location', index=2)
            .keyframe_points if k.co[0] == 5.0]
    level, message = _fill(bpy, ext)
    assert "kept as your keys: foot_ik.L" in message and "frame 5" in message, message
    fc = ext.keys.channelbag(rig).fcurves.find('pose.bones["foot_ik.L"].location', index=2)
    assert [(k.co[1], k.type) for k in fc.keyframe_points if k.co[0] == 5.0] == [(mine[0], "KEYFRAME")]
    assert 5.0 not in generated_frames(ext, rig)[('pose.bones["thigh_fk.L"].rotation_quaternion', 0)]

    # the same poses keyed on the FK controls, the legs in FK: the same fill (world positions within TOLERANCE)
    saved.restore()  # the rig as before the first fill: its curves, and its bones' values without a curve
    for name, values in static.items():
        for p, v in values.items():
            setattr(rig.pose.bones[name], p, v)
    for f in KEYS:
        scene.frame_set(f)
        pose = {org.format(s=s): rig.pose.bones[org.format(s=s)].matrix.copy() for org in LEG for s in "LR"}
        _switch(bpy, rig, 1.0)
        for org, fk in zip(LEG, ("thigh_fk", "shin_fk", "foot_fk", "toe_fk"), strict=True):
            for s in "LR":
                pb = rig.pose.bones[f"{fk}.{s}"]
                pb.matrix = pose[org.format(s=s)]
                pb.location, pb.scale = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # the rotation alone, as Fill reads it
                bpy.context.view_layer.update()
                pb.keyframe_insert("rotation_quaternion", frame=f)
        _switch(bpy, rig, 0.0)
    _switch(bpy, rig, 1.0)
    level, message = _fill(bpy, ext)
    assert "in IK filled through their IK controls" not in message or "foot." not in message, message
    fk = _heads(bpy, rig, [n.format(s=s) for n in LEG for s in "LR"], TARGETS)
    gaps = {n: max((fk[f][n] - ik[f][n]).length for f in TARGETS) for n in fk[TARGETS[0]]}
    assert all(g < (KNEE_TOLERANCE if "shin" in n else TOLERANCE) for n, g in gaps.items()), gaps
    assert not [p for p, f in generated_frames(ext, rig).items() if f and p[0].startswith('pose.bones["foot_ik.')]


def test_complete_pose_and_a_limb_fill_cannot_drive(bpy, ext, prefs):
    """Complete Pose keys the IK controls of a leg in IK on the current frame only; a limb in IK whose tip FK control
    is not mapped is written on its FK controls as before and the report still names it."""
    rig = rigify_human(bpy)
    _key_scene(bpy, rig)
    before = _own(ext, rig)
    scene = bpy.context.scene
    scene.frame_set(6)
    op = driven(ext, ext.operators.ANYFILL_OT_complete_pose)
    assert op.execute(bpy.context) == {"FINISHED"}, op.reports
    assert "foot.L, foot.R in IK filled through their IK controls" in op.reports[-1][1], op.reports
    written = {p: f for p, f in generated_frames(ext, rig).items() if f}
    assert written and all(f == [6.0] for f in written.values())
    assert any(p[0].startswith('pose.bones["foot_ik.R"]') for p in written)
    assert _own(ext, rig) == before
    for m in rig.anyfill.joints:  # the right foot's tip unmapped: that leg cannot be driven through its IK
        if m.part == "body" and m.joint == "Foot_R":
            m.bone = ""
    scene.frame_set(1)
    level, message = _fill(bpy, ext)
    assert level == {"WARNING"} and "limbs in IK (thigh_parent.R" in message, message
    assert "foot.L in IK filled through their IK controls" in message, message

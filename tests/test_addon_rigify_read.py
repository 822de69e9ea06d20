"""A generated Rigify rig read as Blender shows it, in the real ``bpy`` against a real backend.

A generated rig (Blender's bundled Rigify, Human metarig, Generate Rig) hangs its controls under bones that
constraints move: the arms under ``ORG-shoulder`` (a copy of the ``shoulder`` control), the head and neck under
bones that copy the torso's rotation, the FK spine under bones that copy half the ``hips`` and ``chest`` controls.
Its ``root`` lies flat on the floor, mapped to the body's joint_Root and never keyed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_addon_interactive import rigify_human

pytestmark = [pytest.mark.blender]

KEYS = (1, 11, 21)


def _turn(pb, axis: int, angle: float) -> None:
    q = [math.cos(angle / 2), 0.0, 0.0, 0.0]
    q[1 + axis] = math.sin(angle / 2)
    pb.rotation_mode = "QUATERNION"
    pb.rotation_quaternion = q


def _key_walk(bpy, rig) -> None:
    """The torso carried 1 m forward (-Y) at a constant height and turned; the shoulders, hips, chest and neck
    controls turned (the arms and the head hang from what they move), a leg and an arm keyed on FK controls."""
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 21
    for s in "LR":
        rig.pose.bones[f"thigh_parent.{s}"]["IK_FK"] = 1.0
        rig.pose.bones[f"upper_arm_parent.{s}"]["IK_FK"] = 1.0
    rig.update_tag()
    for i, f in enumerate(KEYS):
        scene.frame_set(f)
        a = 0.3 * (i - 1)
        torso = rig.pose.bones["torso"]
        rest = np.array(rig.data.bones["torso"].matrix_local, dtype=np.float64)[:3, :3]
        # in the torso's rest axes: 0.5 m a key along the rig's forward (-Y), level
        torso.location = rest.T @ np.array([0.0, -0.5 * i, 0.0])
        _turn(torso, 1, a)
        torso.keyframe_insert("location", frame=f)
        for name, axis, angle in (("torso", 1, a), ("hips", 0, a), ("chest", 2, -a), ("neck", 0, a),
                                  ("head", 2, a), ("shoulder.L", 2, 0.4 + a), ("shoulder.R", 0, a),
                                  ("upper_arm_fk.L", 0, a), ("forearm_fk.L", 0, 0.5), ("thigh_fk.L", 0, a),
                                  ("spine_fk.001", 0, 0.1 * a), ("spine_fk.003", 2, 0.1 * a)):
            _turn(rig.pose.bones[name], axis, angle)
            rig.pose.bones[name].keyframe_insert("rotation_quaternion", frame=f)
    scene.anyfill.range_mode, scene.anyfill.bones, scene.anyfill.keys_output = "SCENE", "ALL", "DENSE"
    bpy.context.view_layer.objects.active = rig
    rig.select_set(True)
    rig.anyfill.model = "body"
    assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}


def test_rigify_controls_are_read_where_blender_shows_them(bpy, ext, prefs):
    """The mapped controls' armature-space matrices as Fill reads them at the keys are Blender's evaluated ones:
    the constraints the controls hang under are followed (read through the bone hierarchy alone, the arms were off
    by the shoulder's turn, the head by the torso's against the neck's; 45-59 and 29 degrees on a walk). The rig's
    unkeyed ``root`` reads as the model's world: the torso carried level is sent level (aimed at the hips, the
    root's match tilted and turned the whole walk: its hips sank 1.1 m over 3 m of a Bandai walk)."""
    rig = rigify_human(bpy)
    _key_walk(bpy, rig)
    model = ext.client.model_info(ext.client.Client(prefs.backend_url), "body")
    plan = ext.plan.prepare(bpy.context, rig, "fill", model)
    ret = plan.retarget
    pose = ret.rig.pose(plan.basis)
    rows = [plan.frames.index(float(f)) for f in KEYS]
    worst = {}
    for f, r in zip(KEYS, rows, strict=True):
        bpy.context.scene.frame_set(f)
        for bone in ret.mapping.values():
            if bone == "root":
                continue
            shown = np.array(rig.pose.bones[bone].matrix, dtype=np.float64)
            read = pose[r, ret.rig.index[bone]]
            cos = (np.trace(read[:3, :3].T @ shown[:3, :3]) - 1) / 2
            worst[bone] = max(worst.get(bone, (0.0, 0.0)), (round(math.degrees(math.acos(min(1.0, cos))), 3),
                              round(1e3 * float(np.linalg.norm(read[:3, 3] - shown[:3, 3])), 3)))
    # within 0.1 degree and 0.1 mm (Blender blends a constraint's influence in float32: 0.03 degree here)
    off = {b: v for b, v in worst.items() if v[0] > 0.1 or v[1] > 0.1}  # degrees, millimetres
    assert not off, str(off)
    assert {"upper_arm_fk.L", "hand_fk.R", "head", "neck"} <= set(worst)
    # the hips sent level: the torso keeps its height, so the model's hips keep theirs (model Y is up)
    hips = np.array([t for t in plan.body["joints"]["Hips"]["translations"] if t is not None])
    assert len(hips) == len(KEYS)
    travel = hips[-1] - hips[0]
    assert np.linalg.norm(travel) > 50.0, hips  # 1 m forward, in the model's centimetres
    assert abs(travel[1]) < 0.01 * np.linalg.norm(travel), hips
    assert "joint_Root" not in plan.body["joints"]


def _generated(ext, rig) -> dict:
    """Every curve's keys (frame, value) of the channels Anyfill wrote."""
    out = {}
    for fc in ext.keys.channelbag(rig).fcurves:
        kp = fc.keyframe_points
        out[(fc.data_path, fc.array_index)] = np.array([tuple(k.co) for k in kp])
    return out


def test_refills_of_bones_with_only_generated_keys_are_the_same(bpy, ext, prefs):
    """Mapped bones that hold only Anyfill's keys (a Rigify rig's spine, neck and head, filled by an earlier fill)
    are Anyfill's to fill: a refill reads them as a bone with no key (at rest), so every refill writes the same keys
    wherever the playhead stands (they were read at what the last fill showed at the playhead, so each refill
    differed). A bone with no key at all is held (tests/test_addon_hardening.py)."""
    rig = rigify_human(bpy)
    _key_walk(bpy, rig)
    for fc in ext.keys.channelbag(rig).fcurves:  # as an earlier fill left them: Anyfill's keys only
        if any(f'"{b}"' in fc.data_path for b in ("spine_fk.001", "spine_fk.003", "neck", "head")):
            for k in fc.keyframe_points:
                k.type = "GENERATED"
    scene = bpy.context.scene
    written = []
    for frame in (1, 7, 7, 15):
        scene.frame_set(frame)
        assert bpy.ops.anim.anyfill_fill() == {"FINISHED"}
        written.append(_generated(ext, rig))
    spine = [k for k in written[0] if k[0].startswith('pose.bones["spine_fk.001"]')]
    assert spine and not any(k in written[0] for k in [('pose.bones["hips"].location', 0)])
    for later in written[1:]:
        assert later.keys() == written[0].keys()
        worst = max(float(np.abs(later[k] - v).max()) for k, v in written[0].items())
        assert worst == 0.0, worst

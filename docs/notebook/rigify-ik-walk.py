"""Report-only: Fill on a generated Rigify rig whose legs are in IK (the IK controls keyed every 10 frames).

A Bandai walk is baked onto the rig's FK controls and torso (every frame: the truth), the legs are snapped to IK
with Rigify's own IK->FK snap on every frame and their IK controls keyed, the legs switched to IK (IK_FK 0) and
their FK keys removed; then every curve is thinned to a key every 10 frames (Blender's Bezier through those keys
is the baseline) and Anyfill fills the rest. Scored: the evaluated DEF bones' world positions on the unkeyed
frames, against the truth and against Bezier.

  ROOT (the source tree measured; default: this checkout)   SHIPPED=1 (the shipped models)   LEGS=IK|FK   ARMS=FK|IK
  OMP_NUM_THREADS=1 SHIPPED=1 LEGS=IK .venv/bin/python docs/notebook/rigify-ik-walk.py   (from the project root;
  ../shared/data beside it)
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.environ.get("ROOT", str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="ik-measure-"))
if os.environ.get("SHIPPED") == "1":
    os.environ["ANYFILL_TEST_SHIPPED_MODELS"] = "1"
sys.path[:0] = [f"{ROOT}/tests", ROOT]

import blender_support as bs  # noqa: E402
import numpy as np  # noqa: E402

bpy = bs.import_bpy()
ext = bs.install_extension(bpy)
from mathutils import Vector  # noqa: E402

BODY = Path(ROOT).parent / "shared/data/bandai/dataset-1/dataset-1_walk_angry_001.bvh"
N = int(os.environ.get("NFRAMES", "91"))
STEP = 10
KEEP = set(range(1, N + 1, STEP))
LEGS, ARMS = os.environ.get("LEGS", "IK"), os.environ.get("ARMS", "FK")
sc = bpy.context.scene
DRIVE = {"torso": ("Hips", None), "spine_fk.001": ("Spine", "Chest"), "spine_fk.003": ("Chest", "Neck"),
         "neck": ("Neck", "Head"), "head": ("Head", None)}
for s in "LR":
    DRIVE.update({f"shoulder.{s}": (f"Shoulder_{s}", f"UpperArm_{s}"),
                  f"upper_arm_fk.{s}": (f"UpperArm_{s}", f"LowerArm_{s}"),
                  f"forearm_fk.{s}": (f"LowerArm_{s}", f"Hand_{s}"), f"hand_fk.{s}": (f"Hand_{s}", None),
                  f"thigh_fk.{s}": (f"UpperLeg_{s}", f"LowerLeg_{s}"), f"shin_fk.{s}": (f"LowerLeg_{s}", f"Foot_{s}"),
                  f"foot_fk.{s}": (f"Foot_{s}", f"Toes_{s}"), f"toe_fk.{s}": (f"Toes_{s}", None)})
DEFS = ["DEF-spine", "DEF-spine.001", "DEF-spine.003", "DEF-spine.004", "DEF-spine.006"]
for s in "LR":
    DEFS += [f"DEF-shoulder.{s}", f"DEF-upper_arm.{s}", f"DEF-forearm.{s}", f"DEF-hand.{s}",
             f"DEF-thigh.{s}", f"DEF-shin.{s}", f"DEF-foot.{s}", f"DEF-toe.{s}"]
LEG_DEFS = [n for n in DEFS if any(k in n for k in ("thigh", "shin", "foot", "toe"))]
ARM_DEFS = [n for n in DEFS if any(k in n for k in ("upper_arm", "forearm", "hand"))]


def make_rig():
    bs.clean_scene(bpy)
    bpy.ops.preferences.addon_enable(module="rigify")
    bpy.ops.object.armature_human_metarig_add()
    meta = bpy.context.view_layer.objects.active
    assert bpy.ops.pose.rigify_generate() == {"FINISHED"}
    rig = next(o for o in bpy.data.objects if o.type == "ARMATURE" and o.name == "rig")
    meta.hide_set(True)
    return rig


def import_capture(rig):
    hip_rig = rig.data.bones["DEF-thigh.L"].head_local.z
    bpy.ops.object.select_all(action="DESELECT")
    assert bpy.ops.import_anim.bvh(filepath=str(BODY), global_scale=1.0, rotate_mode="NATIVE",
                                   update_scene_fps=False, update_scene_duration=False) == {"FINISHED"}
    cap = bpy.context.view_layer.objects.active
    sc.frame_set(1)
    hip = sum((cap.matrix_world @ cap.pose.bones[f"UpperLeg_{s}"].head).z for s in "LR") / 2
    foot = min((cap.matrix_world @ cap.pose.bones[f"Foot_{s}"].head).z for s in "LR")
    s = (hip_rig - rig.data.bones["DEF-foot.L"].head_local.z) / (hip - foot)
    cap.scale = (s, s, s)
    bpy.context.view_layer.update()
    return cap


def set_switch(rig, bones, value):
    for b in bones:
        rig.pose.bones[b]["IK_FK"] = value
    rig.update_tag()
    bpy.context.view_layer.update()


def bake(rig, cap, frames):
    """Each FK control (and the torso) turned as its capture joint is, from frame 1's offset; every frame keyed."""
    set_switch(rig, ["thigh_parent.L", "thigh_parent.R", "upper_arm_parent.L", "upper_arm_parent.R"], 1.0)
    bpy.context.view_layer.objects.active = rig
    sc.frame_set(frames[0])

    def capw(j):
        return cap.matrix_world @ cap.pose.bones[j].matrix

    rwm = rig.matrix_world
    off = {}
    for ctrl, (j, child) in DRIVE.items():
        R = (rwm @ rig.data.bones[ctrl].matrix_local).to_quaternion()
        W0 = R
        if child:
            d = (capw(child).translation - capw(j).translation).normalized()
            W0 = (R @ Vector((0, 1, 0))).rotation_difference(d) @ R
        off[ctrl] = capw(j).to_quaternion().inverted() @ W0
    H0 = capw("Hips").translation.copy()
    T0 = (rwm @ rig.data.bones["torso"].matrix_local).translation.copy()
    prev = {}
    order = sorted(DRIVE, key=lambda b: len(rig.data.bones[b].parent_recursive))
    for f in frames:
        sc.frame_set(f)
        for ctrl in order:
            M = (capw(DRIVE[ctrl][0]).to_quaternion() @ off[ctrl]).to_matrix().to_4x4()
            pb = rig.pose.bones[ctrl]
            M.translation = T0 + (capw("Hips").translation - H0) if ctrl == "torso" else (rwm @ pb.matrix).translation
            pb.matrix = rwm.inverted() @ M
            bpy.context.view_layer.update()
        for ctrl in order:
            pb = rig.pose.bones[ctrl]
            if pb.rotation_mode == "QUATERNION":
                q = pb.rotation_quaternion.copy()
                if ctrl in prev and q.dot(prev[ctrl]) < 0:
                    q.negate()
                    pb.rotation_quaternion = q
                prev[ctrl] = q
                pb.keyframe_insert("rotation_quaternion", frame=f, group=ctrl)
            else:
                e = pb.rotation_euler.to_matrix().to_euler(pb.rotation_mode, prev.get(ctrl, pb.rotation_euler))
                pb.rotation_euler = e
                prev[ctrl] = e.copy()
                pb.keyframe_insert("rotation_euler", frame=f, group=ctrl)
            if ctrl == "torso":
                pb.keyframe_insert("location", frame=f, group=ctrl)


def rig_ops(rig):
    rig_id = rig.data["rig_id"]
    return {name: getattr(bpy.ops.pose, f"{name}_{rig_id}") for name in ("rigify_limb_ik2fk",)}


def limb_args(side, leg):
    if leg:
        return dict(prop_bone=f"thigh_parent.{side}",
                    fk_bones=json.dumps([f"thigh_fk.{side}", f"shin_fk.{side}", f"foot_fk.{side}", f"toe_fk.{side}"]),
                    ik_bones=json.dumps([f"thigh_ik.{side}", f"MCH-shin_ik.{side}", f"MCH-thigh_ik_target.{side}"]),
                    ctrl_bones=json.dumps([f"thigh_ik.{side}", f"thigh_ik_target.{side}", f"foot_ik.{side}"]),
                    tail_bones=json.dumps([f"toe_ik.{side}"]),
                    extra_ctrls=json.dumps([f"foot_heel_ik.{side}", f"foot_spin_ik.{side}"]))
    return dict(prop_bone=f"upper_arm_parent.{side}",
                fk_bones=json.dumps([f"upper_arm_fk.{side}", f"forearm_fk.{side}", f"hand_fk.{side}"]),
                ik_bones=json.dumps([f"upper_arm_ik.{side}", f"MCH-forearm_ik.{side}",
                                     f"MCH-upper_arm_ik_target.{side}"]),
                ctrl_bones=json.dumps([f"upper_arm_ik.{side}", f"upper_arm_ik_target.{side}", f"hand_ik.{side}"]),
                tail_bones="[]", extra_ctrls="[]")


def to_ik(rig, frames, leg):
    """Rigify's own IK->FK snap on every frame, the IK controls keyed; then the limbs in IK, their FK keys gone."""
    snap = rig_ops(rig)["rigify_limb_ik2fk"]
    bag = ext.keys.channelbag(rig)
    for side in "LR":
        a = limb_args(side, leg)
        ctrls = json.loads(a["ctrl_bones"]) + json.loads(a["tail_bones"])
        for f in frames:
            sc.frame_set(f)
            assert snap(**a) == {"FINISHED"}
            for c in ctrls:
                pb = rig.pose.bones[c]
                if c.endswith("_ik_target." + side):
                    continue  # no pole: its position does nothing
                pb.keyframe_insert("location", frame=f, group=c)
                prop = "rotation_quaternion" if pb.rotation_mode == "QUATERNION" else "rotation_euler"
                pb.keyframe_insert(prop, frame=f, group=c)
        fk = json.loads(a["fk_bones"])
        for fc in list(bag.fcurves):
            if any(fc.data_path.startswith(f'pose.bones["{b}"]') for b in fk):
                bag.fcurves.remove(fc)
        rig.pose.bones[a["prop_bone"]]["IK_FK"] = 0.0
        for b in fk:  # the FK controls left at rest (never keyed): what a rig animated in IK holds
            pb = rig.pose.bones[b]
            pb.rotation_quaternion, pb.location = (1, 0, 0, 0), (0, 0, 0)
    rig.update_tag()
    sc.frame_set(frames[0])


def def_heads(rig, frames, names=DEFS):
    out = {}
    for f in frames:
        sc.frame_set(int(f))
        out[f] = {n: np.array(rig.matrix_world @ rig.pose.bones[n].head) for n in names}
    return out


def thin(rig, keep):
    bag = ext.keys.channelbag(rig)
    for fc in bag.fcurves:
        kp = fc.keyframe_points
        for i in reversed(range(len(kp))):
            if round(kp[i].co[0]) not in keep:
                kp.remove(kp[i], fast=True)
        for k in kp:
            k.interpolation, k.handle_left_type, k.handle_right_type = "BEZIER", "AUTO_CLAMPED", "AUTO_CLAMPED"
        fc.update()


def err(a, truth, frames, names):
    return float(np.mean([np.linalg.norm(a[f][n] - truth[f][n]) for f in frames for n in names]))


def main():
    be = bs.start_backend()
    p = bpy.context.preferences.addons[bs.EXT_MODULE].preferences
    p.backend_url, p.token = be.url, ""
    rig = make_rig()
    cap = import_capture(rig)
    sc.frame_start, sc.frame_end = 1, N
    frames = list(range(1, N + 1))
    bake(rig, cap, frames)
    truth = def_heads(rig, frames)
    if LEGS == "IK":
        to_ik(rig, frames, leg=True)
    if ARMS == "IK":
        to_ik(rig, frames, leg=False)
    snapped = def_heads(rig, frames)
    thin(rig, KEEP)
    bez = def_heads(rig, frames)
    unk = [f for f in frames if f not in KEEP]
    s = sc.anyfill
    s.keys_output, s.bones, s.range_mode = "DENSE", "ALL", "SCENE"
    bpy.context.view_layer.objects.active = rig
    rig.select_set(True)
    sc.frame_set(1)
    from test_addon_interactive import driven
    op = driven(ext, ext.operators.ANYFILL_OT_fill)
    t = time.perf_counter()
    result = op.execute(bpy.context)
    seconds = time.perf_counter() - t
    fill = def_heads(rig, frames)
    out = {"root": ROOT, "legs_mode": LEGS, "arms_mode": ARMS, "frames": N, "every": STEP, "fill_s": round(seconds, 2),
           "result": sorted(result), "reports": [m for _, m in op.reports],
           "snap_error_m": err(snapped, truth, frames, DEFS)}
    for what, names in (("all", DEFS), ("legs", LEG_DEFS), ("arms", ARM_DEFS)):
        f_, b_ = err(fill, truth, unk, names), err(bez, truth, unk, names)
        out[what] = {"fill_m": round(f_, 4), "bezier_m": round(b_, 4), "ratio": round(f_ / b_, 2)}
    foot = {n: round(float(max(np.linalg.norm(fill[f][n] - truth[f][n]) for f in unk)), 3)
            for n in ("DEF-foot.L", "DEF-foot.R")}
    out["largest_foot_error_m"] = foot
    print(json.dumps(out, indent=1, default=float))


main()

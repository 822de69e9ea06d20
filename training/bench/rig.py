"""``anyfill bench rig``: the real extension on real rigs in headless Blender, against Blender's own curves.

For each clip: Blender's BVH importer makes the ground truth; a copy keeps every n-th frame's keys (and the
last), which Blender turns into its default curves (Bezier, Auto Clamped): the *Bezier* baseline. The
extension's own operators (Auto Map, Fill) fill the copy through a real ``anyfill serve`` on 127.0.0.1.
Scores, over the frames between keys, on the mapped body bones (hands: the finger bones, in the hand bone's
frame and in world): mean world joint-position error against the ground truth (rig units and the ratio to
Bezier's), the *pop ratio* (the largest frame-to-frame joint step on the frames next to each key, over the
ground truth's largest there) and whether the kept keys are bit-identical afterwards; on a full rig also how
far the hand bone's head leaves the forearm's tail. The ground truth can be another motion put on a Mixamo
rig with Blender's own constraints: a body clip of the training skeleton, moving the rig as a capture would
(``--via``), a hand take's finger motion on its fingers (``--hands``).

Needs the ``bpy`` wheel (``pip install bpy==5.0.1``, CPython 3.11) and the backend's packages.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.bench.commands import DEFAULT_CLIPS
from training.bench.inbetween import pop_ratio

EXT_MODULE = "bl_ext.user_default.anyfill"


@dataclass
class Session:
    bpy: object
    ext: object
    url: str
    server: subprocess.Popen
    log: Path


def start_session(addon_zip: Path, models: Sequence[str] = ("hand", "body")) -> Session:
    """Real Blender with the built extension (``addon_zip``, see ``anyfill build-addon``) enabled, user
    resources in a temporary folder, and a real ``anyfill serve`` on a free loopback port with the given
    models; the extension finds its token."""
    tmp = Path(tempfile.mkdtemp(prefix="anyfill-bench-rig-"))
    os.environ.setdefault("BLENDER_USER_RESOURCES", str(tmp / "blender"))
    config = tmp / "config"
    os.environ["XDG_CONFIG_HOME"] = str(config)
    os.environ.pop("ANYFILL_TOKEN_FILE", None)
    import bpy

    if not bpy.context.preferences.addons.get(EXT_MODULE):
        bpy.ops.extensions.package_install_files(filepath=str(addon_zip), repo="user_default",
                                                 enable_on_install=True)
    ext = sys.modules[EXT_MODULE]
    log = tmp / "serve.log"
    proc, url = serve([a for m in models for a in ("--model", m)], dict(os.environ), log)
    prefs = bpy.context.preferences.addons[EXT_MODULE].preferences
    prefs.backend_url, prefs.token = url, ""
    return Session(bpy, ext, url, proc, log)


def serve(args: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """``anyfill serve --port 0 ARGS`` in a subprocess, its output in ``log``; returns it and its URL once it
    listens (a server that exits or does not listen within 3 minutes raises, with its log)."""
    exe = Path(sys.executable).with_name("anyfill")
    cmd = [str(exe), "serve", "--port", "0", "--log-level", "info", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"anyfill serve exited ({proc.returncode}):\n{log.read_text()}")
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text())
        if m:
            return proc, m.group(1)
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"anyfill serve did not start:\n{log.read_text()}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def stop_session(s: Session) -> None:
    stop_server(s.server)


def clean_scene(bpy) -> None:
    for ob in list(bpy.data.objects):
        bpy.data.objects.remove(ob)
    for coll in (bpy.data.armatures, bpy.data.actions):
        for item in list(coll):
            coll.remove(item)


def import_clip(bpy, path: Path):
    """Blender's own BVH importer, at the file's frame rate, the scene's range set to the clip's frames;
    returns the armature object."""
    clean_scene(bpy)
    assert bpy.ops.import_anim.bvh(filepath=str(path), update_scene_fps=True, update_scene_duration=False,
                                   rotate_mode="NATIVE") == {"FINISHED"}
    ob = bpy.context.view_layer.objects.active
    lo, hi = ob.animation_data.action.frame_range
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = int(round(lo)), int(round(hi))
    return ob


# A Mixamo rig's bones and the training skeleton's joint at the same place, each with the (rig, source) pairs of
# joints after it that aim it (the rig's Spine aims at its Spine2 through Spine1, which the source lacks); bones
# without aims (head, hands, toes) turn as the source's bone turns. What ``put_on_rig`` carries over,
# independently of the extension's retargeting.
MIXAMO_BODY = {
    "Hips": ("Hips", (("Spine", "Spine"), ("LeftUpLeg", "UpperLeg_L"), ("RightUpLeg", "UpperLeg_R"))),
    "Spine": ("Spine", (("Spine2", "Chest"),)),
    "Spine2": ("Chest", (("Neck", "Neck"), ("LeftShoulder", "Shoulder_L"), ("RightShoulder", "Shoulder_R"))),
    "Neck": ("Neck", (("Head", "Head"),)),
    "Head": ("Head", ()),
    **{f"{side}{bone}": (f"{joint}_{s}", ((f"{side}{aim}", f"{target}_{s}"),) if aim else ())
       for side, s in (("Left", "L"), ("Right", "R"))
       for bone, joint, aim, target in (("Shoulder", "Shoulder", "Arm", "UpperArm"),
                                        ("Arm", "UpperArm", "ForeArm", "LowerArm"),
                                        ("ForeArm", "LowerArm", "Hand", "Hand"), ("Hand", "Hand", None, None),
                                        ("UpLeg", "UpperLeg", "Leg", "LowerLeg"), ("Leg", "LowerLeg", "Foot", "Foot"),
                                        ("Foot", "Foot", "ToeBase", "Toes"), ("ToeBase", "Toes", None, None))},
}


def mixamo_prefix(rig) -> str:
    """What a Mixamo rig's bone names start with (``mixamorig:``, ``mixamorig7:``...): its Hips bone's prefix."""
    return prefix_of([b.name for b in rig.data.bones])


def prefix_of(names: Sequence[str]) -> str:
    """The prefix of the first of ``names`` that ends with ``Hips`` ("" when none does)."""
    return next((n[: -len("Hips")] for n in names if n.endswith("Hips")), "")


def first_frame_rotations(src: np.ndarray, rest: np.ndarray, parents: Sequence[int], mapping: dict[int, int],
                          aims: dict[int, Sequence[tuple[int, int]]]) -> np.ndarray:
    """Each rig bone's rotation (N, 3, 3) on the first frame of another skeleton's motion: aimed bones turned
    from their rest so that their directions to their aims lie along the source's (the best rotation over all of
    them: a bone with several children, such as the hips or a chest, is not aimed by its own axis); every other
    bone at its rest under its parent. ``src`` (S, 4, 4): the source bones' matrices on that frame; ``rest`` (N,
    4, 4): the rig's rest matrices in the same space; ``parents``: each rig bone's parent (-1 for none, parents
    first); ``mapping``: rig bone -> source bone at the same joint; ``aims``: rig bone -> (rig bone, source bone)
    pairs of the joints after it."""
    from scipy.spatial.transform import Rotation

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    first = np.zeros((len(rest), 3, 3))
    for b, p in enumerate(parents):
        if b in mapping and aims.get(b):
            rig_dirs = unit(np.array([rest[c, :3, 3] - rest[b, :3, 3] for c, _ in aims[b]]))
            src_dirs = unit(np.array([src[t, :3, 3] - src[mapping[b], :3, 3] for _, t in aims[b]]))
            first[b] = Rotation.align_vectors(src_dirs, rig_dirs)[0].as_matrix() @ rest[b, :3, :3]
        elif p >= 0:
            first[b] = first[p] @ rest[p, :3, :3].T @ rest[b, :3, :3]
        else:
            first[b] = rest[b, :3, :3]
    return first


def put_on_rig(bpy, source, rig_path: Path):
    """The training skeleton's motion of ``source`` (a Bandai clip imported by Blender) put on the Mixamo rig of
    ``rig_path`` as a capture of that motion would move it, with Blender's own parenting and constraints, then
    baked: the source scaled to the rig's leg length; the rig's hips where the source's are (Copy Location);
    each mapped bone aimed where the source's bone points on the first frame (:func:`first_frame_rotations`),
    an empty holding that rotation parented to the source's bone, and the rig's bone copying the empty's world
    rotation (Copy Rotation) on every frame: it turns exactly as the source's bone turns, twist included, so it
    keeps pointing where the source's points. Bones the source has no joint for (Spine1, fingers) follow their
    parent as at rest. Returns the baked rig (the source and the empties are removed): a foreign rig with a
    motion of the test split."""
    from mathutils import Matrix

    assert bpy.ops.import_anim.bvh(filepath=str(rig_path), update_scene_fps=False, update_scene_duration=False,
                                   rotate_mode="NATIVE") == {"FINISHED"}
    rig = bpy.context.view_layer.objects.active
    rig.animation_data_clear()
    for pb in rig.pose.bones:  # the import left the rig posed as on its last evaluated frame: back to rest
        pb.matrix_basis = Matrix.Identity(4)
    bones = rig.data.bones
    prefix = mixamo_prefix(rig)

    def leg(ob, names):
        b = ob.data.bones
        return sum((b[names[i + 1]].head_local - b[names[i]].head_local).length for i in range(len(names) - 1))

    s = leg(rig, [prefix + n for n in ("LeftUpLeg", "LeftLeg", "LeftFoot")]) / leg(
        source, ["UpperLeg_L", "LowerLeg_L", "Foot_L"])
    source.scale = (s, s, s)
    scene = bpy.context.scene
    scene.frame_set(scene.frame_start)
    index = {b.name: i for i, b in enumerate(bones)}
    src_names = [b.name for b in source.pose.bones]
    rig_world = np.array(rig.matrix_world)
    src = np.linalg.inv(rig_world) @ world_poses(bpy, source, [scene.frame_start])[0]
    rest = np.array([np.array(b.matrix_local) for b in bones])
    parents = [index[b.parent.name] if b.parent else -1 for b in bones]
    mapping = {index[prefix + bone]: src_names.index(joint) for bone, (joint, _) in MIXAMO_BODY.items()}
    aims = {index[prefix + bone]: [(index[prefix + a], src_names.index(t)) for a, t in pairs]
            for bone, (_, pairs) in MIXAMO_BODY.items()}
    first = first_frame_rotations(src, rest, parents, mapping, aims)
    empties = {}
    for b, j in mapping.items():
        empty = empties[b] = bpy.data.objects.new(f"Aim {bones[b].name}", None)
        scene.collection.objects.link(empty)
        empty.parent, empty.parent_type, empty.parent_bone = source, "BONE", src_names[j]
    bpy.context.view_layer.update()
    for b, j in mapping.items():
        empty = empties[b]
        aim = np.eye(4)
        aim[:3, :3], aim[:3, 3] = first[b], src[j, :3, 3]
        empty.matrix_world = Matrix((rig_world @ aim).tolist())
        c = rig.pose.bones[bones[b].name].constraints.new("COPY_ROTATION")
        c.target = empty
    c = rig.pose.bones[prefix + "Hips"].constraints.new("COPY_LOCATION")
    c.target, c.subtarget = source, "Hips"
    bake(bpy, rig, [pb.name for pb in rig.pose.bones])
    for ob in [*empties.values(), source]:
        bpy.data.objects.remove(ob)
    rig.name = "GroundTruth"
    return rig


# A generated Rigify rig (Blender's bundled Rigify, Human metarig): the controls an animator keys, each with the
# training skeleton's joint it turns as and the joint it is aimed at on the first frame (none: turned from its rest);
# the DEF bones (what the rig deforms a character with) its rows are scored on.
RIGIFY = "rigify"
RIGIFY_CONTROLS = {"torso": ("Hips", None), "spine_fk.001": ("Spine", "Chest"), "spine_fk.003": ("Chest", "Neck"),
                   "neck": ("Neck", "Head"), "head": ("Head", None),
                   **{f"{bone}.{s}": (f"{joint}_{s}", f"{aim}_{s}" if aim else None) for s in "LR"
                      for bone, joint, aim in (("shoulder", "Shoulder", "UpperArm"),
                                               ("upper_arm_fk", "UpperArm", "LowerArm"),
                                               ("forearm_fk", "LowerArm", "Hand"), ("hand_fk", "Hand", None),
                                               ("thigh_fk", "UpperLeg", "LowerLeg"), ("shin_fk", "LowerLeg", "Foot"),
                                               ("foot_fk", "Foot", "Toes"), ("toe_fk", "Toes", None))}}
RIGIFY_DEF = ["DEF-spine", "DEF-spine.001", "DEF-spine.003", "DEF-spine.004", "DEF-spine.006",
              *(f"DEF-{b}.{s}" for s in "LR" for b in ("shoulder", "upper_arm", "forearm", "hand", "thigh", "shin",
                                                       "foot", "toe"))]


def rigify_rig(bpy):
    """A generated Rigify rig (Human metarig, Generate Rig), its limbs in FK; the metarig hidden."""
    bpy.ops.preferences.addon_enable(module="rigify")
    bpy.ops.object.armature_human_metarig_add()
    meta = bpy.context.view_layer.objects.active
    assert bpy.ops.pose.rigify_generate() == {"FINISHED"}
    rig = next(o for o in bpy.data.objects if o.type == "ARMATURE" and o.name == "rig")
    meta.hide_set(True)
    for b in ("thigh_parent.L", "thigh_parent.R", "upper_arm_parent.L", "upper_arm_parent.R"):
        rig.pose.bones[b]["IK_FK"] = 1.0
    rig.update_tag()
    bpy.context.view_layer.update()
    return rig


def put_on_rigify(bpy, source, legs_ik: bool = False):
    """The training skeleton's motion of ``source`` (a Bandai clip imported by Blender) put on a generated Rigify
    rig's controls as an animator's keys on every frame (the truth): the source scaled to the rig's hip height; each
    control (:data:`RIGIFY_CONTROLS`) aimed on the first frame where the source's bone points (the torso and the
    head as the rig faces at rest, the rig and the source facing the same way), then turning as the source's bone
    turns; the torso moved as the source's hips move. ``legs_ik``: the legs then snapped to IK on every frame with
    Rigify's own IK->FK snap, their IK controls keyed, the legs switched to IK and their FK keys removed. Returns the
    rig (the source is removed)."""
    from mathutils import Vector

    rig = rigify_rig(bpy)
    scene = bpy.context.scene
    scene.frame_set(scene.frame_start)
    bones = rig.data.bones
    hip = sum((source.matrix_world @ source.pose.bones[f"UpperLeg_{s}"].head).z for s in "LR") / 2
    foot = min((source.matrix_world @ source.pose.bones[f"Foot_{s}"].head).z for s in "LR")
    s = (bones["DEF-thigh.L"].head_local.z - bones["DEF-foot.L"].head_local.z) / (hip - foot)
    source.scale = (s, s, s)
    bpy.context.view_layer.update()
    bpy.context.view_layer.objects.active = rig

    def world(j):
        return source.matrix_world @ source.pose.bones[j].matrix

    rwm = rig.matrix_world
    offset = {}
    for ctrl, (j, aim) in RIGIFY_CONTROLS.items():
        rest = (rwm @ bones[ctrl].matrix_local).to_quaternion()
        first = rest
        if aim:
            d = (world(aim).translation - world(j).translation).normalized()
            first = (rest @ Vector((0, 1, 0))).rotation_difference(d) @ rest
        offset[ctrl] = world(j).to_quaternion().inverted() @ first
    hips0 = world("Hips").translation.copy()
    torso0 = (rwm @ bones["torso"].matrix_local).translation.copy()
    order = sorted(RIGIFY_CONTROLS, key=lambda b: len(bones[b].parent_recursive))
    previous = {}
    for f in range(scene.frame_start, scene.frame_end + 1):
        scene.frame_set(f)
        for ctrl in order:
            m = (world(RIGIFY_CONTROLS[ctrl][0]).to_quaternion() @ offset[ctrl]).to_matrix().to_4x4()
            pb = rig.pose.bones[ctrl]
            m.translation = torso0 + (world("Hips").translation - hips0) if ctrl == "torso" else (rwm @ pb.matrix
                                                                                                  ).translation
            pb.matrix = rwm.inverted() @ m
            bpy.context.view_layer.update()
        for ctrl in order:
            pb = rig.pose.bones[ctrl]
            key_rotation(pb, f, previous)
            if ctrl == "torso":
                pb.keyframe_insert("location", frame=f, group=ctrl)
    action = source.animation_data.action if source.animation_data else None
    bpy.data.objects.remove(source)
    if action is not None:
        bpy.data.actions.remove(action)
    if legs_ik:
        legs_to_ik(bpy, rig)
    scene.frame_set(scene.frame_start)
    return rig


def key_rotation(pb, frame: int, previous: dict) -> None:
    """Key ``pb``'s rotation on ``frame`` in the channel its rotation mode uses (a generated Rigify rig's
    ``shoulder`` controls are Euler YXZ: a quaternion key there is ignored and the shoulder stays where it was last
    set), continuous with its key before (``previous``: the bone's last keyed value, updated): a quaternion on the
    same side as it, Euler angles the nearest to it."""
    if pb.rotation_mode == "QUATERNION":
        q = pb.rotation_quaternion.copy()
        if pb.name in previous and q.dot(previous[pb.name]) < 0:
            q.negate()
            pb.rotation_quaternion = q
        previous[pb.name] = q
        pb.keyframe_insert("rotation_quaternion", frame=frame, group=pb.name)
    elif pb.rotation_mode == "AXIS_ANGLE":
        raise ValueError(f"{pb.name}: an axis-angle control, which this bench does not key")
    else:
        e = pb.rotation_euler.to_matrix().to_euler(pb.rotation_mode, previous.get(pb.name, pb.rotation_euler))
        pb.rotation_euler = e
        previous[pb.name] = e.copy()
        pb.keyframe_insert("rotation_euler", frame=frame, group=pb.name)


def legs_to_ik(bpy, rig) -> None:
    """Rigify's own IK->FK snap on every frame of the scene, the legs' IK controls keyed there; then the legs in IK
    (``IK_FK`` 0) and their FK keys removed, their FK controls at rest: a walk keyed in IK."""
    scene = bpy.context.scene
    snap = getattr(bpy.ops.pose, f"rigify_limb_ik2fk_{rig.data['rig_id']}")
    bag = _channelbag(rig)
    for side in "LR":
        fk = [f"thigh_fk.{side}", f"shin_fk.{side}", f"foot_fk.{side}", f"toe_fk.{side}"]
        controls = [f"thigh_ik.{side}", f"foot_ik.{side}", f"toe_ik.{side}"]
        args = dict(prop_bone=f"thigh_parent.{side}", fk_bones=json.dumps(fk),
                    ik_bones=json.dumps([f"thigh_ik.{side}", f"MCH-shin_ik.{side}", f"MCH-thigh_ik_target.{side}"]),
                    ctrl_bones=json.dumps([f"thigh_ik.{side}", f"thigh_ik_target.{side}", f"foot_ik.{side}"]),
                    tail_bones=json.dumps([f"toe_ik.{side}"]),
                    extra_ctrls=json.dumps([f"foot_heel_ik.{side}", f"foot_spin_ik.{side}"]))
        for f in range(scene.frame_start, scene.frame_end + 1):
            scene.frame_set(f)
            assert snap(**args) == {"FINISHED"}
            for c in controls:
                pb = rig.pose.bones[c]
                pb.keyframe_insert("location", frame=f, group=c)
                pb.keyframe_insert("rotation_quaternion" if pb.rotation_mode == "QUATERNION" else "rotation_euler",
                                   frame=f, group=c)
        for fc in list(bag.fcurves):
            if any(fc.data_path.startswith(f'pose.bones["{b}"]') for b in fk):
                bag.fcurves.remove(fc)
        rig.pose.bones[f"thigh_parent.{side}"]["IK_FK"] = 0.0
        for b in fk:
            rig.pose.bones[b].rotation_quaternion, rig.pose.bones[b].location = (1, 0, 0, 0), (0, 0, 0)
    rig.update_tag()


def thin_keys(bag, kept: list[int]) -> None:
    """Keep only the keys on the ``kept`` frames of every curve, on Blender's default curves (Bezier, Auto
    Clamped): what an animator's keys would be."""
    bezier = bpy_enum("interpolation", "BEZIER")
    auto = bpy_enum("handle_left_type", "AUTO_CLAMPED")
    for fc in bag.fcurves:
        kp = fc.keyframe_points
        n = len(kp)
        co = np.empty(2 * n, dtype=np.float32)
        kp.foreach_get("co", co)
        co = co.reshape(n, 2)
        keep = co[np.isin(np.round(co[:, 0]).astype(int), kept)]
        kp.clear()
        kp.add(len(keep))
        kp.foreach_set("co", keep.ravel())
        kp.foreach_set("handle_left", keep.ravel())
        kp.foreach_set("handle_right", keep.ravel())
        kp.foreach_set("interpolation", np.full(len(keep), bezier, dtype=np.int32))
        kp.foreach_set("handle_left_type", np.full(len(keep), auto, dtype=np.int32))
        kp.foreach_set("handle_right_type", np.full(len(keep), auto, dtype=np.int32))
        fc.update()


def bpy_enum(prop: str, name: str) -> int:
    import bpy

    return bpy.types.Keyframe.bl_rna.properties[prop].enum_items[name].value


# A Mixamo hand's finger bones (after "Left"/"Right") and the ManipNet joint each one points at (the next one
# of its finger; a finger's last bone has none: ManipNet's DIP joint is its last point), and the joints that
# place the ManipNet hand on the rig's (wrist and knuckles: the palm, which does not bend).
HAND_TRACKS = {"HandThumb1": "THUMB_MCP_FE", "HandThumb2": "THUMB_IP_FE",
               **{f"Hand{f.title()}{k}": f"{f}_{j}" for f in ("INDEX", "MIDDLE", "RING", "PINKY")
                  for k, j in ((1, "PIP_FE"), (2, "DIP_FE"))}}
PALM = {"Hand": "WRIST", "HandIndex1": "INDEX_MCP", "HandMiddle1": "MIDDLE_MCP", "HandRing1": "RING_MCP",
        "HandPinky1": "PINKY_MCP"}


def still_wrist(take) -> np.ndarray:
    """A ManipNet hand's joint positions (F, J, 3), its wrist held at the origin at rest: its fingers' own
    motion (``take``: a :class:`training.motion.bvh.BVH`)."""
    from training.motion.skeleton import forward_kinematics

    rot, trans = take.local_rotations(), take.local_translations()
    rot[:, 0], trans[:, 0] = (0.0, 0.0, 0.0, 1.0), 0.0
    return forward_kinematics(rot, trans, take.parents)[1]


def anatomical_side(take) -> str:
    """Which hand ("Left"/"Right") a ManipNet hand is, read in right-handed axes as Blender reads it: with
    n = (index knuckle - pinky knuckle) x (middle knuckle - wrist), a right hand's palm faces n, a left hand's
    -n, and the fingers flex to the palm's side. (ManipNet's ``leftHand.bvh`` is a right hand by this.)"""
    p = still_wrist(take)
    i = take.index
    n = np.cross(p[:, i("INDEX_MCP")] - p[:, i("PINKY_MCP")], p[:, i("MIDDLE_MCP")] - p[:, i("WRIST")])
    flex = sum(np.einsum("fi,fi->f", p[:, i(f"{f}_DIP_FE")] - p[:, i(f"{f}_MCP")], n)
               for f in ("INDEX", "MIDDLE", "RING", "PINKY"))
    return "Right" if flex.mean() > 0 else "Left"


def hand_takes(path: Path) -> dict[str, tuple[Path, object]]:
    """Side ("Left"/"Right", :func:`anatomical_side`) -> a ManipNet hand (its file, its BVH) of ``path``: a
    take's folder (its ``.bvh`` files, one per hand) or one file."""
    from training.motion import bvh

    out: dict[str, tuple[Path, object]] = {}
    for f in sorted(path.glob("*.bvh")) if path.is_dir() else [path]:
        take = bvh.read(f)
        side = anatomical_side(take)
        if side in out:
            raise ValueError(f"{f} and {out[side][0]} are both {side.lower()} hands")
        out[side] = (f, take)
    return out


def finger_speed(take, fps: float) -> np.ndarray:
    """How fast a ManipNet hand's fingers move at each of its frames taken at ``fps``: the mean distance its
    finger joints travel per frame in the wrist's frame, in the take's units."""
    at = np.minimum(np.round(np.arange(0, take.n_frames - 1e-9, take.fps / fps)), take.n_frames - 1).astype(int)
    fingers = still_wrist(take)[at, 1:]
    return np.linalg.norm(np.diff(fingers, axis=0), axis=-1).mean(-1)


def busiest_stretch(takes: Sequence, frames: int, fps: float) -> int:
    """The first frame (of the takes, at their own rate) of the ``frames`` frames at ``fps`` in which the
    hands' fingers move most: :func:`finger_speed` summed over the hands and averaged over the stretch."""
    speed = sum(finger_speed(t, fps) for t in takes)
    if len(speed) < frames:
        return 0
    mean = np.convolve(speed, np.ones(frames - 1) / (frames - 1), mode="valid")
    return int(round(int(np.argmax(mean)) * takes[0].fps / fps))


def check_finger_bones(clip: Path) -> None:
    """Refuse (ValueError, naming what is missing) a clip whose rig lacks the Mixamo hand and finger bones that
    ``--hands`` puts a take's fingers on, before Blender starts: read from the BVH's joint names."""
    from training.motion import bvh

    names = bvh.read(clip).names
    prefix = prefix_of(names)
    wanted = [prefix + side + bone for side in ("Left", "Right") for bone in {**PALM, **HAND_TRACKS}]
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ValueError(f"--hands puts a hand take's fingers on a Mixamo rig's finger bones, and {clip.name} has "
                         f"no {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} ({len(missing)} of the "
                         f"{len(wanted)} bones missing): give --hands only with Mixamo clips")


def put_hands_on_rig(bpy, rig, take: Path) -> int:
    """The finger motion of a ManipNet take (:func:`hand_takes`) put on the Mixamo rig ``rig``'s fingers with
    Blender's own constraints, then baked over the scene's range; the rest of the rig keeps its motion. Each
    hand of the take is imported by Blender (times scaled to the scene's rate, so the rig's frames take the
    take at their own times; from the stretch where the fingers move most, :func:`busiest_stretch`), its
    wrist held at rest, placed on the rig's hand (the rotation, scale and offset that best put its wrist and
    knuckles on the rig's at rest) and made to follow the rig's hand bone (Child Of); each finger bone of the
    rig then points where the take's finger points (Damped Track to the next joint). Returns the take's first
    frame."""
    start, sources, tracked = constrain_hands(bpy, rig, take)
    bake(bpy, rig, tracked)
    for src in sources:
        action = src.animation_data.action
        bpy.data.objects.remove(src)
        bpy.data.actions.remove(action)
    return start


def constrain_hands(bpy, rig, take: Path) -> tuple[int, list, list[str]]:
    """:func:`put_hands_on_rig` up to the bake: the take's first frame, its hands (armature objects) and the
    rig's constrained bones."""
    scene = bpy.context.scene
    fps = scene.render.fps / scene.render.fps_base
    hands = hand_takes(take)
    start = busiest_stretch([t for _, t in hands.values()], scene.frame_end - scene.frame_start + 1, fps)
    prefix = mixamo_prefix(rig)
    sources, tracked = [], []
    for side, (path, t) in hands.items():
        assert bpy.ops.import_anim.bvh(filepath=str(path), update_scene_fps=False, update_scene_duration=False,
                                       use_fps_scale=True, rotate_mode="NATIVE") == {"FINISHED"}
        src = bpy.context.view_layer.objects.active
        sources.append(src)
        bag = _channelbag(src)
        # the importer puts take frame i on scene frame 1 + i * dt; take frame ``start`` goes on the first
        shift = scene.frame_start - 1 - start * scene.render.fps * t.frame_time
        for fc in list(bag.fcurves):
            if fc.data_path.startswith('pose.bones["WRIST"]'):
                bag.fcurves.remove(fc)
                continue
            kp = fc.keyframe_points
            for attr in ("co", "handle_left", "handle_right"):
                buf = np.empty(2 * len(kp), dtype=np.float32)
                kp.foreach_get(attr, buf)
                buf[0::2] += shift
                kp.foreach_set(attr, buf)
            fc.update()
        wrist = src.pose.bones["WRIST"]  # at rest: the curves are gone, not their last values
        wrist.location, wrist.rotation_euler, wrist.rotation_quaternion = (0, 0, 0), (0, 0, 0), (1, 0, 0, 0)
        pairs = [(prefix + side + bone, joint) for bone, joint in PALM.items()]
        here = np.array([src.matrix_world @ src.data.bones[j].head_local for _, j in pairs])
        there = np.array([rig.matrix_world @ rig.data.bones[b].head_local for b, _ in pairs])
        src.matrix_world = similarity(here, there) @ src.matrix_world
        hand = rig.data.bones[prefix + side + "Hand"]
        c = src.constraints.new("CHILD_OF")
        c.target, c.subtarget = rig, hand.name
        c.inverse_matrix = (rig.matrix_world @ hand.matrix_local).inverted()
        for bone, joint in HAND_TRACKS.items():
            pb = rig.pose.bones[prefix + side + bone]
            c = pb.constraints.new("DAMPED_TRACK")
            c.target, c.subtarget, c.track_axis = src, joint, "TRACK_Y"
            tracked.append(pb.name)
    return start, sources, tracked


def similarity(a: np.ndarray, b: np.ndarray):
    """The rotation, uniform scale and offset (a 4x4 ``mathutils.Matrix``) that best map points ``a`` (N, 3)
    onto ``b`` (least squares, Umeyama 1991)."""
    from mathutils import Matrix

    ma, mb = a.mean(0), b.mean(0)
    u, sig, vt = np.linalg.svd((b - mb).T @ (a - ma))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    r = u @ d @ vt
    s = (sig * np.diag(d)).sum() / ((a - ma) ** 2).sum()
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = s * r, mb - s * r @ ma
    return Matrix(m.tolist())


def bake(bpy, rig, bones: list[str]) -> None:
    """Blender's own bake of ``bones`` of ``rig`` over the scene's range: what their constraints make of them,
    keyed on every frame into the rig's action (other bones' keys stay), the constraints removed."""
    scene = bpy.context.scene
    for o in bpy.context.view_layer.objects:
        o.select_set(o == rig)
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="POSE")
    for pb in rig.pose.bones:
        _select(pb, pb.name in bones)
    assert bpy.ops.nla.bake(frame_start=scene.frame_start, frame_end=scene.frame_end, only_selected=True,
                            visual_keying=True, clear_constraints=True, use_current_action=True,
                            bake_types={"POSE"}) == {"FINISHED"}
    bpy.ops.object.mode_set(mode="OBJECT")


def _select(pose_bone, value: bool) -> None:
    """Selection lives on the pose bone in Blender 5.0, on the bone before."""
    if hasattr(pose_bone, "select"):
        pose_bone.select = value
    else:
        pose_bone.bone.select = value


def keep_every(bpy, ext, gt, every: int, name: str = "Keys"):
    """A copy of ``gt`` whose action keeps the keys of every ``every``-th frame from the first and the last
    frame, on Blender's default curves (Bezier, Auto Clamped): what an animator's keys would be."""
    ob = gt.copy()
    ob.data = gt.data.copy()
    ob.name = name
    bpy.context.scene.collection.objects.link(ob)
    action = gt.animation_data.action.copy()
    ob.animation_data.action = action
    ob.animation_data.action_slot = action.slots[0]
    lo, hi = bpy.context.scene.frame_start, bpy.context.scene.frame_end
    kept = sorted(set(range(lo, hi + 1, every)) | {hi})
    thin_keys(ext.keys.channelbag(ob), kept)
    return ob, kept


def world_poses(bpy, ob, frames: Sequence[int]) -> np.ndarray:
    """Every bone's world matrix (F, N, 4, 4) as Blender evaluates the rig at each frame (head at [:3, 3])."""
    n = len(ob.pose.bones)
    out = np.empty((len(frames), n, 4, 4))
    mw = np.array(ob.matrix_world)
    buf = np.empty(16 * n, dtype=np.float32)
    for i, f in enumerate(frames):
        bpy.context.scene.frame_set(int(f))
        ob.pose.bones.foreach_get("matrix", buf)
        out[i] = mw @ np.swapaxes(buf.reshape(n, 4, 4), 1, 2).astype(np.float64)  # bpy flattens by column
    return out


def in_frame_of(poses: np.ndarray, bones: list[int], frame_bone: int) -> np.ndarray:
    """The heads of ``bones`` (F, B, 3) in the frame of ``frame_bone`` (a hand's fingers in the hand's frame)."""
    inv = np.linalg.inv(poses[:, frame_bone])
    heads = np.concatenate([poses[:, bones][..., :3, 3], np.ones(poses.shape[:1] + (len(bones), 1))], axis=-1)
    return np.einsum("fij,fbj->fbi", inv, heads)[..., :3]


def animator_keys(ob) -> dict:
    """Every key that is not GENERATED, all its attributes, per channel: to check that a fill left them exactly
    as they were."""
    out = {}
    bag = _channelbag(ob)
    for fc in bag.fcurves:
        kp = fc.keyframe_points
        n = len(kp)
        types = np.empty(n, dtype=np.int32)
        kp.foreach_get("type", types)
        gen = kp[0].bl_rna.properties["type"].enum_items["GENERATED"].value if n else 0
        keep = types != gen
        attrs = {}
        for attr, width, dtype in (("co", 2, np.float32), ("handle_left", 2, np.float32),
                                   ("handle_right", 2, np.float32), ("handle_left_type", 1, np.int32),
                                   ("handle_right_type", 1, np.int32), ("interpolation", 1, np.int32),
                                   ("easing", 1, np.int32)):
            buf = np.empty(n * width, dtype=dtype)
            kp.foreach_get(attr, buf)
            attrs[attr] = buf.reshape(n, width)[keep].tobytes()
        out[(fc.data_path, fc.array_index)] = attrs
    return out


def _channelbag(ob):
    ad = ob.animation_data
    from bpy_extras import anim_utils

    return anim_utils.action_get_channelbag_for_slot(ad.action, ad.action_slot)


def run_clip(s: Session, path: Path, every: int, via: Path | str | None = None, hands: Path | None = None,
             legs: str = "fk") -> dict:
    """One clip at one key spacing: the scores described in the module docstring. ``via``: a Mixamo rig the
    clip (of the training skeleton) is first put on with Blender's constraints (:func:`put_on_rig`), or
    :data:`RIGIFY`: a generated Rigify rig's controls keyed as the clip moves (:func:`put_on_rigify`; ``legs``
    'ik': its legs keyed through their IK controls), scored on its DEF bones; ``hands``: a ManipNet take whose
    finger motion is then put on the Mixamo rig's fingers (:func:`put_hands_on_rig`)."""
    bpy, ext = s.bpy, s.ext
    gt = import_clip(bpy, path)
    rigify = via == RIGIFY
    if rigify:
        gt = put_on_rigify(bpy, gt, legs == "ik")
    elif via is not None:
        gt = put_on_rig(bpy, gt, via)
    hands_from = put_hands_on_rig(bpy, gt, hands) if hands is not None else None
    scene = bpy.context.scene
    frames = list(range(scene.frame_start, scene.frame_end + 1))
    gt_pose = world_poses(bpy, gt, frames)
    if rigify:  # a generated rig's drivers target the rig itself: its keys are thinned in place, not on a copy
        ob, kept = gt, sorted(set(frames[::every]) | {frames[-1]})
        thin_keys(ext.keys.channelbag(ob), kept)
    else:
        ob, kept = keep_every(bpy, ext, gt, every)
    names = [b.name for b in ob.pose.bones]
    bez_pose = world_poses(bpy, ob, frames)
    for o in bpy.context.view_layer.objects:
        o.select_set(o == ob)
    bpy.context.view_layer.objects.active = ob
    ob.anyfill.model = ob.anyfill.hand_model = ""
    assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
    before = animator_keys(ob)
    scene.anyfill.range_mode, scene.anyfill.bones = "SCENE", "ALL"
    t0 = time.perf_counter()
    result = bpy.ops.anim.anyfill_fill()
    seconds = time.perf_counter() - t0
    if result != {"FINISHED"}:
        raise RuntimeError(f"Fill did not finish on {path.name}: {result}")
    after = animator_keys(ob)
    fill_pose = world_poses(bpy, ob, frames)
    between = np.array([f not in set(kept) for f in frames])
    clip = path.name + (f" on a generated Rigify rig, legs in {legs.upper()}" if rigify
                        else f" on {via.name}" if via else "")
    if hands is not None:
        clip += f" + fingers of {hands.name} from its frame {hands_from}"
    row = {"clip": clip, "every": every,
           "frames": len(frames), "fps": scene.render.fps,
           "family": ob.anyfill.rig_family, "parts": ob.anyfill.skeleton,
           "kept_keys_identical": all(after.get(k) == v for k, v in before.items()), "fill_seconds": seconds}

    def score(prefix: str, gt: np.ndarray, fill: np.ndarray, bez: np.ndarray) -> None:
        e_fill = float(np.linalg.norm(fill[between] - gt[between], axis=-1).mean())
        e_bez = float(np.linalg.norm(bez[between] - gt[between], axis=-1).mean())
        row.update({f"{prefix}fill_error": e_fill, f"{prefix}bezier_error": e_bez,
                    f"{prefix}ratio": e_fill / max(e_bez, 1e-12),
                    f"{prefix}pop_fill": pop_ratio(gt[None], fill[None], frames, kept),
                    f"{prefix}pop_bezier": pop_ratio(gt[None], bez[None], frames, kept)})

    parts = part_bones(ob, names)
    body = parts.get("body") or parts.get(next(iter(parts), ""), [])
    if rigify:  # what the character is deformed by: the controls' constraints move them
        body = [names.index(n) for n in RIGIFY_DEF]
    row["mapped"] = len(body)
    score("", gt_pose[:, body][..., :3, 3], fill_pose[:, body][..., :3, 3], bez_pose[:, body][..., :3, 3])
    for part in ("hand", "hand.L", "hand.R"):  # a hand alone, or a full rig's
        if part not in parts or (part != "hand" and "body" not in parts):
            continue
        wrist, fingers = parts[part][0], parts[part][1:]
        score(f"{part}_world_", gt_pose[:, fingers][..., :3, 3], fill_pose[:, fingers][..., :3, 3],
              bez_pose[:, fingers][..., :3, 3])
        truth = in_frame_of(gt_pose, fingers, wrist)
        score(f"{part}_", truth, in_frame_of(fill_pose, fingers, wrist), in_frame_of(bez_pose, fingers, wrist))
        row[f"{part}_truth_motion"] = float(np.linalg.norm(truth - truth.mean(0), axis=-1).mean())
        if ob.pose.bones[names[wrist]].parent:
            row[f"{part}_head_gap"] = head_gap(bpy, ob, frames, names[wrist])
    return row


def head_gap(bpy, ob, frames: Sequence[int], bone: str) -> float:
    """The largest change over ``frames`` of the distance between a bone's head and its parent's tail (world
    units): the bone's local location on its rest offset in the parent's frame, as Blender composes them,
    turned and scaled by the parent's pose. (Taken from world positions, float32's resolution at a rig's
    hands, about 1e-5 at a height of 150, would hide it.)"""
    pb = ob.pose.bones[bone]
    parent = pb.parent
    rest = np.linalg.inv(np.array(parent.bone.matrix_local, dtype=np.float64)) @ np.array(pb.bone.matrix_local)
    tail = np.array([0.0, parent.bone.length, 0.0])
    mw = np.array(ob.matrix_world, dtype=np.float64)[:3, :3]
    at_rest = np.linalg.norm(mw @ (rest[:3, 3] - tail))
    worst = 0.0
    for f in frames:
        bpy.context.scene.frame_set(int(f))
        local = rest @ np.array(pb.matrix_basis, dtype=np.float64)
        gap = np.linalg.norm(mw @ np.array(parent.matrix, dtype=np.float64)[:3, :3] @ (local[:3, 3] - tail))
        worst = max(worst, abs(gap - at_rest))
    return float(worst)


def part_bones(ob, names: list[str]) -> dict[str, list[int]]:
    """The bones of each mapped part (indices into ``names``), a hand's wrist first."""
    out: dict[str, list[int]] = {}
    for m in ob.anyfill.joints:
        if m.bone and m.bone in ob.data.bones:
            bones = out.setdefault(m.part, [])
            index = names.index(m.bone)
            if index not in bones:
                bones.insert(0, index) if m.joint == "WRIST" else bones.append(index)
    return out


def format_table(rows: list[dict]) -> str:
    """Markdown: the body's scores, then a full rig's fingers in the hand bone's frame."""
    head = ("| clip | bones | keys every | Fill error | Bezier error | Fill / Bezier | pop ratio (Fill) "
            "| pop ratio (Bezier) |")
    lines = [head, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        for prefix, what in (("", "body" if "body" in r["parts"] else "all mapped bones"),
                             ("hand_", "fingers, in the hand's frame"),
                             ("hand.L_", "left fingers, in the hand's frame"),
                             ("hand.R_", "right fingers, in the hand's frame")):
            if f"{prefix}ratio" in r and r.get(f"{prefix}truth_motion", 1.0) > 1e-3:  # still fingers: no score
                lines.append(f"| {r['clip']} | {what} | {r['every']} | {r[prefix + 'fill_error']:.3f} | "
                             f"{r[prefix + 'bezier_error']:.3f} | {r[prefix + 'ratio']:.3f} | "
                             f"{r[prefix + 'pop_fill']:.2f} | {r[prefix + 'pop_bezier']:.2f} |")
    return "\n".join(lines)


def in_data(path: str | Path) -> Path:
    """A clip or take as given, or, when a relative path names nothing here, the same path under the data folder
    (``foreign/mixamo_walk-in-circle.bvh`` from anywhere, as the docs write it)."""
    from training.motion.splits import data_root

    path = Path(path)
    return data_root() / path if not path.is_absolute() and not path.exists() else path


def main(args: argparse.Namespace, addon_zip: Path | None = None) -> int:
    """``anyfill bench rig`` (its arguments: :mod:`training.bench.commands`); ``addon_zip``: the extension as
    built by ``anyfill build-addon`` (the command line builds it first)."""
    from training.motion.splits import data_root

    clips = [in_data(c) for c in args.clips] or [data_root() / c for c in DEFAULT_CLIPS]
    if str(args.via) == RIGIFY:
        args.via = RIGIFY
    elif args.via is not None:
        args.via = in_data(args.via)
    args.hands = None if args.hands is None else in_data(args.hands)
    if getattr(args, "legs", "fk") == "ik" and args.via != RIGIFY:
        raise ValueError("--legs ik keys a generated Rigify rig's legs through their IK controls: give it with "
                         "--via rigify")
    if args.via == RIGIFY and args.hands is not None:
        raise ValueError("--hands puts a take's fingers on a Mixamo rig: give it without --via rigify")
    missing = [p for p in (*clips, args.via, args.hands) if isinstance(p, Path) and not p.exists()]
    if missing:
        raise ValueError(f"{missing[0]}: no such file, here or under the data folder {data_root()}")
    if args.hands is not None:
        for c in clips:
            check_finger_bones(c)
    if addon_zip is None:
        raise SystemExit("anyfill bench rig: run it as 'anyfill bench rig' (it builds the extension first)")
    s = start_session(addon_zip, args.model or ("hand", "body"))
    rows = []
    try:
        for c in clips:
            for n in args.every:
                row = run_clip(s, c, n, args.via, args.hands, getattr(args, "legs", "fk"))
                rows.append(row)
                fingers = "".join(
                    f"; {p} fingers Fill/Bezier {row[p + '_ratio']:.3f} (truth moves {row[p + '_truth_motion']:.3f}), "
                    f"hand head off the forearm's tail by {row[p + '_head_gap']:.2g}"
                    for p in ("hand.L", "hand.R") if p + "_head_gap" in row)
                print(f"{row['clip']} every {n} ({row['parts']}): Fill/Bezier {row['ratio']:.3f} "
                      f"(fill {row['fill_error']:.3f}, bezier {row['bezier_error']:.3f}), pop {row['pop_fill']:.2f}, "
                      f"keys kept {'identical' if row['kept_keys_identical'] else 'CHANGED'}{fingers}", flush=True)
    finally:
        stop_session(s)
    print(format_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0

"""End to end in real Blender: the installed extension talks to a real backend process (``anyfill serve`` on
127.0.0.1, small untrained models) and fills rigs imported from the shared BVH capture.

The models are untrained, so the filled poses are not good motion; the tests check what the extension
guarantees (which keys are written, which stay, conversion, errors, undo) and report the pose error next to
Blender's own Bezier interpolation of the same keys.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from blender_support import (
    clean_scene,
    free_port,
    import_bvh,
    rolled_copy,
    short_bvh,
    transfer_pose,
)

pytestmark = [pytest.mark.blender, pytest.mark.data, pytest.mark.slow]

HAND = "manipnet/teapot3/rightHand.bvh"  # the hand model's side (its rest offsets are the right hand's)
BODY = "bandai/dataset-1/dataset-1_walk_angry_001.bvh"
KEEP_EVERY = 10
FRAMES = 61



def thin_keys(bpy, ob, keep) -> None:
    """Delete every key not on a frame of ``keep``; the kept keys become Bezier with auto-clamped handles."""
    from bpy_extras import anim_utils

    bag = anim_utils.action_get_channelbag_for_slot(ob.animation_data.action, ob.animation_data.action_slot)
    for fc in bag.fcurves:
        kp = fc.keyframe_points
        for i in reversed(range(len(kp))):
            if round(kp[i].co[0]) not in keep:
                kp.remove(kp[i], fast=True)
        for k in kp:
            k.interpolation, k.handle_left_type, k.handle_right_type = "BEZIER", "AUTO_CLAMPED", "AUTO_CLAMPED"
        fc.update()


def heads(bpy, ob, frames) -> dict[int, dict[str, object]]:
    out = {}
    for f in frames:
        bpy.context.scene.frame_set(f)
        out[f] = {pb.name: (ob.matrix_world @ pb.head).copy() for pb in ob.pose.bones}
    return out


def size_of(ob) -> float:
    return max((b.head_local - c.head_local).length for b in ob.data.bones for c in ob.data.bones)


def pose_error(a, b, size) -> float:
    errs = [(a[f][n] - b[f][n]).length for f in a for n in a[f]]
    return sum(errs) / len(errs) / size


def load_rig(bpy, ext, data_root, rel, frames=FRAMES, step=1, mode="NATIVE"):
    clean_scene(bpy)
    ob = import_bvh(bpy, short_bvh(data_root / rel, frames, step=step), rotate_mode=mode)
    bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, frames
    return ob


def run_fill(bpy, ob, op="anim.anyfill_fill", **kw):
    bpy.context.view_layer.objects.active = ob
    return getattr(bpy.ops.anim, op.split(".")[1])(**kw)


def which_models() -> str:
    if os.environ.get("ANYFILL_TEST_MODELS"):
        return os.environ["ANYFILL_TEST_MODELS"]
    return "shipped models" if os.environ.get("ANYFILL_TEST_SHIPPED_MODELS") == "1" else "untrained test model"


def generated_frames(ext, ob) -> dict[tuple[str, int], list[float]]:
    bag = ext.keys.channelbag(ob)
    return {(fc.data_path, fc.array_index): sorted(k.co[0] for k in fc.keyframe_points if k.type == "GENERATED")
            for fc in bag.fcurves}


def own_keys(ext, ob) -> dict:
    """The animator's keys (everything not GENERATED), all attributes, exactly."""
    bag = ext.keys.channelbag(ob)
    return {(fc.data_path, fc.array_index): [
        (tuple(k.co), tuple(k.handle_left), tuple(k.handle_right), k.handle_left_type, k.handle_right_type,
         k.interpolation, k.type, k.easing) for k in fc.keyframe_points if k.type != "GENERATED"]
        for fc in bag.fcurves}


@pytest.mark.parametrize(("rel", "step"), [(HAND, 4), (BODY, 1)], ids=["hand", "body"])
def test_fill_writes_exactly_the_missing_frames(bpy, ext, prefs, data_root, rel, step, capsys):
    ob = load_rig(bpy, ext, data_root, rel, step=step)
    all_frames = list(range(1, FRAMES + 1))
    truth = heads(bpy, ob, all_frames)
    keep = set(range(1, FRAMES + 1, KEEP_EVERY))
    thin_keys(bpy, ob, keep)
    targets = [f for f in all_frames if f not in keep]
    bezier = heads(bpy, ob, targets)
    before = own_keys(ext, ob)
    assert run_fill(bpy, ob) == {"FINISHED"}
    assert ob.anyfill.model == ("hand" if rel == HAND else "body")
    assert sum(1 for m in ob.anyfill.joints if m.bone) == len(ob.anyfill.joints)  # exact names mapped them all
    assert own_keys(ext, ob) == before  # the kept keys, bit for bit
    written = generated_frames(ext, ob)
    rot_paths = [p for p in written if "rotation" in p[0]]
    assert rot_paths and all(written[p] == [float(f) for f in targets] for p in rot_paths)
    loc_paths = [p for p in written if p[0].endswith(".location") and written[p]]
    moving = {"hand": {"WRIST"}, "body": {"joint_Root", "Hips"}}["hand" if rel == HAND else "body"]
    assert {p[0].split('"')[1] for p in loc_paths} == moving  # root translation only on the moving joints
    filled = heads(bpy, ob, targets)
    size = size_of(ob)
    e_fill = pose_error(filled, {f: truth[f] for f in targets}, size)
    e_bez = pose_error(bezier, {f: truth[f] for f in targets}, size)
    with capsys.disabled():
        print(f"\n[{rel}] mean joint position error / skeleton size on the {len(targets)} filled frames: "
              f"anyfill ({which_models()}) {e_fill:.4f}, Blender Bezier {e_bez:.4f}")
    assert math.isfinite(e_fill)
    # the kept frames still hold the capture exactly
    kept = heads(bpy, ob, sorted(keep))
    assert pose_error(kept, {f: truth[f] for f in keep}, size) < 1e-5
    # running Fill again replaces the generated keys and keeps the animator's
    assert run_fill(bpy, ob) == {"FINISHED"}
    assert own_keys(ext, ob) == before and generated_frames(ext, ob) == written


def assert_fill_is_one_undo_step(bpy, ext, ob) -> None:
    """Fill changes the rig, and one undo gives every F-curve back exactly as it was."""
    name = ob.name
    before = snapshot_all(ext, ob)
    bpy.ops.ed.undo_push(message="before anyfill")
    assert run_fill(bpy, ob) == {"FINISHED"}
    bpy.ops.ed.undo_push(message="Fill")
    assert snapshot_all(ext, bpy.data.objects[name]) != before
    bpy.ops.ed.undo()
    assert snapshot_all(ext, bpy.data.objects[name]) == before


def snapshot_all(ext, ob):
    """Every F-curve, and the pose the curves give at the current frame (evaluated anew: in background mode an
    undo restores the curves but leaves the pose as it was last evaluated, which depends on the frame the tests
    before left the scene at)."""
    import bpy

    bpy.context.scene.frame_set(bpy.context.scene.frame_current)
    return ext.curves.snapshot(ext.keys.channelbag(ob)), {pb.name: tuple(pb.matrix_basis.col[3]) + tuple(
        pb.rotation_quaternion) for pb in ob.pose.bones}


def test_errors_leave_the_rig_untouched(bpy, ext, prefs, data_root):
    ob = load_rig(bpy, ext, data_root, HAND, step=4)
    thin_keys(bpy, ob, set(range(1, FRAMES + 1, KEEP_EVERY)))
    before = snapshot_all(ext, ob)
    good_url = prefs.backend_url
    try:
        prefs.backend_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        with pytest.raises(RuntimeError, match="not reachable"):
            run_fill(bpy, ob)
        assert snapshot_all(ext, ob) == before
        prefs.backend_url, prefs.token = good_url, "wrong-token-0123456789"
        with pytest.raises(RuntimeError, match="401"):
            run_fill(bpy, ob)
        assert snapshot_all(ext, ob) == before
    finally:
        prefs.backend_url, prefs.token = good_url, ""
    # a rig whose bones match no joint of any model
    for b in ob.data.bones:
        b.name = "bone_" + b.name.lower()
    ob.anyfill.joints.clear()
    ob.anyfill.model = ""
    before = snapshot_all(ext, ob)
    with pytest.raises(RuntimeError, match="no bones mapped"):
        run_fill(bpy, ob)
    assert snapshot_all(ext, ob) == before


def test_nothing_keyed_is_an_error(bpy, ext, prefs, data_root):
    ob = load_rig(bpy, ext, data_root, HAND, step=4)
    bag = ext.keys.channelbag(ob)
    for fc in list(bag.fcurves):
        bag.fcurves.remove(fc)
    with pytest.raises(RuntimeError, match="Nothing is keyed"):
        run_fill(bpy, ob)
    assert len(bag.fcurves) == 0


def test_a_preview_range_not_set_and_an_action_without_a_slot_are_named(bpy, ext, prefs, data_root):
    """Two settings that read as 'nothing is keyed' (frames 0..0; no channelbag) are named for what they are."""
    ob = load_rig(bpy, ext, data_root, HAND, step=4)
    thin_keys(bpy, ob, set(range(1, FRAMES + 1, KEEP_EVERY)))
    before = snapshot_all(ext, ob)
    scene = bpy.context.scene
    scene.use_preview_range, scene.anyfill.range_mode = False, "PREVIEW"
    with pytest.raises(RuntimeError, match="Range is Preview but the scene has no preview range"):
        run_fill(bpy, ob)
    scene.anyfill.range_mode = "SCENE"
    slot = ob.animation_data.action_slot
    ob.animation_data.action_slot = None
    with pytest.raises(RuntimeError, match=f"uses the action '{ob.animation_data.action.name}' with no slot"):
        run_fill(bpy, ob)
    ob.animation_data.action_slot = slot
    assert snapshot_all(ext, ob) == before


def test_one_undo_step_restores_the_rig(bpy, ext, prefs, data_root):
    """Headless, an operator called from Python pushes no undo step of its own (Blender pushes for operators
    run from the UI), so the test pushes the step around the single Fill call, as the UI would, and checks
    that one ``ed.undo`` restores every curve and the pose exactly."""
    ob = load_rig(bpy, ext, data_root, HAND, step=4)
    thin_keys(bpy, ob, set(range(1, FRAMES + 1, KEEP_EVERY)))
    assert_fill_is_one_undo_step(bpy, ext, ob)


INDEX_AND_WRIST = ("WRIST", "INDEX_MCP", "INDEX_PIP_FE", "INDEX_DIP_FE")


def key_wrist_and_index(ob, frame: int) -> None:
    """Key the wrist (rotation and location) and the index finger as the rig shows them on ``frame``."""
    for name in INDEX_AND_WRIST:
        pb = ob.pose.bones[name]
        pb.keyframe_insert("rotation_euler", frame=frame)
        if name == "WRIST":
            pb.keyframe_insert("location", frame=frame)


def test_complete_pose_and_variations_on_the_hand(bpy, ext, prefs, data_root):
    ob = load_rig(bpy, ext, data_root, HAND, frames=41, step=4)
    keep = {1, 11, 21, 31, 41}
    thin_keys(bpy, ob, keep)
    # complete pose: key only the wrist and the index finger at frame 15, fill the other bones there
    scene = bpy.context.scene
    scene.frame_set(15)
    key_wrist_and_index(ob, 15)
    before = own_keys(ext, ob)
    assert run_fill(bpy, ob, "anim.anyfill_complete_pose") == {"FINISHED"}
    written = generated_frames(ext, ob)
    filled_bones = {p[0].split('"')[1] for p, fr in written.items() if fr}
    assert filled_bones == set(ext.rig.HAND_JOINTS) - set(INDEX_AND_WRIST)
    assert all(fr in ([], [15.0]) for fr in written.values())
    assert own_keys(ext, ob) == before
    # variations: 3 samples, step through, keep one
    s = scene.anyfill
    s.count, s.order, s.k, s.seed, s.temperature = 3, "lowest-entropy", 64, 1, 1.0
    assert run_fill(bpy, ob, "anim.anyfill_sample_variations") == {"FINISHED"}
    assert ob.anyfill.variation_count == 3 and ob.anyfill.variation_index == 0
    targets = [float(f) for f in range(1, 42) if f not in keep and f != 15]
    path = ext.keys.bone_path("PINKY_MCP", "rotation_euler")

    def curve_values():
        fc = ext.keys.channelbag(ob).fcurves.find(path, index=0)
        return [fc.evaluate(f) for f in targets]

    assert generated_frames(ext, ob)[(path, 0)] == sorted(targets + [15.0])
    first = curve_values()
    assert bpy.ops.anim.anyfill_step_variation(step=1) == {"FINISHED"}
    assert ob.anyfill.variation_index == 1
    assert curve_values() != first  # another sample
    assert generated_frames(ext, ob)[(path, 0)] == sorted(targets + [15.0])
    assert own_keys(ext, ob) == before
    assert bpy.ops.anim.anyfill_keep_variation() == {"FINISHED"}
    assert ob.anyfill.variation_count == 0
    assert bpy.ops.anim.anyfill_show_uncertainty() == {"FINISHED"}
    fc = ext.keys.channelbag(ob).fcurves.find('["anyfill_uncertainty"]', index=0)
    assert fc is not None and len(fc.keyframe_points) == len(targets) + 1  # frame 15: only 4 bones keyed
    assert fc.group is not None and fc.group.name == "Anyfill"  # a new channel gets its group (4.4 and 5.x)


def test_complete_pose_in_a_long_shot_reads_the_keys_one_window_reaches(bpy, ext, prefs, data_root):
    """Complete Pose at frame 300 of a 601-frame shot keyed every 10 frames sends the keys within one model window
    (at its slowest trained rate) of the frame and the two beyond on each side, not all 61 keys: a pose costs what it
    does in a short shot (the whole shot was sent and filled, 0.5-0.9 s for one frame on a 1,291-frame shot)."""
    frames = 601
    ob = load_rig(bpy, ext, data_root, "bandai/dataset-1/dataset-1_dance-short_normal_001.bvh", frames=frames)
    thin_keys(bpy, ob, set(range(1, frames + 1, 10)))
    bpy.context.scene.frame_set(305)
    sent = []
    fill = ext.client.Client.fill

    def recorded(self, body):
        sent.append(body["frames"])
        return fill(self, body)

    ext.client.Client.fill = recorded
    try:
        assert run_fill(bpy, ob, "anim.anyfill_complete_pose") == {"FINISHED"}
    finally:
        ext.client.Client.fill = fill
    model = next(m for m in ext.client.Client(prefs.backend_url, "").models() if m["name"] == ob.anyfill.model)
    reach = model["window_frames"] / min(model["fps_range"]) * 30.0  # the scene's rate
    keys = [float(f) for f in range(1, frames + 1, 10)]
    inside = [f for f in keys if abs(f - 305) <= reach]
    expected = sorted(keys[keys.index(inside[0]) - 2 : keys.index(inside[-1]) + 3] + [305.0])
    assert sent == [expected] and len(expected) < len(keys) // 2
    assert {f for fs in generated_frames(ext, ob).values() for f in fs} == {305.0}


def test_variations_of_a_range_longer_than_the_window_on_a_60_fps_rig(bpy, ext, prefs, data_root):
    """Variations of 151 frames of a 60 fps rig (101 frames at the model's 40 fps: longer than its window): drawn
    at a trained rate window by window, written on the rig's own target frames; the animator's keys untouched."""
    ob = load_rig(bpy, ext, data_root, HAND, frames=151, step=2)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 60, 1.0
    keep = set(range(1, 152, 10))
    thin_keys(bpy, ob, keep)
    before = own_keys(ext, ob)
    s = scene.anyfill
    s.count, s.order, s.k, s.seed, s.temperature = 2, "lowest-entropy", 64, 1, 1.0
    assert run_fill(bpy, ob, "anim.anyfill_sample_variations") == {"FINISHED"}
    assert ob.anyfill.variation_count == 2
    targets = [float(f) for f in range(1, 152) if f not in keep]
    path = ext.keys.bone_path("PINKY_MCP", "rotation_euler")
    assert generated_frames(ext, ob)[(path, 0)] == targets
    assert own_keys(ext, ob) == before
    # the message says the variations were drawn at another rate than the scene's, as a fill's does
    note = ext.operators.rate_note({"resampled": {"window_fps": 60.0, "filled_fps": 40.0}}, "drawn", 60.0)
    assert note == "; drawn at 40 fps, the scene's 60 fps is outside the model's trained rates"
    assert ext.operators.rate_note({"resampled": None}, "filled", 60.0) == ""


def test_rolled_rig_gets_the_same_world_pose(bpy, ext, prefs, data_root):
    """Fill on a rig with the reference rig's joints but other bone rolls and directions (and quaternion
    rotation mode), keyed with the same world-space poses, gives the same world-space joint positions."""
    ref = load_rig(bpy, ext, data_root, HAND, step=4)
    keep = set(range(1, FRAMES + 1, KEEP_EVERY))
    thin_keys(bpy, ref, keep)
    rolled = rolled_copy(bpy, ref, seed=11, bend=(0.3, 0.9), tail_length=0.5)
    arm = rolled.data
    model = ext.client.model_info(ext.client.Client(prefs.backend_url), "hand")
    mapping = {n: n for n in ext.rig.HAND_JOINTS}
    r1 = ext.retarget.build(model, ext.keys.armature_rig(ref.data), mapping)
    r2 = ext.retarget.build(model, ext.keys.armature_rig(arm), mapping)
    assert r1.rest_mode == r2.rest_mode == "MODEL" and not r1.mirrored
    transfer_pose(bpy, ext, ref, rolled, r1, r2, sorted(keep))
    assert run_fill(bpy, ref) == {"FINISHED"}
    assert run_fill(bpy, rolled) == {"FINISHED"}
    frames = list(range(1, FRAMES + 1))
    h1, h2 = heads(bpy, ref, frames), heads(bpy, rolled, frames)
    worst = max((h1[f][n] - h2[f][n]).length for f in frames for n in h1[f])
    shortest = min((b.head_local - b.parent.head_local).length for b in ref.data.bones
                   if b.parent and (b.head_local - b.parent.head_local).length > 1e-6)
    assert worst < 1e-3 * shortest, (worst, shortest)


def _lowered(src, by: float, tmp_path):
    """A copy of a BVH file whose root sits ``by`` lower: a rig whose author put the floor elsewhere."""
    from training.motion import bvh as bvh_mod

    b = bvh_mod.read(src)
    b.motion[:, b.channel_index()[0]["Yposition"]] -= by
    out = tmp_path / f"lowered-{by:g}-{src.name}"
    bvh_mod.write(b, out)
    return out


def test_armature_axes_and_floor_do_not_change_the_fill(bpy, ext, prefs, data_root, tmp_path):
    """The same keys on an armature whose data is Y-up under an object turned 90 degrees (an FBX import's
    habit) and whose floor is 120 units below its feet, and on a mirrored object (scale -1), against the usual
    Z-up import with its floor 90 below: the model is sent the same motion (both floors are brought onto the
    model's) and the turned rig gets the same world-space fill, up to float32 noise."""
    src = short_bvh(data_root / BODY, FRAMES)
    keep = set(range(1, FRAMES + 1, KEEP_EVERY))
    clean_scene(bpy)
    filled = []
    for by, axes, turn, raise_by, scale in ((90.0, {}, 0.0, 0.0, 1.0),
                                            (120.0, {"axis_forward": "-Y", "axis_up": "Z"}, -math.pi / 2, 30.0, 1.0),
                                            (90.0, {}, 0.0, 0.0, -1.0)):
        assert bpy.ops.import_anim.bvh(filepath=str(_lowered(src, by, tmp_path)), rotate_mode="NATIVE",
                                       update_scene_fps=False, update_scene_duration=True, **axes) == {"FINISHED"}
        ob = bpy.context.view_layer.objects.active
        ob.rotation_euler = (turn, 0.0, 2 * turn)  # Y-up data stood up, facing where the usual import faces
        ob.location = (0.0, 0.0, raise_by)
        ob.scale = (scale, 1.0, 1.0)
        bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, FRAMES
        thin_keys(bpy, ob, keep)
        filled.append(ob)
    a, b, mirrored = filled
    sunk = {a.name: 90.0, b.name: 120.0, mirrored.name: 90.0}
    frames = list(range(1, FRAMES + 1))
    before = heads(bpy, a, [1])[1]
    assert max((before[n] - heads(bpy, b, [1])[1][n]).length for n in before) < 1e-3  # the same world pose
    model = ext.client.model_info(ext.client.Client(prefs.backend_url), "body")
    sent = []
    for ob in filled:
        for o in bpy.context.view_layer.objects:
            o.select_set(o == ob)
        bpy.context.view_layer.objects.active = ob
        ob.anyfill.model = "body"
        assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
        bpy.context.scene.anyfill.range_mode, bpy.context.scene.anyfill.bones = "SCENE", "ALL"
        sent.append(ext.plan.prepare(bpy.context, ob, "fill", model))
        assert run_fill(bpy, ob) == {"FINISHED"}
        shown = ob.anyfill.last_match.split("read raised ")[1]  # the panel: how far it was read raised
        assert shown.endswith(" onto the model's floor") and abs(float(shown.split()[0]) - sunk[ob.name]) < 1.5
    p = sent[0]
    for q in sent[1:]:
        assert (p.known == q.known).all()
        # what the model is sent: the same rotations (quaternion sign aside) and translations, to float32 noise
        dots = np.abs((p.locals_sent * q.locals_sent).sum(axis=-1))[p.known]
        assert dots.min() > 1 - 1e-6, dots.min()
        assert np.abs(p.trans_sent - q.trans_sent)[p.known].max() < 1e-3
    # Floor: Rig's Own reads the rig at its own height, 90 below the model's floor
    a.anyfill.floor = "RIG"
    own = ext.plan.prepare(bpy.context, a, "fill", model)
    assert not own.retarget.lift.any() and "floor" not in ext.plan.describe_match(own, a, bpy.context.scene)
    top = own.retarget.model.parents.index(-1)  # the skeleton's top joint carries the whole rig's height
    keyed = p.known[:, top]
    assert np.abs(p.trans_sent[keyed, top] - own.trans_sent[keyed, top] - p.retarget.lift).max() < 1e-4
    a.anyfill.floor = "AUTO"
    h1, h2 = heads(bpy, a, frames), heads(bpy, b, frames)
    worst = max((h1[f][n] - h2[f][n]).length for f in frames for n in h1[f])
    moved = max((h1[f][n] - before[n]).length for f in frames for n in h1[f])
    assert moved > 10.0  # the fill moved the rig (it walks)
    assert worst < 1e-3 * size_of(a), (worst, size_of(a))


def test_the_match_line_of_a_scaled_rig_is_in_scene_units(bpy, ext, prefs, data_root, tmp_path):
    """An armature object scaled 0.01 (an FBX import's habit) whose feet are 90 armature units (90 cm in the world)
    above the model's floor: the panel's match line says how far it was read lowered in the scene's units, as the
    scene shows lengths (was: 89.6, in armature units, a hundred times the distance in the viewport)."""
    src = _lowered(short_bvh(data_root / BODY, FRAMES), -90.0, tmp_path)
    clean_scene(bpy)
    ob = import_bvh(bpy, src)
    ob.scale = (0.01, 0.01, 0.01)
    bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, FRAMES
    thin_keys(bpy, ob, set(range(1, FRAMES + 1, KEEP_EVERY)))
    ob.anyfill.model = "body"
    assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
    bpy.context.scene.anyfill.range_mode, bpy.context.scene.anyfill.bones = "SCENE", "ALL"
    units = bpy.context.scene.unit_settings
    try:
        for system, scale_length, metres in (("METRIC", 1.0, 0.9), ("METRIC", 0.5, 0.45), ("IMPERIAL", 1.0, 0.9)):
            units.system, units.scale_length = system, scale_length
            assert run_fill(bpy, ob) == {"FINISHED"}
            shown = ob.anyfill.last_match.split("read lowered ")[1]
            assert shown.endswith(" onto the model's floor"), shown
            value = bpy.utils.units.to_value(system, "LENGTH", shown.removesuffix(" onto the model's floor"))
            assert abs(value - metres) < 0.015, (system, shown)
    finally:
        units.system, units.scale_length = "METRIC", 1.0


def test_a_rig_without_the_top_joint_moves_as_one_with_it(bpy, ext, prefs, data_root):
    """A rig with no bone for the body's joint_Root (a Mixamo or CMU rig): the request leaves the joint out, the
    server keys it at rest where the body is keyed (as the capture's is in training) and folds what the model does
    with it between keys into the Hips. The rig then moves exactly as the same rig with its joint_Root bone (at
    rest on this take) mapped and keyed: sent at rest on every frame instead, the shipped body filled a walk on a
    Mixamo rig keyed every 20 frames with 3.4 cm of mean error instead of 2.6 (``anyfill bench rig --via``)."""
    poses, sent = [], []
    for unmapped in (False, True):
        ob = load_rig(bpy, ext, data_root, BODY)
        thin_keys(bpy, ob, set(range(1, FRAMES + 1, KEEP_EVERY)))
        bpy.context.view_layer.objects.active = ob
        ob.anyfill.model = "body"
        assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
        if unmapped:  # its rest still read as the model's own (Auto reads a rig not named as the model by its rest)
            next(m for m in ob.anyfill.joints if m.joint == "joint_Root").bone = ""
            ob.anyfill.rest_pose = "MODEL"
        bpy.context.scene.anyfill.range_mode, bpy.context.scene.anyfill.bones = "SCENE", "ALL"
        model = ext.client.model_info(ext.client.Client(prefs.backend_url), "body")
        sent.append(ext.plan.prepare(bpy.context, ob, "fill", model))
        root_keys = {k.co[0] for fc in ext.keys.channelbag(ob).fcurves if fc.data_path.startswith(
            'pose.bones["joint_Root"]') for k in fc.keyframe_points}
        assert run_fill(bpy, ob) == {"FINISHED"}
        after = {k.co[0] for fc in ext.keys.channelbag(ob).fcurves if fc.data_path.startswith(
            'pose.bones["joint_Root"]') for k in fc.keyframe_points}
        assert (after == root_keys) == unmapped  # the unmapped bone is never written; the mapped one is filled
        poses.append(heads(bpy, ob, range(1, FRAMES + 1)))
    root = sent[1].retarget.model.joints.index("joint_Root")
    assert "joint_Root" in sent[0].body["joints"] and "joint_Root" not in sent[1].body["joints"]
    assert not sent[1].known[:, root].any() and not sent[1].targets[:, root].any()
    size = size_of(ob)
    moved = max((poses[1][f][n] - poses[1][1][n]).length for f in poses[1] for n in poses[1][f])
    assert moved > 0.1 * size  # it walks
    worst = max((poses[0][f][n] - poses[1][f][n]).length for f in poses[0] for n in poses[0][f])
    assert worst < 1e-4 * size, worst / size


UNREAL_NAMES = {"joint_Root": "root", "Hips": "pelvis", "Spine": "spine_01", "Chest": "spine_03", "Neck": "neck_01",
                "Head": "head", **{f"{bandai}_{s}": f"{unreal}_{s.lower()}" for s in "LR" for bandai, unreal in (
                    ("Shoulder", "clavicle"), ("UpperArm", "upperarm"), ("LowerArm", "lowerarm"), ("Hand", "hand"),
                    ("UpperLeg", "thigh"), ("LowerLeg", "calf"), ("Foot", "foot"), ("Toes", "ball"))}}


def test_a_static_root_bone_keeps_the_hips_on_their_path(bpy, ext, prefs, data_root):
    """The capture's bones renamed as an Unreal rig's (Auto Map finds them by alias and matches the rig's rest, twists
    fitted): its static ``root`` maps to joint_Root, which the hips walk away from. A twist fitted per key on the root
    turned the hips' translation about it between keys: 19.6 cm of mean error on the pelvis here (the shipped body
    29 cm), against Bezier's 4.9. Only joints that no moving joint hangs from take a twist per key."""
    frames = 41
    ob = load_rig(bpy, ext, data_root, BODY, frames=frames)
    for old, new in UNREAL_NAMES.items():
        ob.data.bones[old].name = new
    keep = set(range(1, frames + 1, KEEP_EVERY))
    truth = heads(bpy, ob, range(1, frames + 1))
    thin_keys(bpy, ob, keep)
    bezier = heads(bpy, ob, range(1, frames + 1))
    bpy.context.view_layer.objects.active = ob
    ob.anyfill.model = "body"
    assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
    assert next(m.bone for m in ob.anyfill.joints if m.joint == "joint_Root") == "root"
    bpy.context.scene.anyfill.range_mode, bpy.context.scene.anyfill.bones = "SCENE", "ALL"
    assert run_fill(bpy, ob) == {"FINISHED"}
    assert "the rig's rest" in ob.anyfill.last_match
    filled = heads(bpy, ob, range(1, frames + 1))
    between = [f for f in range(1, frames + 1) if f not in keep]
    fill_error = np.mean([(filled[f]["pelvis"] - truth[f]["pelvis"]).length for f in between])
    bezier_error = np.mean([(bezier[f]["pelvis"] - truth[f]["pelvis"]).length for f in between])
    print(f"\n[static root bone] pelvis error between keys: anyfill {fill_error:.2f}, Bezier {bezier_error:.2f}")
    assert fill_error < bezier_error


def test_a_range_that_cuts_through_gaps_is_filled_towards_the_keys_beyond_it(bpy, ext, prefs, data_root):
    """Keys every 10 frames and a Fill range of 5..15, which holds one key (11): the two nearest keys on each side
    of the range condition the fill too, so it moves from key 1 towards key 21 as the walk does; conditioned on
    key 11 alone, the fill held that pose over the whole range (the test models exactly). Nothing outside the
    range is written."""
    frames = 31
    ob = load_rig(bpy, ext, data_root, BODY, frames=frames)
    truth = heads(bpy, ob, range(1, frames + 1))
    thin_keys(bpy, ob, {1, 11, 21, 31})
    settings = bpy.context.scene.anyfill
    settings.range_mode, settings.frame_start, settings.frame_end, settings.bones = "CUSTOM", 5, 15, "ALL"
    before = own_keys(ext, ob)
    assert run_fill(bpy, ob) == {"FINISHED"}
    assert own_keys(ext, ob) == before
    written = {f for fs in generated_frames(ext, ob).values() for f in fs}
    assert written == {float(f) for f in range(5, 16) if f != 11}
    filled = heads(bpy, ob, range(5, 16))
    fill_error = np.mean([(filled[f][n] - truth[f][n]).length for f in filled for n in filled[f]])
    held_error = np.mean([(truth[11][n] - truth[f][n]).length for f in filled for n in filled[f]])
    print(f"\n[range 5..15 of keys every 10] error: anyfill {fill_error:.2f}, key 11 held {held_error:.2f}")
    assert fill_error < 0.5 * held_error


def test_frames_outside_the_keys_are_never_written(bpy, ext, prefs, data_root):
    """A scene range longer than the keys (keys on frames 6..36, the scene 1..51): Fill writes between the first and
    the last key only; before and after them the rig holds the key's pose as Blender's curves do (asked there, the
    model carried the walk on past the last key: 2.6 m by 100 frames on a Mixamo walk). Anyfill's keys of an
    earlier fill out there are cleared, and Complete Pose after the last key is refused, naming it."""
    frames = 51
    ob = load_rig(bpy, ext, data_root, BODY, frames=frames)
    thin_keys(bpy, ob, {6, 16, 26, 36})
    bpy.context.scene.anyfill.range_mode, bpy.context.scene.anyfill.bones = "SCENE", "ALL"
    outside = [*range(1, 6), *range(37, frames + 1)]
    held = heads(bpy, ob, outside)  # Blender's curves hold the first and the last key there
    bag = ext.keys.channelbag(ob)
    stale = bag.fcurves.find('pose.bones["Hips"].location', index=0)
    ext.curves.write_keys(bag, stale.data_path, 0, "Hips", np.array([45.0]), np.array([123.0]))  # an earlier fill's
    assert 45.0 in {k.co[0] for k in stale.keyframe_points}
    before = own_keys(ext, ob)
    assert run_fill(bpy, ob) == {"FINISHED"}
    assert own_keys(ext, ob) == before
    written = {f for fs in generated_frames(ext, ob).values() for f in fs}
    assert written == {float(f) for f in range(7, 36) if f not in (16, 26)}
    after = heads(bpy, ob, outside)
    assert max((after[f][n] - held[f][n]).length for f in outside for n in held[f]) < 1e-9
    bpy.context.scene.frame_set(40)
    snap = snapshot_all(ext, ob)
    with pytest.raises(RuntimeError, match="Frame 40 is after the last key \\(frame 36\\) of the mapped bones"):
        run_fill(bpy, ob, "anim.anyfill_complete_pose")
    assert snapshot_all(ext, ob) == snap


def test_the_objects_heading_changes_nothing(bpy, ext, prefs, data_root):
    """A BVH import of the training skeleton (the model's own rest) whose object is turned to face another way, or
    turns over the shot: the same keys as unturned, wherever the playhead is. Read with its heading, the rig came
    out of its rest turned (its local rotations turned about the object's up: 3 times Bezier's error, 1.5 m off
    at 180 degrees), and a turning object gave each playhead its own fill."""

    def filled(turn=None, animated=False, playhead=1):
        ob = load_rig(bpy, ext, data_root, BODY, step=1)
        thin_keys(bpy, ob, set(range(1, FRAMES + 1, KEEP_EVERY)))
        if turn is not None:
            ob.rotation_mode, ob.rotation_euler = "XYZ", (0.0, 0.0, 0.0 if animated else turn)
            if animated:  # the object turns over the shot: its own keys, in the rig's action
                ob.keyframe_insert("rotation_euler", frame=1)
                ob.rotation_euler[2] = turn
                ob.keyframe_insert("rotation_euler", frame=FRAMES)
        bpy.context.scene.frame_set(playhead)
        assert run_fill(bpy, ob) == {"FINISHED"}
        bag = ext.keys.channelbag(ob)
        return {(fc.data_path, fc.array_index): [tuple(k.co) for k in fc.keyframe_points if k.type == "GENERATED"]
                for fc in bag.fcurves if fc.data_path.startswith("pose.")}

    def same(a, b) -> bool:  # the same keys, values to float noise (the model reads the turned rig's numbers)
        return a.keys() == b.keys() and all(len(a[c]) == len(b[c]) and np.allclose(a[c], b[c], atol=1e-5) for c in a)

    unturned = filled()
    assert same(filled(math.pi), unturned)
    assert same(filled(math.pi / 2, animated=True, playhead=1), unturned)
    assert same(filled(math.pi / 2, animated=True, playhead=FRAMES), unturned)


def test_a_pose_keyed_twice_is_held_on_the_rig(bpy, ext, prefs, data_root):
    """An animator's hold: the whole pose keyed on frames 21 and 31, and one bone's rotation keyed the same on 41
    and 51 while the rest moves. Fill leaves the held frames exactly at those poses, as Blender's curves would.
    (The test models' curve already holds; with ANYFILL_TEST_SHIPPED_MODELS=1 and no holds in the engine a joint
    left the held pose by 27 cm here.)"""
    ob = load_rig(bpy, ext, data_root, BODY)
    thin_keys(bpy, ob, set(range(1, FRAMES + 1, KEEP_EVERY)))
    bag = ext.keys.channelbag(ob)

    def key_at(fc, frame):
        return next(k for k in fc.keyframe_points if round(k.co[0]) == frame)

    for fc in bag.fcurves:  # the whole pose of frame 21 again on 31
        key_at(fc, 31).co[1] = key_at(fc, 21).co[1]
        fc.update()
    arm = 'pose.bones["LowerArm_L"].rotation_euler'
    for fc in bag.fcurves:  # the forearm's rotation of 41 again on 51
        if fc.data_path == arm:
            key_at(fc, 51).co[1] = key_at(fc, 41).co[1]
            fc.update()
    assert run_fill(bpy, ob) == {"FINISHED"}
    size = size_of(ob)
    held = heads(bpy, ob, range(21, 32))
    assert max((held[f][n] - held[21][n]).length for f in held for n in held[f]) < 1e-4 * size
    angles = {}
    for f in range(41, 52):
        bpy.context.scene.frame_set(f)
        angles[f] = ob.pose.bones["LowerArm_L"].rotation_euler.copy()
    assert max(max(abs(a - b) for a, b in zip(angles[f], angles[41], strict=True)) for f in angles) < 1e-4
    moving = heads(bpy, ob, (41, 46))  # the rest of the body moves on
    assert max((moving[46][n] - moving[41][n]).length for n in moving[41]) > 1e-3 * size


MIXAMO_HAND = {"WRIST": "Hand", "THUMB_CMC_FE": "HandThumb0", "THUMB_CMC_AA": "HandThumb1",
               "THUMB_MCP_FE": "HandThumb2", "THUMB_IP_FE": "HandThumb3", **{
                   f"{finger.upper()}_{joint}": f"Hand{finger}{k}" for finger in ("Index", "Middle", "Ring", "Pinky")
                   for k, joint in enumerate(("MCP", "PIP_FE", "DIP_FE"), start=1)}}  # ManipNet joint -> Mixamo bone


@pytest.mark.parametrize(("take", "named", "mirrored"), [("rightHand", "Right", False), ("rightHand", "Left", False),
                                                         ("leftHand", "Left", True), ("leftHand", "Right", True)])
def test_a_renamed_hand_is_mirrored_as_its_geometry_says(bpy, ext, prefs, data_root, take, named, mirrored):
    """ManipNet's hands imported with Blender's importer and renamed Mixamo-style (LeftHandIndex1...): matched From
    Rig Rest, not rest to rest, so Mirror Auto compared their rest with the data's habit. That rest holds the thumb
    about in the palm's plane, on the back's side, so the side came out backwards for both (leftHand filled 1.08 of
    Bezier's error against 0.98 mirrored, shipped models). Now the keyed poses tell it, whatever the names say: as
    for the same hand imported under its own names (rightHand as the model's hand, leftHand mirrored)."""
    ob = load_rig(bpy, ext, data_root, f"manipnet/teapot3/{take}.bvh", frames=41, step=4)
    for b in ob.data.bones:
        b.name = named + MIXAMO_HAND[b.name]
    thin_keys(bpy, ob, set(range(1, 42, 10)))
    bpy.context.view_layer.objects.active = ob
    assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
    assert {m.part for m in ob.anyfill.joints} == {f"hand.{named[0]}"}
    assert run_fill(bpy, ob) == {"FINISHED"}
    match = ob.anyfill.last_match
    assert "the rig's rest" in match and match.endswith(", mirrored") == mirrored, match


def test_complete_pose_poses_the_fingers_never_keyed_and_fill_holds_them(bpy, ext, prefs, data_root):
    """Complete Pose exists to pose the bones the animator has not keyed (the wrist and a finger keyed, the rest of the
    hand completed), so fingers with no key anywhere get a pose at the current frame; Fill holds a bone with no key
    in the range where the rig holds it (asked for it, the model invented its motion and moved the rest with it)."""
    ob = load_rig(bpy, ext, data_root, HAND, frames=41, step=4)
    keep = {1, 11, 21, 31, 41}
    thin_keys(bpy, ob, keep)
    bag = ext.keys.channelbag(ob)
    pinky = [fc for fc in bag.fcurves if '"PINKY_' in fc.data_path]
    assert pinky
    for fc in pinky:  # the pinky never keyed
        bag.fcurves.remove(fc)
    scene = bpy.context.scene
    scene.frame_set(15)
    key_wrist_and_index(ob, 15)
    assert run_fill(bpy, ob, "anim.anyfill_complete_pose") == {"FINISHED"}
    written = generated_frames(ext, ob)
    assert written[(ext.keys.bone_path("PINKY_MCP", "rotation_euler"), 0)] == [15.0]
    for fc in [fc for fc in ext.keys.channelbag(ob).fcurves if '"PINKY_' in fc.data_path]:
        ext.keys.channelbag(ob).fcurves.remove(fc)  # never keyed again
    assert run_fill(bpy, ob, "anim.anyfill_fill") == {"FINISHED"}
    assert not [fc for fc in ext.keys.channelbag(ob).fcurves if '"PINKY_' in fc.data_path]

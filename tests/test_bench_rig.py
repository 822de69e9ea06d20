"""``anyfill bench rig``'s scoring in real Blender with the test backend: a real clip, the extension's own Auto
Map and Fill, scores against the ground truth and Blender's Bezier curves; a clip of the training skeleton
put on a Mixamo rig as a capture would move it (the rig-invariance check); and a hand take's finger motion put
on the Mixamo rig's fingers with Blender's constraints."""

from __future__ import annotations

import math

import numpy as np
import pytest
from blender_support import short_bvh

pytestmark = [pytest.mark.data]

WALK = "bandai/dataset-1/dataset-1_walk_angry_001.bvh"
MIXAMO = "foreign/mixamo_walk-in-circle.bvh"
TAKE = "manipnet/teapot3"


def _session(bpy, ext, prefs):
    from training.bench import rig

    return rig.Session(bpy, ext, prefs.backend_url, None, None)


@pytest.mark.blender
@pytest.mark.slow
def test_a_clip_is_scored_against_the_truth_and_bezier_and_its_keys_stay(bpy, ext, prefs, data_root):
    from training.bench import rig

    row = rig.run_clip(_session(bpy, ext, prefs), short_bvh(data_root / MIXAMO, 61), every=10)
    assert row["kept_keys_identical"] and row["parts"] == "body + hand.L + hand.R"
    for key in ("fill_error", "bezier_error", "ratio", "pop_fill", "pop_bezier", "hand.L_ratio"):
        assert math.isfinite(row[key]) and row[key] >= 0, key
    assert row["bezier_error"] > 0 and row["frames"] == 61 and row["mapped"] == 21
    assert "| body | 10 |" in rig.format_table([row])


@pytest.mark.blender
@pytest.mark.slow
def test_a_training_clip_put_on_a_mixamo_rig_as_a_capture_would_move_it(bpy, ext, prefs, data_root):
    from training.bench import rig

    row = rig.run_clip(_session(bpy, ext, prefs), short_bvh(data_root / WALK, 41), every=10,
                       via=data_root / MIXAMO)
    assert row["clip"].endswith("on mixamo_walk-in-circle.bvh") and row["family"] == "Mixamo"
    assert row["kept_keys_identical"] and math.isfinite(row["ratio"]) and row["bezier_error"] > 0
    assert not [o for o in bpy.data.objects if o.name == "dataset-1_walk_angry_001"]  # the source is gone


@pytest.mark.blender
@pytest.mark.slow
def test_the_rig_a_clip_is_put_on_points_and_turns_as_the_clips_bones_do(bpy, ext, data_root):
    """The baked Mixamo rig's spine, neck, limbs and feet point where the source's bones point on every frame
    (the hips and chest, with several children, at their best fit), and every mapped bone turns as its source
    bone turns, twist included, read back from Blender's evaluation."""
    from training.bench import rig

    source = rig.import_clip(bpy, short_bvh(data_root / WALK, 21))
    copy = source.copy()
    copy.data = source.data.copy()
    bpy.context.scene.collection.objects.link(copy)
    gt = rig.put_on_rig(bpy, source, data_root / MIXAMO)
    assert [o.name for o in bpy.data.objects if o.type == "EMPTY"] == []
    frames = list(range(bpy.context.scene.frame_start, bpy.context.scene.frame_end + 1))
    ours, theirs = rig.world_poses(bpy, gt, frames), rig.world_poses(bpy, copy, frames)
    names, src_names = [b.name for b in gt.pose.bones], [b.name for b in copy.pose.bones]
    prefix = names[0][: -len("Hips")]

    def turns(poses, i):
        r = poses[:, i, :3, :3] / np.linalg.norm(poses[:, i, :3, 0], axis=-1)[:, None, None]
        return r @ r[0].T

    for bone, (joint, aims) in rig.MIXAMO_BODY.items():
        np.testing.assert_allclose(turns(ours, names.index(prefix + bone)), turns(theirs, src_names.index(joint)),
                                   atol=1e-3)
        for aim, target in aims:
            a = ours[:, names.index(prefix + aim), :3, 3] - ours[:, names.index(prefix + bone), :3, 3]
            b = theirs[:, src_names.index(target), :3, 3] - theirs[:, src_names.index(joint), :3, 3]
            cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
            assert cos.min() > (0.95 if bone in ("Hips", "Spine2") else 0.9999), (bone, aim, cos.min())
    bpy.data.objects.remove(copy)


@pytest.mark.blender
def test_every_rigify_control_turns_as_the_clips_bone_does(bpy, ext, data_root):
    """Each control put on the generated Rigify rig turns as its clip bone turns, read back from Blender's
    evaluation: its keys are on the channel its rotation mode uses (the ``shoulder`` controls are Euler YXZ; keyed
    as quaternions they stayed where the last frame left them, and the arms were filled from shoulders that never
    moved: Fill / Bezier 2.02 on a walk's first 91 frames, 0.48 keyed as Blender shows them)."""
    from training.bench import rig

    source = rig.import_clip(bpy, short_bvh(data_root / WALK, 21))
    copy = source.copy()
    copy.data = source.data.copy()
    copy.animation_data.action = source.animation_data.action.copy()  # put_on_rigify removes the source's
    copy.animation_data.action_slot = copy.animation_data.action.slots[0]
    bpy.context.scene.collection.objects.link(copy)
    gt = rig.put_on_rigify(bpy, source)
    frames = list(range(bpy.context.scene.frame_start, bpy.context.scene.frame_end + 1))
    ours, theirs = rig.world_poses(bpy, gt, frames), rig.world_poses(bpy, copy, frames)
    names, src_names = [b.name for b in gt.pose.bones], [b.name for b in copy.pose.bones]

    def turns(poses, i):
        r = poses[:, i, :3, :3] / np.linalg.norm(poses[:, i, :3, 0], axis=-1)[:, None, None]
        return r @ r[0].T

    assert gt.pose.bones["shoulder.L"].rotation_mode != "QUATERNION"
    for ctrl, (joint, _) in rig.RIGIFY_CONTROLS.items():
        np.testing.assert_allclose(turns(ours, names.index(ctrl)), turns(theirs, src_names.index(joint)),
                                   atol=1e-3, err_msg=ctrl)
    bpy.data.objects.remove(copy)


def _skeletons():
    """A source pose (root with two children, one of them with a child; scaled, anywhere) and a rig with the same
    joint layout but other bone rolls and rest rotations: what :func:`first_frame_rotations` aims."""
    from scipy.spatial.transform import Rotation

    heads = np.array([[0.0, 0, 0], [0, 1, 0], [0.3, -0.2, 0], [0, 2, 0]])
    parents = [-1, 0, 0, 1]
    rest = np.tile(np.eye(4), (4, 1, 1))
    rest[:, :3, 3] = heads
    rest[:, :3, :3] = Rotation.random(4, random_state=1).as_matrix()  # rolls unlike the source's
    turn = Rotation.random(4, random_state=2).as_matrix()
    src = np.tile(np.eye(4), (4, 1, 1))
    for b, p in enumerate(parents):
        if p < 0:
            src[b, :3, :3], src[b, :3, 3] = 2.0 * turn[b], (1.0, -2.0, 0.5)
        else:
            src[b, :3, :3] = src[p, :3, :3] @ turn[b]
            src[b, :3, 3] = src[p, :3, 3] + src[p, :3, :3] @ (heads[b] - heads[p])
    return src, rest, parents


def test_first_frame_rotations_aim_each_bone_where_the_source_points():
    from training.bench import rig

    src, rest, parents = _skeletons()
    aims = {0: [(1, 1), (2, 2)], 1: [(3, 3)]}
    first = rig.first_frame_rotations(src, rest, parents, {0: 0, 1: 1, 2: 2, 3: 3}, aims)
    np.testing.assert_allclose(first @ np.swapaxes(first, 1, 2), np.tile(np.eye(3), (4, 1, 1)), atol=1e-9)
    for b, pairs in aims.items():  # the root aims at two children at once (same layout: exactly)
        for a, t in pairs:
            ours = first[b] @ rest[b, :3, :3].T @ (rest[a, :3, 3] - rest[b, :3, 3])
            theirs = src[t, :3, 3] - src[b, :3, 3]
            np.testing.assert_allclose(ours / np.linalg.norm(ours), theirs / np.linalg.norm(theirs), atol=1e-9)
    for b in (2, 3):  # bones without aims keep their rest under their parent
        p = parents[b]
        np.testing.assert_allclose(first[b], first[p] @ rest[p, :3, :3].T @ rest[b, :3, :3], atol=1e-9)


def test_a_hand_takes_sides_come_from_how_its_fingers_flex(data_root):
    """ManipNet's hands, read in right-handed axes as Blender reads them, are the other hands than their file
    names say: the fingers of ``leftHand.bvh`` flex to a right hand's palm side. A mirror image is the other
    hand."""
    from training.bench import rig
    from training.motion.skeleton import mirror_x

    hands = rig.hand_takes(data_root / TAKE)
    assert {side: path.name for side, (path, _) in hands.items()} == {"Right": "leftHand.bvh",
                                                                      "Left": "rightHand.bvh"}
    take = hands["Right"][1]
    assert rig.anatomical_side(take.set_local(*mirror_x(take.local_rotations(), take.local_translations()))) == "Left"


def test_finger_speed_at_a_rate_a_hair_off_the_takes_own(data_root):
    """A 120 fps CMU rig reads as 119.9988 fps: the take's frames sampled at that rate end on its last frame, not
    one past it (an IndexError ended `bench rig CMU.bvh --hands TAKE`)."""
    from training.bench import rig

    take = rig.hand_takes(data_root / TAKE)["Right"][1]
    for fps in (take.fps * (1 - 1e-5), take.fps, take.fps / 4 * (1 + 1e-5)):
        speed = rig.finger_speed(take, fps)
        assert np.isfinite(speed).all() and len(speed) >= take.n_frames * fps / take.fps - 2


def test_hands_are_refused_on_a_rig_without_finger_bones_before_blender_starts(data_root):
    from training.bench import rig

    rig.check_finger_bones(data_root / MIXAMO)  # every finger bone there
    with pytest.raises(ValueError, match=r"cmu-xia_normal.bvh has no LeftHandMiddle1.*18 of the 22 bones missing"):
        rig.check_finger_bones(data_root / "foreign/cmu-xia_normal.bvh")


@pytest.mark.blender
@pytest.mark.slow
def test_a_takes_finger_motion_is_put_on_the_mixamo_rigs_fingers(bpy, ext, prefs, data_root):
    """--hands: the walk's fingers barely move (1e-5 rig units); with a hand take's fingers on them they move by
    a clear amount in the hand's frame, the hand stays on the forearm and every score is finite."""
    from training.bench import rig

    clip = short_bvh(data_root / MIXAMO, 61)
    row = rig.run_clip(_session(bpy, ext, prefs), clip, every=10, hands=data_root / TAKE)
    assert "fingers of teapot3 from its frame" in row["clip"] and row["parts"] == "body + hand.L + hand.R"
    assert row["kept_keys_identical"]
    hand = bpy.data.objects["Keys"].data.bones["mixamorig7:LeftHand"]
    size = (hand.head_local - bpy.data.objects["Keys"].data.bones["mixamorig7:LeftHandMiddle1"].head_local).length
    for part in ("hand.L", "hand.R"):
        assert row[f"{part}_truth_motion"] > 0.02 * size, part
        assert row[f"{part}_head_gap"] < 1e-5, part
        for key in ("fill_error", "bezier_error", "ratio", "world_ratio", "pop_fill"):
            assert math.isfinite(row[f"{part}_{key}"]), (part, key)
    assert not [o for o in bpy.data.objects if o.name.endswith("Hand")]  # the take's hands are gone


@pytest.mark.blender
@pytest.mark.slow
def test_a_hand_alone_has_its_fingers_scored_in_the_wrists_frame_too(bpy, ext, prefs, data_root):
    from training.bench import rig

    clip = short_bvh(data_root / TAKE / "rightHand.bvh", 41, step=4)
    row = rig.run_clip(_session(bpy, ext, prefs), clip, every=10)
    assert row["parts"] == "hand" and row["kept_keys_identical"] and "hand_head_gap" not in row
    assert math.isfinite(row["hand_ratio"]) and row["hand_bezier_error"] > 0
    assert "| all mapped bones | 10 |" in rig.format_table([row])
    assert "| fingers, in the hand's frame | 10 |" in rig.format_table([row])


def test_clips_and_takes_are_found_here_or_under_the_data_folder(data_root, tmp_path, monkeypatch):
    """The docs' `anyfill bench rig foreign/... --hands manipnet/...` work from any folder: a relative path that names
    nothing here is read under the data folder; one that does, or an absolute one, as given."""
    from training.bench.rig import in_data

    monkeypatch.chdir(tmp_path)
    assert in_data(MIXAMO) == data_root / MIXAMO and in_data(TAKE) == data_root / TAKE
    (tmp_path / "foreign").mkdir()
    (tmp_path / MIXAMO).write_text("HIERARCHY\n")
    assert in_data(MIXAMO).resolve() == (tmp_path / MIXAMO).resolve()
    assert in_data(data_root / TAKE) == data_root / TAKE


def test_a_clip_that_is_nowhere_is_refused_by_name(data_root, tmp_path, monkeypatch, capsys):
    from anyfill.cli import main as cli

    monkeypatch.chdir(tmp_path)
    assert cli(["bench", "rig", "foreign/nope.bvh"]) == 2
    assert f"{data_root / 'foreign/nope.bvh'}: no such file, here or under the data folder" in capsys.readouterr().err


@pytest.mark.blender
@pytest.mark.slow
@pytest.mark.parametrize("legs", ["fk", "ik"])
def test_a_training_clip_put_on_a_generated_rigify_rig(bpy, ext, prefs, data_root, legs):
    """`--via rigify`: the clip keyed on a generated Rigify rig's controls (the legs through their IK controls with
    `--legs ik`), thinned in place, filled, and scored on its DEF bones; the animator's keys stay."""
    from training.bench import rig

    row = rig.run_clip(_session(bpy, ext, prefs), short_bvh(data_root / WALK, 31), every=10, via=rig.RIGIFY,
                       legs=legs)
    assert row["clip"].endswith(f"on a generated Rigify rig, legs in {legs.upper()}") and row["family"] == "Rigify"
    assert row["mapped"] == len(rig.RIGIFY_DEF) and row["kept_keys_identical"]
    assert math.isfinite(row["ratio"]) and row["bezier_error"] > 0
    ob = bpy.data.objects["rig"]
    assert (ob.pose.bones["thigh_parent.L"]["IK_FK"] < 0.5) == (legs == "ik")
    fk = [fc for fc in ext.keys.channelbag(ob).fcurves if fc.data_path.startswith('pose.bones["thigh_fk.L"]')
          and any(k.type != "GENERATED" for k in fc.keyframe_points)]
    assert bool(fk) == (legs == "fk")  # in IK the legs are keyed on their IK controls alone

"""``anyfill bench rig``'s scoring in real Blender with the test backend: a real clip, the extension's own Auto
Map and Fill, scores against the ground truth and Blender's Bezier curves; a clip of the training skeleton
put on a Mixamo rig with Blender's constraints (the rig-invariance check); and a hand take's finger motion put
on the Mixamo rig's fingers the same way."""

from __future__ import annotations

import math

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
def test_a_training_clip_put_on_a_mixamo_rig_with_blenders_constraints(bpy, ext, prefs, data_root):
    from training.bench import rig

    row = rig.run_clip(_session(bpy, ext, prefs), short_bvh(data_root / WALK, 41), every=10,
                       via=data_root / MIXAMO)
    assert row["clip"].endswith("on mixamo_walk-in-circle.bvh") and row["family"] == "Mixamo"
    assert row["kept_keys_identical"] and math.isfinite(row["ratio"]) and row["bezier_error"] > 0
    assert not [o for o in bpy.data.objects if o.name == "dataset-1_walk_angry_001"]  # the source is gone


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

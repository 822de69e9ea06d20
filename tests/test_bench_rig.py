"""``anyfill bench rig``'s scoring in real Blender with the test backend: a real clip, the extension's own Auto
Map and Fill, scores against the ground truth and Blender's Bezier curves; and a clip of the training skeleton
put on a Mixamo rig with Blender's constraints (the rig-invariance check)."""

from __future__ import annotations

import math

import pytest
from blender_support import short_bvh

pytestmark = [pytest.mark.blender, pytest.mark.data, pytest.mark.slow]

WALK = "bandai/dataset-1/dataset-1_walk_angry_001.bvh"
MIXAMO = "foreign/mixamo_walk-in-circle.bvh"


def _session(bpy, ext, prefs):
    from training.bench import rig

    return rig.Session(bpy, ext, prefs.backend_url, None, None)


def test_a_clip_is_scored_against_the_truth_and_bezier_and_its_keys_stay(bpy, ext, prefs, data_root):
    from training.bench import rig

    row = rig.run_clip(_session(bpy, ext, prefs), short_bvh(data_root / MIXAMO, 61), every=10)
    assert row["kept_keys_identical"] and row["parts"] == "body + hand.L + hand.R"
    for key in ("fill_error", "bezier_error", "ratio", "pop_fill", "pop_bezier", "hand.L_ratio"):
        assert math.isfinite(row[key]) and row[key] >= 0, key
    assert row["bezier_error"] > 0 and row["frames"] == 61 and row["mapped"] == 21
    assert "| body | 10 |" in rig.format_table([row])


def test_a_training_clip_put_on_a_mixamo_rig_with_blenders_constraints(bpy, ext, prefs, data_root):
    from training.bench import rig

    row = rig.run_clip(_session(bpy, ext, prefs), short_bvh(data_root / WALK, 41), every=10,
                       via=data_root / MIXAMO)
    assert row["clip"].endswith("on mixamo_walk-in-circle.bvh") and row["family"] == "Mixamo"
    assert row["kept_keys_identical"] and math.isfinite(row["ratio"]) and row["bezier_error"] > 0
    assert not [o for o in bpy.data.objects if o.name == "dataset-1_walk_angry_001"]  # the source is gone

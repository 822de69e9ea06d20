"""The extension's Auto Map by name (``addon/rig.py``: the standard library only, no Blender needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("anyfill_addon_rig", ROOT / "addon" / "rig.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


rig = _load()
MIXAMO = ["Hips", "Spine", "Spine1", "Spine2", "Neck", "Head", "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand",
          "RightShoulder", "RightArm", "RightForeArm", "RightHand", "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase",
          "RightUpLeg", "RightLeg", "RightFoot", "RightToeBase"]


def test_an_exporters_namespace_is_not_part_of_the_name():
    """Maya and FBX exports put a namespace before every bone ('Character1:', 'Körper:', 'Armature|'): it maps as
    the bare names do (it mapped nothing: 'Mapped body: 0 of 22')."""
    bare, family = rig.auto_map(rig.BODY_JOINTS, MIXAMO, "body")
    assert family == "Mixamo" and len(bare) == 21  # no joint_Root on a Mixamo rig
    for prefix in ("Character1:", "Körper:", "Armature|", "mixamorig:", "scene:mixamorig1:"):
        mapped, fam = rig.auto_map(rig.BODY_JOINTS, [prefix + b for b in MIXAMO], "body")
        assert fam == "Mixamo" and mapped == {j: prefix + b for j, b in bare.items()}, prefix


def test_a_hips_bone_wins_over_a_spine_bone_for_the_hips():
    """Blender-style names with both 'hips' and 'spine' (a rig named as Rigify's metarig names its bones, plus a
    hips bone): the hips joint goes to 'hips' (it went to 'spine', whose head then left the hips' tail on a fill);
    a metarig without one keeps 'spine', a generated rig 'torso'."""
    names = ["hips", "spine", "spine.001", "chest", "neck", "head"]
    assert rig.auto_map(rig.BODY_JOINTS, names, "body")[0]["Hips"] == "hips"
    assert rig.auto_map(rig.BODY_JOINTS, ["spine", "spine.001", "spine.003"], "body")[0]["Hips"] == "spine"
    assert rig.auto_map(rig.BODY_JOINTS, ["torso", "hips", "spine_fk.001"], "body")[0]["Hips"] == "torso"

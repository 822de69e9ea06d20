"""Rig mapping: model joint name -> bone name.

Exact names first (a BVH imported with Blender's own importer keeps the file's joint names), then alias
tables for Rigify, Mixamo and Unreal-style rigs. The conversion between rig and model is ``retarget.py``.
"""

from __future__ import annotations

import re

# Built-in copies of the model skeletons' joint names and parents (the backend's /v1/models is the truth;
# these serve automatic mapping before the backend has been reached).
HAND_JOINTS = (
    "WRIST",
    "THUMB_CMC_FE", "THUMB_CMC_AA", "THUMB_MCP_FE", "THUMB_IP_FE",
    "INDEX_MCP", "INDEX_PIP_FE", "INDEX_DIP_FE",
    "MIDDLE_MCP", "MIDDLE_PIP_FE", "MIDDLE_DIP_FE",
    "RING_MCP", "RING_PIP_FE", "RING_DIP_FE",
    "PINKY_MCP", "PINKY_PIP_FE", "PINKY_DIP_FE",
)  # fmt: skip
HAND_PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 0, 8, 9, 0, 11, 12, 0, 14, 15)
BODY_JOINTS = (
    "joint_Root", "Hips", "Spine", "Chest", "Neck", "Head",
    "Shoulder_L", "UpperArm_L", "LowerArm_L", "Hand_L",
    "Shoulder_R", "UpperArm_R", "LowerArm_R", "Hand_R",
    "UpperLeg_L", "LowerLeg_L", "Foot_L", "Toes_L",
    "UpperLeg_R", "LowerLeg_R", "Foot_R", "Toes_R",
)  # fmt: skip
BODY_PARENTS = (-1, 0, 1, 2, 3, 4, 3, 6, 7, 8, 3, 10, 11, 12, 1, 14, 15, 16, 1, 18, 19, 20)
SKELETONS = {"hand": (HAND_JOINTS, HAND_PARENTS), "body": (BODY_JOINTS, BODY_PARENTS)}

# --- aliases ----------------------------------------------------------------------------------------------
# Per rig family, model joint -> candidate bone names (compared after normalise(): lower case, prefixes
# such as "mixamorig:", "DEF-", "ORG-" removed). "{s}" is the side: .L/.R, Left/Right, _l/_r.


def _body_aliases() -> dict[str, dict[str, list[str]]]:
    # Rigify: a generated rig's FK controls first (what an animator keys; its ORG-/DEF-/MCH- bones are
    # driven by constraints, so keys there do nothing), then the metarig's names
    rigify = {"joint_Root": ["root"], "Hips": ["torso", "hips", "spine"], "Spine": ["spine_fk.001", "spine.001"],
              "Chest": ["spine_fk.003", "spine.003", "chest"], "Neck": ["neck", "spine.004"],
              "Head": ["head", "spine.006"]}
    mixamo = {"Hips": ["hips"], "Spine": ["spine"], "Chest": ["spine2", "spine1"], "Neck": ["neck"],
              "Head": ["head"]}
    unreal = {"joint_Root": ["root"], "Hips": ["pelvis"], "Spine": ["spine_01"], "Chest": ["spine_03", "spine_05"],
              "Neck": ["neck_01"], "Head": ["head"]}
    for side, rs, ms, us in (("L", "l", "left", "l"), ("R", "r", "right", "r")):
        for joint, base in (("Shoulder", "shoulder"), ("UpperArm", "upper_arm"), ("LowerArm", "forearm"),
                            ("Hand", "hand"), ("UpperLeg", "thigh"), ("LowerLeg", "shin"), ("Foot", "foot"),
                            ("Toes", "toe")):
            rigify[f"{joint}_{side}"] = [f"{base}_fk.{rs}", f"{base}.{rs}"]
        mixamo.update({f"Shoulder_{side}": [f"{ms}shoulder"], f"UpperArm_{side}": [f"{ms}arm"],
                       f"LowerArm_{side}": [f"{ms}forearm"], f"Hand_{side}": [f"{ms}hand"],
                       f"UpperLeg_{side}": [f"{ms}upleg"], f"LowerLeg_{side}": [f"{ms}leg"],
                       f"Foot_{side}": [f"{ms}foot"], f"Toes_{side}": [f"{ms}toebase"]})
        unreal.update({f"Shoulder_{side}": [f"clavicle_{us}"], f"UpperArm_{side}": [f"upperarm_{us}"],
                       f"LowerArm_{side}": [f"lowerarm_{us}"], f"Hand_{side}": [f"hand_{us}"],
                       f"UpperLeg_{side}": [f"thigh_{us}"], f"LowerLeg_{side}": [f"calf_{us}"],
                       f"Foot_{side}": [f"foot_{us}"], f"Toes_{side}": [f"ball_{us}"]})
    return {"Rigify": rigify, "Mixamo": mixamo, "Unreal": unreal}


def _hand_aliases(side: str) -> dict[str, dict[str, list[str]]]:
    """Finger chains of one hand (side "L" or "R"). The model's thumb has two CMC joints (flexion and
    abduction); three-bone thumbs map the first bone to the abduction joint and leave flexion to the model."""
    rs, ms, us = ("l", "left", "l") if side == "L" else ("r", "right", "r")
    rigify = {"WRIST": [f"hand_fk.{rs}", f"hand.{rs}"], "THUMB_CMC_AA": [f"thumb.01.{rs}"],
              "THUMB_MCP_FE": [f"thumb.02.{rs}"], "THUMB_IP_FE": [f"thumb.03.{rs}"]}
    mixamo = {"WRIST": [f"{ms}hand"], "THUMB_CMC_AA": [f"{ms}handthumb1"], "THUMB_MCP_FE": [f"{ms}handthumb2"],
              "THUMB_IP_FE": [f"{ms}handthumb3"]}
    unreal = {"WRIST": [f"hand_{us}"], "THUMB_CMC_AA": [f"thumb_01_{us}"], "THUMB_MCP_FE": [f"thumb_02_{us}"],
              "THUMB_IP_FE": [f"thumb_03_{us}"]}
    for finger, rname in (("INDEX", "index"), ("MIDDLE", "middle"), ("RING", "ring"), ("PINKY", "pinky")):
        for k, joint in enumerate((f"{finger}_MCP", f"{finger}_PIP_FE", f"{finger}_DIP_FE"), start=1):
            rigify[joint] = [f"f_{rname}.0{k}.{rs}"]
            mixamo[joint] = [f"{ms}hand{rname}{k}"]
            unreal[joint] = [f"{rname}_0{k}_{us}"]
    return {"Rigify": rigify, "Mixamo": mixamo, "Unreal": unreal}


ALIASES = {"body": _body_aliases(), "hand": _hand_aliases("L"), "hand_right": _hand_aliases("R")}
_PREFIXES = re.compile(r"^(mixamorig\d*[:_]|def[-_]|org[-_]|mch[-_]|cc_base_|bip\d*[ _])", re.I)
_NAMESPACE = re.compile(r"^.*[:|]")  # an exporter's namespace ("Character1:", "Armature|"): up to its last : or |
_MECHANISM = re.compile(r"^(def|org|mch|vis|wgt)[-_]", re.I)  # Rigify's deform/original/mechanism bones


def normalise(name: str) -> str:
    return _PREFIXES.sub("", _NAMESPACE.sub("", name.strip())).lower()


def auto_map(joints: list[str] | tuple[str, ...], bones: list[str], skeleton: str = "") -> tuple[dict[str, str], str]:
    """The best mapping of ``joints`` onto ``bones``: the exact names (a rig imported from the model's BVH)
    when they are all there, else each alias family's names, then the joint's own name compared without case
    and prefixes; the family that maps most joints wins. Returns (mapping, rig family)."""
    by_norm: dict[str, str] = {}
    # a control bone wins over a deform or mechanism bone of the same name (f_index.01.L over DEF-f_index.01.L);
    # rigs made only of DEF- bones (game exports) still map
    for b in sorted(bones, key=lambda b: bool(_MECHANISM.match(b))):
        by_norm.setdefault(normalise(b), b)
    exact = {j: j for j in joints if j in bones}
    if len(exact) == len(joints):
        return exact, "Exact names"

    def by_name(found: dict[str, str]) -> dict[str, str]:
        for j in joints:
            b = by_norm.get(j.lower())
            if j not in found and b is not None and b not in found.values():
                found[j] = b
        return found

    best, family = by_name(dict(exact)), "Exact names"
    tables = [t for key, t in ALIASES.items() if not skeleton or key.split("_")[0] == skeleton]
    for table in tables:
        for fam, aliases in table.items():
            found = dict(exact)
            for j in joints:
                if j in found:
                    continue
                for cand in aliases.get(j, []):
                    if cand in by_norm and by_norm[cand] not in found.values():
                        found[j] = by_norm[cand]
                        break
            found = by_name(found)
            if len(found) > len(best):
                best, family = found, fam
    return best, family


# The parts a full rig is filled in: the body with the body model, each hand's fingers with the hand model
# (its wrist taken from the body). A rig of one skeleton (a BVH import of the training skeleton, a hand alone)
# is one part named by its skeleton.
PARTS = ("body", "hand.L", "hand.R")
PART_SKELETON = {"body": "body", "hand.L": "hand", "hand.R": "hand", "hand": "hand"}
_SIDE_TABLE = {"hand.L": "hand", "hand.R": "hand_right"}


def part_skeleton(part: str) -> str:
    return PART_SKELETON.get(part, part)


def auto_map_parts(models: dict[str, list[str]], bones: list[str]) -> list[tuple[str, dict[str, str], str]]:
    """The parts of a rig and their mappings: (part, joint -> bone, rig family) for every part the rig has.
    ``models``: skeleton -> its joint names (the backend's models, or the built-in copies). A rig that carries a
    skeleton's joints under their own names is that one skeleton (one part named by it); otherwise the body
    (when at least half its joints map) and each hand whose wrist and at least half the fingers map."""
    for skeleton, joints in models.items():
        if all(j in bones for j in joints):
            return [(skeleton, {j: j for j in joints}, "Exact names")]
    out = []
    if "body" in models:
        found, family = auto_map(models["body"], bones, "body")
        if len(found) >= len(models["body"]) / 2:
            out.append(("body", found, family))
    if "hand" in models:
        joints = models["hand"]
        for part, table in _SIDE_TABLE.items():
            found, family = _map_with(joints, bones, ALIASES[table])
            if "WRIST" in found and len(found) >= len(joints) / 2:
                out.append((part, found, family))
    return out


def _map_with(joints: list[str] | tuple[str, ...], bones: list[str],
              tables: dict[str, dict[str, list[str]]]) -> tuple[dict[str, str], str]:
    """The best mapping of ``joints`` by one side's alias tables (family -> joint -> names)."""
    by_norm: dict[str, str] = {}
    for b in sorted(bones, key=lambda b: bool(_MECHANISM.match(b))):
        by_norm.setdefault(normalise(b), b)
    best: dict[str, str] = {}
    family = ""
    for fam, aliases in tables.items():
        found: dict[str, str] = {}
        for j in joints:
            for cand in aliases.get(j, []):
                if cand in by_norm and by_norm[cand] not in found.values():
                    found[j] = by_norm[cand]
                    break
        if len(found) > len(best):
            best, family = found, fam
    return best, family


def guess_skeleton(bones: list[str]) -> str:
    """'hand' or 'body': the built-in skeleton that maps more of these bones."""
    scores = {name: len(auto_map(joints, bones, name)[0]) / len(joints) for name, (joints, _) in SKELETONS.items()}
    return max(scores, key=scores.get)

"""From the rig to a backend request and from the answer back to keys.

:func:`prepare` runs on the main thread and reads everything it needs (mapping, rest pose, keys) into a
:class:`Plan` whose ``body`` is the JSON request; :func:`validate` checks an answer completely before
:func:`apply` writes anything, so an error leaves the rig untouched.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import client as client_mod
from . import curves, keys, provenance
from . import editable as editable_mod
from . import fcurves as fcurves_mod
from . import limbs as limbs_mod
from . import retarget as retarget_mod


class PlanError(keys.RigError):
    """The rig or the settings cannot make a request; the message says what to do."""


class NothingToFill(PlanError):
    """The part has no keys in the range, or every cell in scope is keyed: another part may still fill."""


@dataclass
class Plan:
    """A request and everything needed to write its answer back (read on the main thread)."""

    kind: str  # fill, pose, sample
    object_name: str
    model: str
    frames: list[float]
    retarget: retarget_mod.Retarget
    body: dict
    job_id: str
    locals_sent: np.ndarray  # (F, J, 4) wxyz: the model's local rotations of the rig (of its known cells)
    trans_sent: np.ndarray  # (F, J, 3): moving joints' local translations
    known: np.ndarray  # (F, J) cells sent as known
    targets: np.ndarray  # (F, J) cells asked for
    write: np.ndarray  # (F, J) cells written to the rig (mapped bones in scope)
    basis: np.ndarray  # (F, N, 4, 4) the bones' current matrix_basis at every frame
    bone_keys: dict[str, keys.BoneKeys]  # mapped bone -> its keys (the animator's values, for continuity)
    channels: dict[str, keys.Channels]  # mapped bone -> its properties at every frame (as read)
    summary: str = ""
    part: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # how long each stage of reading took
    fingerprint: str = ""  # sample: the rig as read (rig_fingerprint), for the variations kept for later
    bones_read: list[str] = field(default_factory=list)  # the mapped bones and every bone above them
    muted: list[str] = field(default_factory=list)  # bones in scope left whole for their muted curves (report's names)
    outside: list[float] = field(default_factory=list)  # frames of the range outside the keys: never written
    limbs: list[limbs_mod.Limb] = field(default_factory=list)  # Rigify limbs in IK written through their IK controls
    limbs_still: list[str] = field(default_factory=list)  # Rigify limbs in IK with no key: left as they are
    limb_keys: list[list[float]] = field(default_factory=list)  # each of ``limbs``' keyed frames (FK and IK keys)

    @property
    def n_targets(self) -> int:
        return int(self.write.sum())


def frame_range(context) -> tuple[int, int]:
    scene, settings = context.scene, context.scene.anyfill
    mode = settings.range_mode
    if mode == "CUSTOM":
        lo, hi = settings.frame_start, settings.frame_end
    elif mode == "PREVIEW" and not scene.use_preview_range:
        raise PlanError("Range is Preview but the scene has no preview range: set one (the Timeline's Preview Range, "
                        "Ctrl P in an animation editor) or choose another Range")
    elif mode == "PREVIEW" or (mode == "AUTO" and scene.use_preview_range):
        lo, hi = scene.frame_preview_start, scene.frame_preview_end
    else:
        lo, hi = scene.frame_start, scene.frame_end
    if hi < lo:
        raise PlanError(f"The frame range {lo}..{hi} is empty")
    return lo, hi


def mapping_of(obj, part: str | None = None) -> dict[str, str]:
    """Joint -> bone of one part of the rig (None: the rig's first part)."""
    part = parts_of(obj)[0] if part is None and parts_of(obj) else part
    return {m.joint: m.bone for m in obj.anyfill.joints if m.bone and m.bone in obj.data.bones and m.part == part}


def parts_of(obj) -> list[str]:
    """The rig's mapped parts, the body first (a full rig's hands take their wrist from it)."""
    found = {m.part for m in obj.anyfill.joints if m.bone and m.bone in obj.data.bones}
    return sorted(found, key=lambda p: (p != "body", p))


def _row_name(m) -> str:
    """A mapping row's joint as the panel shows it (a full rig's hand joints with their part)."""
    return f"{m.part} {m.joint}" if m.part.startswith("hand.") else m.joint


def _shared_wrist(rows) -> bool:
    """Two rows that may hold one bone: a full rig's hand part's wrist and the body's hand of that side."""
    if len(rows) != 2:
        return False
    a, b = sorted(rows, key=lambda m: m.part.startswith("hand."))
    return a.part == "body" and b.part.startswith("hand.") and b.joint == "WRIST" and a.joint == f"Hand_{b.part[-1]}"


def mapped_twice(obj) -> dict[str, list[str]]:
    """bone -> its joints (as the panel names them), for each bone of the rig mapped to more than one joint, in one
    part or across parts (a finger of both hands, a hand's wrist on the forearm); a full rig's hand wrist on the
    body's hand bone of its side is one bone by design."""
    rows: dict[str, list] = {}
    for m in obj.anyfill.joints:
        if m.bone and m.bone in obj.data.bones:
            rows.setdefault(m.bone, []).append(m)
    return {bone: [_row_name(m) for m in ms] for bone, ms in rows.items() if len(ms) > 1 and not _shared_wrist(ms)}


def check_mapping(obj) -> None:
    """Refuse a bone mapped to two joints (it would be written twice and one joint never filled); checked on every
    part before the first part is written."""
    twice = mapped_twice(obj)
    if twice:
        bone, joints = next(iter(twice.items()))
        more = f" (and {len(twice) - 1} more bones)" if len(twice) > 1 else ""
        count = "two" if len(joints) == 2 else str(len(joints))
        raise PlanError(f"The bone {bone!r} is mapped to {count} joints, {', '.join(joints[:-1])} and {joints[-1]}"
                        f"{more}: pick the right "
                        "bone for one of them in the Rig Mapping panel (or press Auto Map); nothing was written")


def thinly_mapped(obj) -> list[tuple[str, int, int]]:
    """(part, mapped, joints) of each part with fewer than half its joints on a bone of the rig: a fill of a few
    mapped joints runs (4 of 22 filled 1.5 times Bezier's error), and the report says why it may look loose."""
    out = []
    for part in parts_of(obj):
        rows = [m for m in obj.anyfill.joints if m.part == part]
        n = sum(1 for m in rows if m.bone and m.bone in obj.data.bones)
        if rows and n * 2 < len(rows):
            out.append((part, n, len(rows)))
    return out


def missing_bones(obj) -> list[str]:
    """The mapping rows whose bone the rig no longer has (renamed or deleted since it was mapped), as the report
    names them: 'LowerArm_L (bone 'LowerArm_L' no longer exists: remap)'."""
    return [f"{_row_name(m)} (bone {m.bone!r} no longer exists: remap)" for m in obj.anyfill.joints
            if m.bone and m.bone not in obj.data.bones]


def overridden_bones(obj) -> list[str]:
    """The mapped bones whose pose Blender does not take from their keys alone: an enabled constraint with some
    influence (Copy Rotation, IK, ...), or a driver on the channels Fill writes (its rotation mode's, its location).
    Fill writes their keys as for any bone; what the viewport shows follows the constraint or the driver, so the
    report names them."""
    mapped = {m.bone for m in obj.anyfill.joints if m.bone and m.bone in obj.data.bones}
    found = {b for b in mapped if any(c.enabled and c.influence > 0 for c in obj.pose.bones[b].constraints)}
    channels = _transform_paths(obj, sorted(mapped), ("location", "rotation"))
    ad = obj.animation_data
    found.update(channels[fc.data_path][0] for fc in (ad.drivers if ad is not None else ())
                 if not fc.mute and fc.data_path in channels)
    return sorted(found)


def limbs_in_ik(obj) -> list[str]:
    """The pose bones holding a Rigify limb's IK/FK switch (``IK_FK``, 1 = FK) set below FK, on a rig mapped to FK
    controls, whose limb Fill cannot drive through its IK controls (:func:`.limbs.in_ik`: a limb of another build,
    or one whose upper, lower and tip FK controls are not all mapped): Fill writes its FK controls, which such a
    limb does not follow."""
    mapped = {m.bone for m in obj.anyfill.joints if m.bone and m.bone in obj.data.bones}
    if not any("_fk" in b for b in mapped):
        return []
    return limbs_mod.in_ik(obj, mapped)[1]


def limb_name(limb: limbs_mod.Limb) -> str:
    """A limb as Rigify's own panel names it: its tip without the ORG- prefix ('foot.L')."""
    return limb.org[2].removeprefix("ORG-")


def _merge(frames: list[float]) -> list[float]:
    """Sorted frames with subframes within EPS_FRAME of each other merged."""
    merged: list[float] = []
    for f in sorted(frames):
        if not merged or f - merged[-1] > curves.EPS_FRAME:
            merged.append(f)
    return merged


def _on(frames: np.ndarray, keyed) -> np.ndarray:
    """(F,) whether each frame is one of ``keyed`` (within EPS_FRAME)."""
    return curves.near(frames, np.sort(np.asarray(keyed, dtype=np.float64)))


def unkeyed_movers(model: dict, mapping: dict[str, str], bone_keys: dict[str, keys.BoneKeys],
                   own: list[str]) -> list[str]:
    """The bones of the model's moving joints from its root down (the hips, a hand's wrist) with no key in the
    range: they stay as the rig holds them, known on every frame and never written. Asked for them, the model
    invents where the whole character goes (a hand keyed on its fingers alone had its wrist flown 5 hand lengths
    off; hips never keyed walked 4.2 m). A joint above the root (a `root` bone) is left out instead (:func:`build`)."""
    msk = retarget_mod.ModelSkeleton.from_info(model)
    above = set(msk.above_root)
    return [mapping[n] for j, n in enumerate(msk.joints) if msk.moving[j] and j not in above
            and mapping.get(n) in own and not bone_keys[mapping[n]].frames]


def keyed_poses(bone_keys: dict[str, keys.BoneKeys], keyed: list[float]) -> list[float]:
    """The frames the rig's conventions are read from (rest-pose match, twists, floor): those where every mapped
    bone with a key in the range is keyed, when there are two or more. A frame where only some bones are keyed
    shows the others as their curves run there, and those are the previous fill's keys on a refill: read from it,
    each refill moved the match and the fill (the floor lift 1.27, 0.95, 0.58... with the arms alone keyed on one
    frame). A bone with no key is held as the rig holds it on every frame, so it leaves every frame whole (with
    one, no frame was: the conventions were read from every keyed frame, partial ones too)."""
    whole = set(keyed)
    for bk in bone_keys.values():
        if bk.frames:
            whole &= set(bk.frames)
    return sorted(whole) if len(whole) >= 2 else keyed


def _of(part: str) -> str:
    return f" of the {part}" if part.startswith("hand.") else ""


def pose_reach(model: dict, frame: float, fps: float, frame_range: tuple[int, int]) -> tuple[float, float]:
    """The frames of the range whose keys condition Complete Pose at ``frame`` (with the two keys beyond each end,
    :func:`.keys.around_range`): as far on each side as one model window reaches at its slowest trained rate, all
    the model can read around the frame. A pose in a long shot then costs what one in a short shot does (a
    1,291-frame shot keyed every 10 frames sent every key and was filled whole: 0.5-0.9 s for one frame)."""
    lo, hi = frame_range
    window, rates = model.get("window_frames"), model.get("fps_range")
    if not isinstance(window, int | float) or not isinstance(rates, list) or not rates or min(rates) <= 0:
        return lo, hi
    reach = window / min(rates) * fps
    return max(lo, frame - reach), min(hi, frame + reach)


def key_span(bone_keys: dict[str, keys.BoneKeys], bones: list[str]) -> tuple[float, float]:
    """The first and the last frame keyed on any of ``bones`` (those read: the range's keys and those around it).
    A fill writes between them only: before the first key and after the last, Blender holds the key's pose, and the
    model, asked there, carries the motion on without end (a walk keyed to frame 301 walked on 2.6 m by frame
    400)."""
    frames = [f for b in bones for f in bone_keys[b].frames]
    return min(frames), max(frames)


def _outside_text(frame: float, first: float, last: float, part: str) -> str:
    """'before the first key (frame 11) of the mapped bones': where ``frame`` lies outside the keys."""
    where = f"before the first key (frame {first:g})" if frame < first else f"after the last key (frame {last:g})"
    return f"{where} of the mapped bones{_of(part)}, and Anyfill fills between keys"


def build_retarget(obj, model: dict, rig_arrays: retarget_mod.Rig | None = None,
                   poses: np.ndarray | None = None, key_frames=None, part: str | None = None) -> retarget_mod.Retarget:
    """The rig's conversion to and from the model (mapping, rest-pose characterisation, scale); ``poses``:
    the rig's keyed poses (K, N, 4, 4), from which the twists of the rest-pose match are refined."""
    settings = obj.anyfill
    names = {j["name"] for j in model["joints"]}
    mapping = {j: b for j, b in mapping_of(obj, part).items() if j in names}
    rig_arrays = rig_arrays or keys.armature_rig(obj.data, obj.pose)
    side = part[-1] if part and part.startswith("hand.") else ""  # a hand's side, as its bones' names say
    return retarget_mod.build(model, rig_arrays, mapping, settings.mirror, settings.rest_pose, poses, key_frames,
                              np.array(obj.matrix_world, dtype=np.float64)[:3, :3], settings.floor == "AUTO", side)


def _known_cells(values: np.ndarray, known: np.ndarray) -> list:
    """A joint's column (F, width) as the request's list: the known cells' values, null elsewhere (the known rows
    converted at once; most cells of a fill are unknown)."""
    out: list = [None] * len(values)
    rows = np.flatnonzero(known)
    for i, v in zip(rows.tolist(), values[rows].tolist(), strict=True):
        out[i] = v
    return out


def scene_fps(context) -> float:
    """The scene's frame rate (frames per second, ``fps / fps_base``)."""
    return context.scene.render.fps / (context.scene.render.fps_base or 1.0)


def selected_bones(obj) -> set[str]:
    """Names of the selected bones: selection lives on the pose bone in Blender 5.0, on the bone before."""
    pose_bones = obj.pose.bones
    if len(pose_bones) and hasattr(pose_bones[0], "select"):
        return {pb.name for pb in pose_bones if pb.select}
    return {b.name for b in obj.data.bones if b.select}


def prepare(context, obj, kind: str, model: dict, sample: dict | None = None, part: str | None = None) -> Plan:
    """Read the rig and make the request. ``kind``: 'fill' (unkeyed frames of the range), 'pose' (the
    current frame), 'sample' (like fill, ``sample`` holds order, k, temperature, seed, n). ``part``: which
    part of the rig (default its first); a hand of a rig that also has a body takes its wrist from the body:
    known on every frame, never written."""
    if obj is None or obj.type != "ARMATURE":
        raise PlanError("Select an armature (the rig to fill)")
    keys.check_rig_editable(obj)
    check_mapping(obj)
    settings = obj.anyfill
    part = part if part is not None else (parts_of(obj)[0] if parts_of(obj) else "")
    mapping = mapping_of(obj, part)
    if not mapping:
        raise PlanError(f"The rig {obj.name!r} has no bones mapped to the model's joints: open the Anyfill panel's "
                        "Mapping and press Auto Map, or pick bones for the joints")
    names = {j["name"] for j in model["joints"]}
    unknown = sorted(set(mapping) - names)
    if len(unknown) == len(mapping):
        raise PlanError(f"The model {model['name']!r} ({model['skeleton']}) has none of the rig's mapped joints "
                        f"({', '.join(unknown[:4])}...): press Auto Map to map the rig to this model")
    rig_arrays = keys.armature_rig(obj.data, obj.pose)
    mapping = {j: b for j, b in mapping.items() if j in names}
    moving = {j["name"]: bool(j.get("moving")) for j in model["joints"]}
    lo, hi = frame_range(context)
    check_action_time(obj, lo, hi)
    bag = keys.channelbag(obj)
    ad = obj.animation_data
    if bag is None and ad is not None and ad.action is not None and ad.action_slot is None:
        raise PlanError(f"The rig {obj.name!r} uses the action {ad.action.name!r} with no slot: pick its slot "
                        "(the Action Editor's Slot menu) to fill its keys")
    # the mapped bones and every bone their pose depends on: parents, and the bones constraints copy (Rigify's)
    relevant = rig_arrays.dependencies(sorted({rig_arrays.index[b] for b in mapping.values()}))
    relevant_names = [rig_arrays.names[b] for b in relevant]
    # Rigify limbs in IK: their FK controls are read as Blender shows the limb (its IK pose, :mod:`.limbs`); those
    # whose upper, lower and tip FK controls this part maps are also written through their IK controls
    in_ik = [limb for limb in limbs_mod.find(obj) if limb.in_ik(obj)]
    driven = [limb for limb in in_ik if set(limb.fk[:3]) <= set(mapping.values())]
    check_samples(obj, bag, relevant_names + [c for limb in driven for c in limb.controls])
    scope_selected = context.scene.anyfill.bones == "SELECTED"
    selected = selected_bones(obj) if scope_selected else None
    for limb in driven if selected is not None else []:  # a limb in IK is in scope whole when a control of it is
        if selected & {*limb.fk, *limb.controls}:
            selected |= set(limb.fk)
    if scope_selected and not selected & set(mapping.values()):
        raise NothingToFill(f"No mapped bone{_of(part)} is selected: select bones, or set Bones to All Mapped")
    in_scope = [b for b in mapping.values() if selected is None or b in selected]  # the bones a fill writes
    check_modifiers(obj, bag, in_scope + [c for limb in driven if limb.fk[0] in in_scope for c in limb.controls])
    include_gen = not settings.replace_generated
    t0 = time.perf_counter()

    current = float(context.scene.frame_current)
    read = pose_reach(model, current, scene_fps(context), (lo, hi)) if kind == "pose" else (lo, hi)
    bone_keys = {b: keys.read_bone(obj, bag, b, moving[j], include_gen, read) for j, b in mapping.items()}
    limb_frames = {}
    for limb in in_ik:  # a limb's keyed frames: the keys of its FK and its IK controls, its pose read as a whole
        raw = set(limbs_mod.control_keys(obj, bag, limb, include_gen))
        for b in limb.fk:
            raw.update(keys.read_bone(obj, bag, b, False, include_gen).frames)
        limb_frames[limb.switch] = keys.around_range(sorted(raw), read)
        for b in limb.fk:
            if b in bone_keys:
                bone_keys[b].frames = limb_frames[limb.switch]
    # a limb in IK with no key stays as the rig holds it (known on every frame, never written), as the hips do
    still_limbs = [limb for limb in driven if not limb_frames[limb.switch]]
    still_fk = {b for limb in still_limbs for b in limb.fk}
    driven = [limb for limb in driven if limb_frames[limb.switch]]
    keyed = sorted({f for bk in bone_keys.values() for f in bk.frames})
    own = [b for j, b in mapping.items() if not (part.startswith("hand.") and j == "WRIST" and "body" in parts_of(obj))]
    if not any(bone_keys[b].frames for b in own):  # a full rig's hand whose fingers have no key: left alone
        check_action_in_nla(obj)
        raise NothingToFill(f"Nothing is keyed on the mapped bones{_of(part)} between frames {lo} and {hi}: key a few "
                            "poses first (Anyfill fills between keys)")
    frozen = muted_bones(obj, bag, {b: moving[j] and not rig_arrays.connected[rig_arrays.index[b]]
                                    for j, b in mapping.items() if b in own and b in in_scope})
    still = unkeyed_movers(model, mapping, bone_keys, own)
    # a bone with no key in the range is held as the rig holds it: known where the others are keyed, as if keyed
    # there at that pose (the model sees what it would with the bone keyed), never written. Asked for it on every
    # frame, the model moved it and the rest with it: a Rigify rig's shoulders never keyed took a walk's fill from
    # 0.48 to 2.06 of Bezier's error (the legs 0.38 to 1.15); known on every frame, 0.54; known at the keys, 0.48.
    # A bone with only Anyfill's keys (an earlier version's fill) is still Anyfill's to fill: held, they would stay.
    # Complete Pose exists to pose the bones the animator has not keyed (the wrist and two fingers keyed, the rest
    # of the hand completed), so it still fills them.
    held = [b for b in own if kind != "pose" and b in in_scope and not bone_keys[b].frames
            and b not in {*still, *still_fk, *frozen}
            and not any(c is not None and len(c.keyframe_points)
                        for c in bone_keys[b].rot_curves + bone_keys[b].loc_curves)]
    first, last = key_span(bone_keys, own)
    if kind == "pose" and not first - curves.EPS_FRAME <= current <= last + curves.EPS_FRAME:
        raise NothingToFill(f"Frame {current:g} is {_outside_text(current, first, last, part)}: go to a frame "
                            "between keys, or key a pose beyond it")
    between = [first - curves.EPS_FRAME <= f <= last + curves.EPS_FRAME for f in range(lo, hi + 1)]
    integer = [float(f) for f, inside in zip(range(lo, hi + 1), between, strict=True) if inside]
    if not integer:
        raise NothingToFill(f"Frames {lo}..{hi} are {_outside_text(lo, first, last, part)}: set a range between "
                            "keys, or key a pose beyond it")
    # frames of the range outside the keys hold the nearest key's pose in Blender: not written, and Anyfill's keys
    # of an earlier fill there are cleared (a fill never walks the rig on past the animator's last key)
    outside = [] if kind == "pose" else [float(f) for f, inside in zip(range(lo, hi + 1), between, strict=True)
                                         if not inside]
    frames = _merge(keyed + [current]) if kind == "pose" else _merge(keyed + integer)
    target_frames = np.asarray([current] if kind == "pose" else integer)
    fr = np.asarray(frames)
    is_target_frame = _on(fr, target_frames)

    # a fill's bones are read from the animator's keys (out of scope with Bones = Selected, as they show)
    channels = keys.evaluate_channels(obj, bag, relevant_names, frames, set() if include_gen else set(in_scope))
    if in_ik:  # the FK controls of limbs in IK as the limb shows: where they are read (keyed), or everywhere
        written_fk = {b for limb in driven for b in limb.fk if b in in_scope and b not in frozen}
        rows_of = {b: np.flatnonzero(_on(fr, bone_keys[b].frames)) if b in written_fk else np.arange(len(fr))
                   for limb in in_ik for b in limb.fk if b in relevant_names}
        limbs_mod.fk_rotations(context, obj, in_ik, rows_of, fr, channels, include_gen)
    basis = keys.evaluate_basis(rig_arrays, relevant, frames, channels)
    check_poses(rig_arrays, relevant, basis, fr)
    pose = rig_arrays.pose(basis, relevant)
    check_scale_inheritance(rig_arrays, relevant, pose)
    t1 = time.perf_counter()
    at_poses = _on(fr, keyed_poses({b: bk for b, bk in bone_keys.items()
                                    if b not in frozen and b not in still and b not in still_fk}, keyed))
    ret = build_retarget(obj, model, rig_arrays, pose[at_poses], fr[at_poses], part)
    t2 = time.perf_counter()
    msk = ret.model

    n_frames, n_joints = len(frames), len(msk.joints)
    known = np.zeros((n_frames, n_joints), dtype=bool)
    write = np.zeros((n_frames, n_joints), dtype=bool)
    for j, name in enumerate(msk.joints):
        bone = ret.mapping.get(name)
        if bone is None:
            continue
        keyed_here = _on(fr, bone_keys[bone].frames)
        if (selected is not None and bone not in selected) or bone in frozen or bone in still or bone in still_fk:
            known[:, j] = True  # out of scope, all muted, a mover or limb in IK never keyed: as it is, it conditions
        elif bone in held:
            known[:, j] = _on(fr, keyed)
        else:
            known[:, j] = keyed_here
            write[:, j] = is_target_frame & ~keyed_here
    wrist_from_body = part.startswith("hand") and "body" in parts_of(obj)
    # a joint above the model's root that the rig lacks (a Mixamo rig has no joint_Root), or whose bone has no key in
    # the range (a generated Rigify rig's `root`, which animators leave where it is), is left out of the request and
    # never written: the server keys it at rest where the body has keys, as in training, and folds its motion into
    # the root's answer (backend/grid.py); sent at rest on every frame it made the fill worse (a walk on a Mixamo rig
    # keyed every 20 frames: 3.4 against 2.6 cm), and filled on every frame an unkeyed root carried the whole body
    # metres away
    left_out = [j for j in msk.above_root
                if j not in ret.bone_of or not bone_keys[ret.mapping[msk.joints[j]]].frames]
    write[:, left_out] = False
    for j, p in enumerate(msk.parents):
        if j in left_out:
            continue
        if j not in ret.bone_of:  # a joint the rig lacks: known with its nearest mapped ancestor
            known[:, j] = True if p < 0 else known[:, p]
        elif p < 0 and wrist_from_body:  # the hand's wrist: the body's hand bone, filled by the body model
            known[:, j], write[:, j] = True, False
    targets = ~known
    targets[:, left_out] = False
    if not write.any():
        wrist = ret.bone_of.get(msk.root) if wrist_from_body else None
        if selected is not None and wrist is not None and not (selected & set(mapping.values())) - {
                rig_arrays.names[wrist]}:
            raise NothingToFill(f"Nothing to fill{_of(part)}: its only selected bone, the wrist, is the body's hand "
                                "bone, filled with the body")
        if kind != "pose" and last - first < curves.EPS_FRAME:  # one pose keyed: there is no in-between
            raise NothingToFill(f"Nothing to fill{_of(part)}: one pose is keyed (frame {first:g}) and Anyfill fills "
                                "between keys: key a second pose")
        where = f"frame {current:g}" if kind == "pose" else f"frames {integer[0]:g}..{integer[-1]:g}"
        if kind != "pose" and (integer[0], integer[-1]) != (lo, hi):
            where += " (the range's frames between its first and last key)"
        scope = [b for b in own if b in in_scope]
        if scope and all(b in frozen for b in scope):  # their curves hold one pose: nothing Fill may write
            raise NothingToFill(f"Nothing to fill{_of(part)}: every mapped bone in scope has its curves muted "
                                f"({', '.join(sorted(frozen.values())[:3])}{', ...' * (len(frozen) > 3)}); unmute "
                                "the channels to fill")
        if scope and all(b in held or b in still for b in scope):
            raise NothingToFill(f"Nothing to fill{_of(part)}: no mapped bone in scope has a key in the range, and "
                                "Anyfill moves keyed bones only: key the bones to fill")
        raise NothingToFill(f"Nothing to fill{_of(part)}: every mapped bone in scope is keyed on {where}")

    # the model's view of the rig where a cell is sent: computed at the frames with a known cell of a joint the rig
    # moves (the other cells are the answer's); a joint with no mapped bone at or above it holds the matching pose
    posed = [j for j in range(n_joints) if set(retarget_mod.ancestors(msk.parents, [j])) & ret.bone_of.keys()]
    rows = np.flatnonzero(known[:, posed].any(axis=1))
    local, trans = (np.repeat(x, n_frames, axis=0) for x in ret.model_locals(pose[:1], fr[:1]))
    if len(rows):
        local[rows], trans[rows] = ret.model_locals(pose[rows], fr[rows])
    body_joints: dict[str, dict] = {}
    frame_array = np.asarray(frames)
    for j, name in enumerate(msk.joints):
        if j in left_out:
            continue
        track: dict = {"rotations": _known_cells(local[:, j], known[:, j]),
                       "targets": frame_array[targets[:, j]].tolist()}
        if msk.moving[j]:
            track["translations"] = _known_cells(trans[:, j], known[:, j])
        body_joints[name] = track
    job_id = client_mod.new_job_id()
    body = {"model": model["name"], "fps": scene_fps(context), "frames": frames,
            "rotation_format": {"type": "quaternion", "layout": "wxyz"}, "normalize_quaternions": True,
            "joints": body_joints, "id": job_id}
    if kind == "sample":
        limit = model.get("limits", {}).get("max_sample_frames") or model.get("window_frames")
        if limit and len(frames) > limit:
            raise PlanError(f"The backend samples at most {limit} frames; the range has {len(frames)}: set a "
                            f"shorter preview range")
        body.update(sample or {})
    n_bones = int(write.any(axis=0).sum())
    summary = f"{int(write.sum())} cells of {n_bones} bones over {n_frames} frames"
    if still or held:
        it = "it" if len(still + held) == 1 else "them"
        summary += (f"; not moved: {', '.join(still + held)}, with no key in the range (key {it} to have Anyfill "
                    f"move {it})")
    if still_limbs:
        names = ", ".join(limb_name(limb) for limb in still_limbs)
        summary += f"; not moved: {names} in IK, with no key in the range (key its IK controls to have Anyfill move it)"
    seconds = {"keys and poses": t1 - t0, "rig to model": t2 - t1, "request": time.perf_counter() - t2}
    driven = [limb for limb in driven if limb.fk[0] in in_scope]
    bones_read = relevant_names + [c for limb in driven for c in limb.controls]
    return Plan(kind, obj.name, model["name"], frames, ret, body, job_id, local, trans, known, targets, write, basis,
                bone_keys, {b: channels[b] for b in bone_keys}, summary, part, seconds,
                rig_fingerprint(obj, bones_read) if kind == "sample" else "", bones_read, list(frozen.values()),
                outside, driven, [limb_name(limb) for limb in still_limbs],
                [limb_frames[limb.switch] for limb in driven])


# --- what the rig must be for a fill (checked when reading it, and again before writing) -----------------------


def _names(names) -> str:
    """'the bone 'A'' or 'the bones 'A', 'B' and 3 more' for messages."""
    names = list(dict.fromkeys(names))
    shown = ", ".join(repr(n) for n in names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"the bone {shown}" if len(names) == 1 else f"the bones {shown}"


def check_action_time(obj, lo: float, hi: float) -> None:
    """Refuse NLA tweak mode on a strip that plays the action at other frames than its own: the keys are read and
    written in the action's frames, the range is the scene's."""
    ad = obj.animation_data
    if ad is None or not ad.use_tweak_mode:
        return
    for f in (lo, hi):
        scene_frame = ad.nla_tweak_strip_time_to_scene(float(f))
        if abs(scene_frame - f) > 1e-4:
            raise PlanError(f"The rig {obj.name!r} is in NLA tweak mode on a strip that plays the action's frame "
                            f"{f:g} at scene frame {scene_frame:g}: Anyfill reads and writes keys in the action's "
                            "own frames. Leave tweak mode (Tab in the NLA Editor) and fill the action as the rig's "
                            "active action, or move the strip so that its frames are the scene's; nothing was "
                            "written")


def check_action_in_nla(obj) -> None:
    """Name the place of a rig's keys when it has no active action and its animation sits in NLA strips (pushed
    down): it read as 'nothing is keyed'."""
    ad = obj.animation_data
    if ad is None or ad.action is not None:
        return
    strips = [s.name for t in ad.nla_tracks for s in t.strips if s.action is not None]
    if strips:
        shown = ", ".join(strips[:3]) + (", ..." if len(strips) > 3 else "")
        raise PlanError(f"The rig {obj.name!r} has no active action: its keys are in NLA strips ({shown}). Enter "
                        "tweak mode on the strip to fill (Tab in the NLA Editor) or make its action the rig's active "
                        "action; nothing was written")


def _transform_paths(obj, bones: list[str], props: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """The F-curve data paths of the bones' transform properties (``rotation``: the one of the bone's rotation
    mode), each with its (bone, property)."""
    paths = {}
    for name in bones:
        mode = obj.pose.bones[name].rotation_mode
        for prop in (keys.rotation_path(mode)[0] if p == "rotation" else p for p in props):
            paths[keys.bone_path(name, prop)] = (name, prop)
    return paths


def check_samples(obj, bag, bones: list[str]) -> None:
    """Refuse a bone whose transform channels hold baked samples (Convert to Samples): they have no keys to read
    or to add to (Blender refuses keys on them). A muted curve is neither read nor written and is left alone."""
    if bag is None:
        return
    paths = _transform_paths(obj, bones, ("location", "rotation", "scale"))
    found = [paths[fc.data_path] for fc in bag.fcurves
             if fc.data_path in paths and len(fc.sampled_points) and not fc.mute]
    if found:
        what = ", ".join(dict.fromkeys(f"{b!r} {prop}" for b, prop in found))
        raise PlanError(f"Baked samples, not keys, on {what}: convert them to keys first (Graph Editor: Channel > "
                        "Samples to Keys); nothing was written")


def check_modifiers(obj, bag, bones: list[str]) -> None:
    """Refuse a bone to be written whose transform curves run through F-curve modifiers (Cycles, Noise, ...): the
    keys Fill writes would pass through them, so the rig would not show the fill (a Cycles modifier even repeats
    them beyond the range, changing frames outside it). A muted modifier, or one on a muted curve (never written),
    changes nothing and is left alone."""
    if bag is None:
        return
    paths = _transform_paths(obj, bones, ("location", "rotation"))
    for fc in bag.fcurves:
        live = [m for m in fc.modifiers if not m.mute] if fc.data_path in paths and not fc.mute else []
        if live:
            name, prop = paths[fc.data_path]
            kind = live[0].type.replace("_", " ").title()
            raise PlanError(f"The {prop} curve of {name!r} runs through a {kind} modifier: the keys Fill writes "
                            "would pass through it (a Cycles modifier repeats them beyond the range); remove or mute "
                            "it (Graph Editor: Sidebar > Modifiers) first; nothing was written")


def muted_bones(obj, bag, bones: dict[str, bool]) -> dict[str, str]:
    """The bones (each with whether a fill writes its location too) whose every channel a fill writes has its curve
    muted, each with those channels as the report names them.

    Blender does not evaluate a muted curve: the channel holds its static value on every frame, whatever the keys
    say. So a muted curve is read as Blender shows the channel, as no curve: its keys make no frame keyed, and its
    value is the property's static one wherever the bone is read (:func:`.keys.read_bone`,
    :func:`.keys.evaluate_channels`). A bone listed here shows one pose on every frame (its static rotation, under
    its other live curves) and Fill will not change it: it is sent as known on every frame, as a bone out of scope
    is, so the others are filled around the pose the rig keeps, not around a motion the model would invent for it
    that Blender would never show. A bone with some channels muted is filled on the others (its muted ones at their
    static values where it is keyed) and its muted curves are left as they are (:func:`.editable.skip_muted`)."""
    out = {}
    for name, with_location in bones.items():
        props = [keys.rotation_path(obj.pose.bones[name].rotation_mode)] + ([("location", 3)] if with_location else [])
        if all(editable_mod.is_muted(bag, keys.bone_path(name, p), c) for p, width in props for c in range(width)):
            out[name] = ", ".join(editable_mod.channels_text(name, p, range(width), width) for p, width in props)
    return out


def check_poses(rig: retarget_mod.Rig, bones: list[int], basis: np.ndarray, frames) -> None:
    """Refuse bones scaled to zero (a bone without size has no rotation to read, nor its children) or holding a
    value that is not a number, at any frame read."""
    m = basis[:, bones]
    bad_value = ~np.isfinite(m).all(axis=(-1, -2))
    flat = np.linalg.norm(np.where(np.isfinite(m), m, 0.0)[..., :3, :3], axis=-2).min(axis=-1) < 1e-6
    for bad, what, fix in ((bad_value, "a value that is not a number (NaN)", "key a number there"),
                           (flat, "a scale of zero", "give {} a scale other than 0 (hide a bone with its Hide "
                                                     "setting instead)")):
        if bad.any():
            rows, cols = np.nonzero(bad)
            names = list(dict.fromkeys(rig.names[bones[c]] for c in cols[np.argsort(rows, kind="stable")]))
            raise PlanError(f"Anyfill cannot read {_names(names)}: {what} at frame {frames[rows.min()]:g}; "
                            f"{fix.format('it' if len(names) == 1 else 'them')}; nothing was written")


def check_scale_inheritance(rig: retarget_mod.Rig, bones: list[int], pose: np.ndarray) -> None:
    """Refuse bones whose Inherit Scale is not Full under a scaled parent (those modes are not followed)."""
    bad = rig.scale_conflicts(pose, bones)
    if bad:
        raise PlanError(f"Anyfill does not support {_names(rig.names[b] for b in bad)}: Inherit Scale other than "
                        "Full under a scaled parent; set Inherit Scale to Full (Bone properties > Relations) or the "
                        "parent's scale to 1; nothing was written")


def check_finite(tracks: list[editable_mod.Track]) -> None:
    """The last check before writing: every value to write is a number."""
    bad = [t.bone for t in tracks if not np.isfinite(t.values).all()]
    if bad:
        raise PlanError(f"The fill of {_names(bad)} is not a number (NaN) on some frames; nothing was written")


def rig_fingerprint(obj, bones: list[str]) -> str:
    """A digest of the rig as a fill reads it: its bones and the animator's keys (not Anyfill's) of the listed
    bones, their values, handles and interpolation. An answer kept for later (variations) is written only onto the
    rig it was drawn for: ``bones`` are all the bones its writing reads (the mapped ones and every bone above them,
    mapped or not: a written bone is solved under its parents' poses as they were read)."""
    h = hashlib.sha1()
    for b in obj.data.bones:
        h.update(f"{b.name}\0{b.parent.name if b.parent else ''}\0".encode())
    bag = keys.channelbag(obj)
    prefixes = tuple(keys.bone_path(b, "") for b in bones)
    gen = keys.generated_type_value()
    for fc in sorted(bag.fcurves if bag is not None else [], key=lambda c: (c.data_path, c.array_index)):
        if not fc.data_path.startswith(prefixes):
            continue
        n = len(fc.keyframe_points)
        own = fcurves_mod.bulk_get(fc.keyframe_points, "type", n, 1, np.uint8) != gen
        if n and not own.any():  # Anyfill's own curve (a variation shown made it): not the animator's state
            continue
        h.update(f"{fc.data_path}[{fc.array_index}]".encode())
        for attr in ("co", "handle_left", "handle_right"):
            h.update(fcurves_mod.bulk_get(fc.keyframe_points, attr, n, 2).reshape(n, 2)[own].tobytes())
        h.update(fcurves_mod.bulk_get(fc.keyframe_points, "interpolation", n, 1, np.int32)[own].tobytes())
    return h.hexdigest()


# --- answers ---------------------------------------------------------------------------------------------


def answer_joints(answer, what: str = "answer") -> dict:
    """The ``joints`` of an answer (a fill's, or one variation's), refused unless it is an object."""
    joints = answer.get("joints") if isinstance(answer, dict) else None
    if not isinstance(joints, dict):
        raise PlanError(f"The backend's {what} has no 'joints' (an object per joint); nothing was written")
    return joints


def answer_variations(answer) -> list[dict]:
    """Each variation's ``joints`` of a sampling answer, refused unless every one is there."""
    variations = answer.get("variations") if isinstance(answer, dict) else None
    if not isinstance(variations, list):
        raise PlanError("The backend's answer has no 'variations' (a list); nothing was written")
    if not variations:
        raise PlanError("The backend returned no variation")
    return [answer_joints(v, f"variation {i + 1}") for i, v in enumerate(variations)]


def validate(plan: Plan, joints_result: dict) -> tuple[np.ndarray, np.ndarray]:
    """The answer's cells merged with the known ones: local rotations (F, J, 4) wxyz and translations (F, J, 3).
    Raises PlanError on anything missing or not finite, before anything is written."""
    local, trans = plan.locals_sent.copy(), plan.trans_sent.copy()
    msk = plan.retarget.model
    if not isinstance(joints_result, dict):
        raise PlanError("The backend's answer has no 'joints' (an object per joint); nothing was written")
    for j, name in enumerate(msk.joints):
        rows = np.flatnonzero(plan.targets[:, j])
        if not len(rows):
            continue
        res = joints_result.get(name)
        if not isinstance(res, dict):
            raise PlanError(f"The backend's answer has no joint {name!r}; nothing was written")
        rots, tr = res.get("rotations") or [], res.get("translations")
        r = _cells(rots, rows, 4)
        if r is None:
            _first_bad(plan, name, rots, rows, 4, "answer for")
        local[rows, j] = r
        if msk.moving[j]:
            t = _cells(tr or [], rows, 3)
            if t is None:
                _first_bad(plan, name, tr or [], rows, 3, "translation of")
            trans[rows, j] = t
    return local, trans


def _cells(values: list, rows: np.ndarray, width: int) -> np.ndarray | None:
    """The answer's cells at the rows as a (len(rows), width) array, or None if any is missing or not finite."""
    if not isinstance(values, list) or len(values) <= rows[-1]:
        return None
    try:
        out = np.array([values[i] for i in rows], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (len(rows), width) and np.isfinite(out).all() else None


def _first_bad(plan: Plan, name: str, values: list, rows: np.ndarray, width: int, what: str) -> None:
    """Raise the error that names the first bad cell (the answer was found bad as a whole)."""
    values = values if isinstance(values, list) else []
    for i in rows:
        v = values[i] if i < len(values) else None
        if not _finite(v) or len(v) != width:
            raise PlanError(f"The backend's {what} {name!r} at frame {plan.frames[i]:g} is missing or not a number "
                            "(NaN); nothing was written")
    raise PlanError(f"The backend's {what} {name!r} is malformed; nothing was written")


def _finite(values) -> bool:
    return isinstance(values, list) and all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def output_settings(context) -> tuple[bool, float, float]:
    """(editable, rotation tolerance in radians, location tolerance in scene units) of the scene's Keys setting."""
    s = context.scene.anyfill
    return s.keys_output == "EDITABLE", math.radians(s.rotation_tolerance), s.location_tolerance


def tracks(plan: Plan, obj, basis: np.ndarray) -> list[editable_mod.Track]:
    """Each written bone's rotation (in its rotation mode, continuous with its keys) and, for a moving joint's
    bone not connected to its parent, its location: the dense fill at the bone's target frames. The rotation
    maths runs once for all bones (per rotation mode)."""
    ret = plan.retarget
    frames = np.asarray(plan.frames)
    bones = []  # (joint, bone, name, pose bone, mode, rows, keyed frames, their rows, their values)
    for j, b in ret.bone_of.items():
        rows = np.flatnonzero(plan.write[:, j])
        if not len(rows):
            continue
        name = ret.rig.names[b]
        pb = obj.pose.bones[name]
        mode = pb.rotation_mode
        keyed = np.asarray(plan.bone_keys[name].frames, dtype=np.float64)
        known_rows = np.searchsorted(frames, keyed - curves.EPS_FRAME)  # the track's frames hold every keyed frame
        channels = plan.channels[name]
        known = channels.rotation[known_rows]
        if mode != channels.mode:  # the bone's rotation mode changed since the request was made
            known = curves.quat_to_mode(retarget_mod.mode_to_quat(known, channels.mode), mode)
        bones.append((j, b, name, pb, mode, rows, keyed, known_rows, known))
    if not bones:
        return []
    cells = np.concatenate([basis[e[5], e[1], :3, :3] for e in bones])
    # a written cell is a rotation times the bone's own column scales (solve_basis): its columns, normalised
    cells = cells / np.linalg.norm(cells, axis=-2, keepdims=True)
    quats = np.split(retarget_mod.matrix_to_quat(cells),
                     np.cumsum([len(e[5]) for e in bones])[:-1])
    values: dict[int, np.ndarray] = {}
    for mode in {e[4] for e in bones}:
        group = [i for i, e in enumerate(bones) if e[4] == mode]
        rest = [getattr(bones[i][3], keys.rotation_path(mode)[0]) for i in group]
        out = curves.continuous_values(
            np.concatenate([bones[i][5] for i in group]), np.concatenate([quats[i] for i in group]),
            np.concatenate([bones[i][7] for i in group]), np.concatenate([bones[i][8] for i in group]), mode,
            np.array([tuple(r) for r in rest]), np.repeat(np.arange(len(group)), [len(bones[i][5]) for i in group]),
            np.repeat(np.arange(len(group)), [len(bones[i][7]) for i in group]))
        for i, v in zip(group, np.split(out, np.cumsum([len(bones[i][5]) for i in group])[:-1]), strict=True):
            values[i] = v
    out = []
    for i, (j, b, name, pb, mode, rows, keyed, _, _) in enumerate(bones):
        prop = keys.rotation_path(mode)[0]
        out.append(editable_mod.Track(name, keys.bone_path(name, prop), mode, frames[rows], values[i], keyed,
                                      tuple(getattr(pb, prop))))
        if ret.model.moving[j] and not ret.rig.connected[b]:
            out.append(editable_mod.Track(name, keys.bone_path(name, "location"), "LOCATION", frames[rows],
                                          basis[rows, b, :3, 3].copy(), keyed, tuple(pb.location)))
    return out


def apply(context, plan: Plan, joints_result: dict, decoded=None) -> editable_mod.Written:
    """Write an answer (``joints`` of a fill or of one variation) as GENERATED keys: each mapped bone's local
    pose solved under its parent's new pose, in its own rotation mode, continuous with its keys; a location
    only on a moving joint's bone that is not connected to its parent. A key on every filled frame, or (the
    scene's Keys set to Editable, not for Complete Pose) keys only where Blender's curves need them to stay
    within the tolerances (:mod:`.editable`). Returns what was written."""
    import bpy

    obj = bpy.data.objects.get(plan.object_name)
    if obj is None or obj.type != "ARMATURE":
        raise PlanError(f"The rig {plan.object_name!r} is gone")
    keys.check_rig_editable(obj)
    check_action_time(obj, plan.frames[0], plan.frames[-1])
    t0 = time.perf_counter()
    local, trans = decoded if decoded is not None else validate(plan, joints_result)
    t1 = time.perf_counter()
    basis = plan.retarget.solve_basis(local, trans, plan.basis, plan.write, plan.frames)
    t2 = time.perf_counter()
    todo = tracks(plan, obj, basis)
    # everything checked before the first change: the values, the channels' samples and modifiers, the muted and
    # locked channels
    check_finite(todo)
    written_bones = list(dict.fromkeys(t.bone for t in todo))
    check_samples(obj, keys.channelbag(obj), written_bones)
    check_modifiers(obj, keys.channelbag(obj), written_bones)
    todo, muted = editable_mod.skip_muted(keys.channelbag(obj), todo)
    todo, locked = editable_mod.skip_locked(keys.channelbag(obj), todo)
    bag = keys.channelbag(obj, create=True)
    saved = curves.SavedCurves(bag) if plan.limbs else None  # the IK controls are solved once the FK keys are in
    clear_outside(bag, todo, plan.outside)
    for limb, frames in zip(plan.limbs, plan.limb_keys, strict=True):  # a frame keyed on any control of the limb
        clear_outside(bag, [t for t in todo if t.bone in limb.fk], frames)
    t3 = time.perf_counter()
    try:
        written = _write(context, obj, plan, bag, todo)
        if plan.limbs:
            todo += _write_limbs(context, obj, plan, bag, written)
    except BaseException:
        if saved is not None:
            saved.restore()
        raise
    provenance.record(obj, bag, [(t.path, c) for t in todo for c in t.channels])
    written.locked, written.muted = written.locked + locked, sorted(set(plan.muted + muted + written.muted))
    written.seconds = {"answer checked": t1 - t0, "poses solved": t2 - t1, "continuity": t3 - t2,
                       "keys written": time.perf_counter() - t3}
    return written


def _write(context, obj, plan: Plan, bag, todo: list[editable_mod.Track]) -> editable_mod.Written:
    """The tracks written as the scene's Keys setting says: a key on every filled frame, or editable curves."""
    editable, rotation_tolerance, location_tolerance = output_settings(context)
    if not editable or plan.kind == "pose":
        return editable_mod.write_dense(bag, todo)
    # locations are in the armature's units: its largest axis scale, a magnitude (a mirrored rig's is negative)
    scale = float(np.linalg.norm(np.array(obj.matrix_world, dtype=np.float64)[:3, :3], axis=0).max()) or 1.0
    written = editable_mod.write_editable(bag, todo, rotation_tolerance, location_tolerance / scale)
    written.max_location *= scale
    return written


def _write_limbs(context, obj, plan: Plan, bag, written: editable_mod.Written) -> list[editable_mod.Track]:
    """Key the IK controls of the plan's limbs in IK on the frames their FK controls were just written, so that the
    limb shows the fill in IK too (:func:`.limbs.solve`); adds to ``written`` and returns the tracks written."""
    frames = np.asarray(plan.frames)
    todo = []
    for limb in plan.limbs:
        j = plan.retarget.model.joints.index(next(n for n, b in plan.retarget.mapping.items() if b == limb.fk[2]))
        rows = np.flatnonzero(plan.write[:, j])
        if len(rows):
            todo.append((limb, frames[rows].tolist()))
    solved = limbs_mod.solve(context, obj, todo)
    tracks_ = limbs_mod.tracks(obj, bag, solved, not obj.anyfill.replace_generated)
    check_finite(tracks_)
    tracks_, muted = editable_mod.skip_muted(bag, tracks_)
    tracks_, locked = editable_mod.skip_locked(bag, tracks_)
    clear_outside(bag, tracks_, plan.outside)
    for limb, frames in zip(plan.limbs, plan.limb_keys, strict=True):
        clear_outside(bag, [t for t in tracks_ if t.bone in limb.controls], frames)
    more = _write(context, obj, plan, bag, tracks_)
    total = written.add(more)
    written.keys, written.dense_keys, written.editable = total.keys, total.dense_keys, total.editable
    written.max_rotation_deg, written.max_location = total.max_rotation_deg, total.max_location
    written.locked, written.muted = written.locked + locked, written.muted + muted
    written.limbs = [limb_name(limb) for limb, _ in todo]
    written.limb_error = solved.largest_error
    return tracks_


def clear_outside(bag, todo: list[editable_mod.Track], frames: list[float]) -> None:
    """Anyfill's keys of an earlier fill on the range's frames outside the keys (:attr:`Plan.outside`) removed
    from the channels written, as a fill replaces its keys in its range; also a Rigify limb's keys of an earlier fill
    on a frame now keyed on another control of the limb."""
    if not frames:
        return
    for t in todo:
        for c in t.channels:
            fc = bag.fcurves.find(t.path, index=c)
            if fc is not None:
                curves.clear_generated(fc, frames)


def uncertainty_per_frame(plan: Plan, joints_result: dict) -> tuple[list[float], list[float]]:
    """Per written frame, the largest uncertainty (degrees) over the bones written there."""
    per: dict[float, float] = {}
    for j, name in enumerate(plan.retarget.model.joints):
        res = joints_result.get(name) if isinstance(joints_result, dict) else None
        unc = res.get("uncertainty_deg") if isinstance(res, dict) else None
        unc = unc if isinstance(unc, list) else []
        for i in np.flatnonzero(plan.write[:, j]):
            u = unc[i] if i < len(unc) else None
            if isinstance(u, int | float) and math.isfinite(u):
                f = plan.frames[i]
                per[f] = max(per.get(f, 0.0), float(u))
    frames = sorted(per)
    return frames, [per[f] for f in frames]


def length_text(scene, value: float, precision: int = 2) -> str:
    """A length in scene units as the scene shows it (its unit system and Unit Scale), e.g. '9.8 mm'."""
    import bpy

    units = scene.unit_settings
    return bpy.utils.units.to_string(units.system if units.system != "NONE" else "METRIC", "LENGTH",
                                     value * units.scale_length, precision=precision)


def describe_match(plan: Plan, obj, scene) -> str:
    """One line for the panel: how the rig was matched to the model for this plan's part. The floor's distance is
    a length in the scene, as the viewport shows it: the lift (model units) taken to the armature's units and axes,
    then through the object's world matrix (an FBX import's armature object is often scaled 0.01), in the scene's
    units (``scale`` stays the ratio of armature units to model units the matching uses)."""
    ret = plan.retarget
    rest = {"MODEL": "the model's own rest", "REST": "the rig's rest, twists fitted to the keys"}[ret.rest_mode]
    mirrored = ", mirrored" if ret.mirrored else ""
    world = np.array(obj.matrix_world, dtype=np.float64)[:3, :3] @ ret.from_model @ ret.lift * ret.scale
    lift = length_text(scene, float(np.linalg.norm(world)), precision=3)
    floor = (f", read {'raised' if ret.lift.sum() > 0 else 'lowered'} {lift} onto the model's floor"
             if ret.lift.any() else "")
    return f"{plan.part or plan.model}: {rest}, scale {ret.scale:.3g}{mirrored}{floor}"


def store_uncertainty(obj, plan: Plan, joints_result: dict) -> None:
    frames, values = uncertainty_per_frame(plan, joints_result)
    obj.anyfill.last_uncertainty = json.dumps({"frames": frames, "values": values})

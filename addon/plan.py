"""From the rig to a backend request and from the answer back to keys.

:func:`prepare` runs on the main thread and reads everything it needs (mapping, rest pose, keys) into a
:class:`Plan` whose ``body`` is the JSON request; :func:`validate` checks an answer completely before
:func:`apply` writes anything, so an error leaves the rig untouched.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from mathutils import Quaternion, Vector

from . import client as client_mod
from . import curves, keys, rig


class PlanError(Exception):
    """The rig or the settings cannot make a request; the message says what to do."""


@dataclass
class JointPlan:
    conv: rig.JointConversion
    bone_keys: keys.BoneKeys
    known: list[float]
    targets: list[float]


@dataclass
class Plan:
    kind: str  # fill, pose, sample
    object_name: str
    model: str
    frames: list[float]
    joints: dict[str, JointPlan]
    retarget: rig.Retarget
    body: dict
    job_id: str
    summary: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n_targets(self) -> int:
        return sum(len(j.targets) for j in self.joints.values())


def frame_range(context) -> tuple[int, int]:
    scene, settings = context.scene, context.scene.anyfill
    mode = settings.range_mode
    if mode == "CUSTOM":
        lo, hi = settings.frame_start, settings.frame_end
    elif mode == "PREVIEW" or (mode == "AUTO" and scene.use_preview_range):
        lo, hi = scene.frame_preview_start, scene.frame_preview_end
    else:
        lo, hi = scene.frame_start, scene.frame_end
    if hi < lo:
        raise PlanError(f"The frame range {lo}..{hi} is empty")
    return lo, hi


def mapping_of(obj) -> dict[str, str]:
    return {m.joint: m.bone for m in obj.anyfill.joints if m.bone and m.bone in obj.data.bones}


def _same(f: float, frames: set[float]) -> bool:
    return any(abs(f - g) <= curves.EPS_FRAME for g in frames)


def prepare(context, obj, kind: str, model: dict, sample: dict | None = None) -> Plan:
    """Read the rig and make the request. ``kind``: 'fill' (unkeyed frames of the range), 'pose' (the
    current frame), 'sample' (like fill, ``sample`` holds order, k, temperature, seed, n)."""
    if obj is None or obj.type != "ARMATURE":
        raise PlanError("Select an armature (the rig to fill)")
    settings = obj.anyfill
    mapping = mapping_of(obj)
    if not mapping:
        raise PlanError(f"The rig {obj.name!r} has no bones mapped to the model's joints: open the Anyfill panel's "
                        "Mapping and press Auto Map, or pick bones for the joints")
    names = {j["name"] for j in model["joints"]}
    unknown = sorted(set(mapping) - names)
    if len(unknown) == len(mapping):
        raise PlanError(f"The model {model['name']!r} ({model['skeleton']}) has none of the rig's mapped joints "
                        f"({', '.join(unknown[:4])}...): choose the model of this skeleton")
    mapping = {j: b for j, b in mapping.items() if j in names}
    rest = rig.rest_of_armature(obj.data)
    ret = rig.build_retarget(rest, mapping, model, settings.mirror, settings.align_rest)
    lo, hi = frame_range(context)
    bag = keys.channelbag(obj)
    scope_selected = context.scene.anyfill.bones == "SELECTED"
    selected = {b.name for b in obj.data.bones if b.select} if scope_selected else None
    if scope_selected and not selected & set(mapping.values()):
        raise PlanError("No mapped bone is selected: select bones, or set Bones to All Mapped")
    infos = {j["name"]: j for j in model["joints"]}
    include_gen = not settings.replace_generated

    read = {j: keys.read_bone(obj, bag, b, bool(infos[j].get("moving")), include_gen, (lo, hi))
            for j, b in mapping.items()}
    keyed = sorted({f for bk in read.values() for f in bk.frames})
    if not keyed:
        raise PlanError(f"Nothing is keyed on the mapped bones between frames {lo} and {hi}: key a few poses "
                        "first (Anyfill fills between keys)")
    current = float(context.scene.frame_current)
    if kind == "pose":
        frames = sorted(set(keyed) | {current})
        target_frames = [current]
    else:
        integer = [float(f) for f in range(lo, hi + 1)]
        frames = sorted(set(keyed) | set(integer))
        target_frames = integer
    # merge subframes that are the same frame within EPS
    merged: list[float] = []
    for f in frames:
        if not merged or f - merged[-1] > curves.EPS_FRAME:
            merged.append(f)
    frames = merged

    joints: dict[str, JointPlan] = {}
    body_joints: dict[str, dict] = {}
    for j, bk in read.items():
        conv = ret.joints[j]
        kset = set(bk.frames)
        in_scope = selected is None or bk.bone in selected
        targets = [f for f in target_frames if in_scope and not _same(f, kset)]
        rots: list = []
        trans: list = []
        for f in frames:
            if _same(f, kset):
                q = conv.to_model(bk.rotation(f))
                rots.append([q.w, q.x, q.y, q.z])
                if conv.moving:
                    trans.append(list(conv.loc_to(bk.location(f), ret.scale)))
            else:
                rots.append(None)
                trans.append(None)
        track = {"rotations": rots, "targets": targets}
        if conv.moving:
            track["translations"] = trans
        body_joints[j] = track
        joints[j] = JointPlan(conv, bk, [f for f in frames if _same(f, kset)], targets)
    n_targets = sum(len(j.targets) for j in joints.values())
    if not n_targets:
        where = f"frame {current:g}" if kind == "pose" else f"frames {lo}..{hi}"
        raise PlanError(f"Nothing to fill: every mapped bone in scope is keyed on {where}")
    fps = context.scene.render.fps / (context.scene.render.fps_base or 1.0)
    job_id = client_mod.new_job_id()
    body = {"model": model["name"], "fps": fps, "frames": frames,
            "rotation_format": {"type": "quaternion", "layout": "wxyz"}, "normalize_quaternions": True,
            "joints": body_joints, "id": job_id}
    if kind == "sample":
        limit = model.get("limits", {}).get("max_sample_frames") or model.get("window_frames")
        if limit and len(frames) > limit:
            raise PlanError(f"Variations take at most {limit} frames (the model's window); the range has "
                            f"{len(frames)}: set a shorter preview range")
        body.update(sample or {})
    summary = f"{n_targets} cells of {len(joints)} bones over {len(frames)} frames"
    return Plan(kind, obj.name, model["name"], frames, joints, ret, body, job_id, summary)


# --- answers ---------------------------------------------------------------------------------------------


def _finite(values) -> bool:
    return values is not None and all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def validate(plan: Plan, joints_result: dict) -> dict[str, dict[float, tuple[Quaternion, Vector | None]]]:
    """Decode and check an answer's joints; raise PlanError on anything missing or not finite."""
    index = {f: i for i, f in enumerate(plan.frames)}
    out: dict[str, dict[float, tuple[Quaternion, Vector | None]]] = {}
    for j, jp in plan.joints.items():
        if not jp.targets:
            continue
        res = joints_result.get(j)
        if res is None:
            raise PlanError(f"The backend's answer has no joint {j!r}; nothing was written")
        rots, trans = res.get("rotations") or [], res.get("translations")
        values = {}
        for f in jp.targets:
            i = index[f]
            r = rots[i] if i < len(rots) else None
            if not _finite(r) or len(r) != 4:
                raise PlanError(f"The backend's answer for {j!r} at frame {f:g} is missing or not a number (NaN); "
                                "nothing was written")
            t = None
            if jp.conv.moving:
                t = trans[i] if trans and i < len(trans) else None
                if not _finite(t) or len(t) != 3:
                    raise PlanError(f"The backend's translation of {j!r} at frame {f:g} is missing or NaN; "
                                    "nothing was written")
                t = Vector(t)
            values[f] = (Quaternion(r).normalized(), t)
        out[j] = values
    return out


def apply(context, plan: Plan, joints_result: dict, decoded=None) -> int:
    """Write an answer (``joints`` of a fill or of one variation) as GENERATED keys. Returns keys written."""
    import bpy

    obj = bpy.data.objects.get(plan.object_name)
    if obj is None:
        raise PlanError(f"The rig {plan.object_name!r} is gone")
    decoded = decoded or validate(plan, joints_result)
    bag = keys.channelbag(obj, create=True)
    written = 0
    for j, values in decoded.items():
        jp = plan.joints[j]
        pb = obj.pose.bones[jp.conv.bone]
        mode = pb.rotation_mode
        prop, width = keys.rotation_path(mode)
        new = {f: jp.conv.from_model(q) for f, (q, _) in values.items()}
        known = {f: jp.bone_keys.rotation_values(f) for f in jp.known} if mode == jp.bone_keys.mode else {
            f: curves.quaternion_to_mode(jp.bone_keys.rotation(f), mode, None) for f in jp.known}
        track = curves.continuous_track(plan.frames, new, known, mode, tuple(getattr(pb, prop)))
        frames = sorted(track)
        path = keys.bone_path(jp.conv.bone, prop)
        for c in range(width):
            written += curves.write_keys(bag, path, c, jp.conv.bone, frames, [track[f][c] for f in frames])
        if jp.conv.moving:
            locs = {f: jp.conv.loc_from(t, plan.retarget.scale) for f, (_, t) in values.items()}
            path = keys.bone_path(jp.conv.bone, "location")
            for c in range(3):
                written += curves.write_keys(bag, path, c, jp.conv.bone, frames, [locs[f][c] for f in frames])
    return written


def uncertainty_per_frame(plan: Plan, joints_result: dict) -> tuple[list[float], list[float]]:
    """Per target frame, the largest uncertainty (degrees) over the filled joints."""
    index = {f: i for i, f in enumerate(plan.frames)}
    per: dict[float, float] = {}
    for j, jp in plan.joints.items():
        unc = (joints_result.get(j) or {}).get("uncertainty_deg") or []
        for f in jp.targets:
            i = index[f]
            u = unc[i] if i < len(unc) else None
            if u is not None and math.isfinite(u):
                per[f] = max(per.get(f, 0.0), float(u))
    frames = sorted(per)
    return frames, [per[f] for f in frames]


def store_uncertainty(obj, plan: Plan, joints_result: dict) -> None:
    frames, values = uncertainty_per_frame(plan, joints_result)
    obj.anyfill.last_uncertainty = json.dumps({"frames": frames, "values": values})

"""Reading an armature's keys through its action slot's channelbag (``Action.fcurves`` is gone in Blender 5.0).

Per bone, the rotation property of its ``rotation_mode`` (quaternion, the six Euler orders, axis-angle) and,
for moving joints, its location. Keys on any frame, subframes included. Keys marked ``GENERATED`` (what
Anyfill writes) are not the animator's and do not condition a fill unless asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from bpy_extras import anim_utils
from mathutils import Euler, Quaternion, Vector

from . import fcurves, retarget

EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")


class RigError(Exception):
    """The rig cannot be read or written as asked; the message says what to do (``plan.PlanError`` is one)."""


def check_editable(action) -> None:
    """Refuse an action that cannot take keys, before anything is written: linked from a library (Blender adds the
    keys but ignores their values, and never saves them), a library override of one (the same: each channel got keys
    at frame 0, value 0, the rig dropped to its zero pose, and a reload brought back the library's action, so an
    override of the action is no way to fill it), or otherwise not editable."""
    if action is None:
        return
    if action.library is not None:
        where = f"linked from library {action.library.name!r}"
    elif action.override_library is not None:
        reference = action.override_library.reference
        library = reference.library if reference is not None else None
        where = (f"a library override of the action in library {library.name!r}" if library is not None else
                 "a library override") + " (Blender keeps no key written to it)"
    elif action.is_editable:
        return
    else:
        where = "not editable"
    raise RigError(f"The action {action.name!r} is {where}: make it local (Object > Relations > Make Local) to fill "
                   "it; nothing was written")


def check_rig_editable(obj) -> None:
    """:func:`check_editable` for the object's active action."""
    ad = obj.animation_data
    check_editable(ad.action if ad is not None else None)


def rotation_path(mode: str) -> tuple[str, int]:
    """The pose-bone property and its width for a rotation mode."""
    if mode == "QUATERNION":
        return "rotation_quaternion", 4
    if mode == "AXIS_ANGLE":
        return "rotation_axis_angle", 4
    return "rotation_euler", 3


def bone_path(bone: str, prop: str) -> str:
    import bpy

    return f'pose.bones["{bpy.utils.escape_identifier(bone)}"].{prop}'


def to_quaternion(values, mode: str) -> Quaternion:
    """A rotation property's values as a unit quaternion."""
    if mode == "QUATERNION":
        q = Quaternion(values)
        return q.normalized() if q.magnitude > 1e-12 else Quaternion()
    if mode == "AXIS_ANGLE":
        angle, axis = values[0], Vector(values[1:4])
        return Quaternion(axis.normalized(), angle) if axis.length > 1e-12 else Quaternion()
    return Euler(values[:3], mode).to_quaternion()


def channelbag(obj, create: bool = False):
    """The channelbag of the object's action slot (None when the object has no action, unless ``create``)."""
    ad = obj.animation_data
    if ad is None or ad.action is None:
        if not create:
            return None
        import bpy

        ad = obj.animation_data_create()
        ad.action = bpy.data.actions.new(f"{obj.name}Action")
    action = ad.action
    slot = ad.action_slot
    if slot is None:
        if not create:
            return None
        slot = action.slots.new(obj.id_type, obj.name)
        ad.action_slot = slot
    if create:
        return ensure_channelbag(action, slot)
    return anim_utils.action_get_channelbag_for_slot(action, slot)


def ensure_channelbag(action, slot):
    """The slot's channelbag, made if missing. Blender 4.5+ has a helper for it; 4.4 (the first with slotted
    actions) does not, so there the first layer's first keyframe strip is made and asked, as the helper does."""
    ensure = getattr(anim_utils, "action_ensure_channelbag_for_slot", None)
    if ensure is not None:
        return ensure(action, slot)
    layer = action.layers[0] if len(action.layers) else action.layers.new("Layer")
    strip = layer.strips[0] if len(layer.strips) else layer.strips.new(type="KEYFRAME")
    return strip.channelbag(slot, ensure=True)


def generated_type_value() -> int:
    return fcurves.enum_value("type", "GENERATED")


def key_frames(fcurve, include_generated: bool = False, generated: int | None = None) -> list[float]:
    """The frames of a curve's keys (optionally without GENERATED ones), bulk-read."""
    n = len(fcurve.keyframe_points)
    if not n:
        return []
    frames = fcurves.bulk_get(fcurve.keyframe_points, "co", n, 2)[0::2]
    if not include_generated:
        types = fcurves.bulk_get(fcurve.keyframe_points, "type", n, 1, np.uint8)  # enums are bytes: a block copy
        frames = frames[types != (generated_type_value() if generated is None else generated)]
    return frames.astype(np.float64).tolist()


@dataclass
class BoneKeys:
    """One bone's keyed frames and evaluators for its rotation (as a quaternion) and location."""

    bone: str
    mode: str
    rot_curves: list  # FCurve or None per component
    loc_curves: list
    static_rot: tuple
    static_loc: tuple
    frames: list[float]  # keyed frames (sorted, unique), of rotation and (moving joints) location

    def rotation_values(self, frame: float) -> list[float]:
        return [c.evaluate(frame) if c is not None else s for c, s in zip(self.rot_curves, self.static_rot,
                                                                          strict=True)]

    def rotation(self, frame: float) -> Quaternion:
        return to_quaternion(self.rotation_values(frame), self.mode)

    def location(self, frame: float) -> Vector:
        return Vector([c.evaluate(frame) if c is not None else s for c, s in zip(self.loc_curves, self.static_loc,
                                                                                 strict=True)])


def read_bone(obj, bag, bone: str, with_location: bool, include_generated: bool = False,
              frame_range: tuple[float, float] | None = None) -> BoneKeys:
    pb = obj.pose.bones[bone]
    mode = pb.rotation_mode
    prop, width = rotation_path(mode)
    rot_path, loc_path = bone_path(bone, prop), bone_path(bone, "location")
    rot_curves = [bag.fcurves.find(rot_path, index=i) if bag else None for i in range(width)]
    loc_curves = [bag.fcurves.find(loc_path, index=i) if bag else None for i in range(3)] if with_location \
        else [None, None, None]
    gen = generated_type_value()
    frames: set[float] = set()
    for c in rot_curves + (loc_curves if with_location else []):
        if c is not None and not c.mute:
            frames.update(key_frames(c, include_generated, gen))
    found = sorted(frames)
    if frame_range is not None:
        found = around_range(found, frame_range)
    return BoneKeys(bone, mode, rot_curves, loc_curves, tuple(getattr(pb, prop)), tuple(pb.location), found)


RANGE_CONTEXT = 2  # keys a fill reads on each side of its range


def around_range(frames: list[float], frame_range: tuple[float, float], context: int = RANGE_CONTEXT) -> list[float]:
    """The key frames (sorted) a fill of ``frame_range`` is conditioned on: those in the range and the ``context``
    nearest on each side of it, so a range that cuts through a gap is filled towards the motion the keys beyond
    its ends give (without them the fill held the one key inside and the curves popped at the range's edges)."""
    lo, hi = frame_range
    before = [f for f in frames if f < lo - 1e-4]
    after = [f for f in frames if f > hi + 1e-4]
    return before[len(before) - context:] + [f for f in frames if lo - 1e-4 <= f <= hi + 1e-4] + after[:context]


# --- the armature and its evaluated poses ------------------------------------------------------------------


def armature_rig(armature_data, pose=None) -> retarget.Rig:
    """The armature's bones as :class:`~.retarget.Rig` arrays (bulk reads), parents before children; with the
    object's ``pose``, the constraints its bones' poses follow (:func:`bone_constraints`)."""
    bones = armature_data.bones
    n = len(bones)
    names = [b.name for b in bones]
    index = {name: i for i, name in enumerate(names)}
    parents = [index[b.parent.name] if b.parent else -1 for b in bones]
    order: list[int] = []
    placed = [False] * n
    while len(order) < n:  # Blender lists parents first; make sure of it
        for i in range(n):
            if not placed[i] and (parents[i] < 0 or placed[parents[i]]):
                placed[i] = True
                order.append(i)
    rest = np.empty(n * 16, dtype=np.float32)
    bones.foreach_get("matrix_local", rest)
    tails = np.empty(n * 3, dtype=np.float32)
    bones.foreach_get("tail_local", tails)
    flags = {}
    for attr in ("use_connect", "use_inherit_rotation", "use_local_location"):
        flags[attr] = np.zeros(n, dtype=bool)
        bones.foreach_get(attr, flags[attr])
    scale_full = np.array([b.inherit_scale == "FULL" for b in bones], dtype=bool)
    rest = np.swapaxes(rest.reshape(n, 4, 4), 1, 2).astype(np.float64)  # bpy flattens column by column
    new_index = {old: k for k, old in enumerate(order)}
    sorted_names = [names[i] for i in order]
    return retarget.Rig(sorted_names, np.array([new_index.get(parents[i], -1) for i in order]),
                        rest[order], tails.reshape(n, 3).astype(np.float64)[order], flags["use_connect"][order],
                        ~flags["use_inherit_rotation"][order], flags["use_local_location"][order], scale_full[order],
                        bone_constraints(pose, sorted_names) if pose is not None else {})


# constraints whose effect the rig's arrays follow: the spaces they may work in, and settings that must be as given
_SPACES = {"WORLD": False, "POSE": False, "LOCAL": True}
_FOLLOWED = {
    "COPY_TRANSFORMS": {"mix_mode": "REPLACE", "head_tail": 0.0},
    "COPY_ROTATION": {"mix_mode": "REPLACE", "use_x": True, "use_y": True, "use_z": True, "invert_x": False,
                      "invert_y": False, "invert_z": False, "use_offset": False},
    "COPY_LOCATION": {"use_x": True, "use_y": True, "use_z": True, "invert_x": False, "invert_y": False,
                      "invert_z": False, "use_offset": False, "head_tail": 0.0},
    "COPY_SCALE": {"use_x": True, "use_y": True, "use_z": True, "use_offset": False, "use_add": False,
                   "power": 1.0},
    "ARMATURE": {"use_deform_preserve_volume": False, "use_bone_envelopes": False},
}


def _followed(c, obj, index: dict[str, int]):
    """A constraint as :class:`~.retarget.Constraint`, or None when the rig's arrays cannot follow it (another
    kind, an object or another armature as target, other spaces or settings)."""
    settings = _FOLLOWED.get(c.type)
    if settings is None or any(getattr(c, k, v) != v for k, v in settings.items()):
        return None
    if c.type == "ARMATURE":
        targets = tuple((index.get(t.subtarget, -1), float(t.weight)) for t in c.targets)
        if any(t.target != obj or b < 0 for t, (b, _) in zip(c.targets, targets, strict=True)):
            return None
        return retarget.Constraint("ARMATURE", -1, float(c.influence), targets=targets)
    if c.target != obj or c.subtarget not in index or c.owner_space not in _SPACES or c.target_space not in _SPACES:
        return None
    return retarget.Constraint(c.type, index[c.subtarget], float(c.influence), _SPACES[c.owner_space],
                               _SPACES[c.target_space], bool(getattr(c, "use_make_uniform", False)))


def bone_constraints(pose, names: list[str]) -> dict[int, list[retarget.Constraint]]:
    """Bone index (in ``names``) -> the constraints (enabled, with some influence, as they are now: a driven influence
    at the current frame) its pose follows in the rig's arrays: copies of another bone of the armature (transforms,
    rotation, location, scale) and Armature constraints (:class:`~.retarget.Constraint`). A generated Rigify rig's
    controls hang under bones that such constraints move (the arms under the shoulder control's copy, the head under
    the torso's rotation); read through the hierarchy alone, an arm's world rotation was off by the shoulder's turn.
    Other constraints (IK, Stretch To, Damped Track, limits...) are not followed, nor any constraint whose targets
    depend on one: a bone with only those is read as its parents and keys place it, as before. A Rigify limb in IK
    is read through :mod:`.limbs` (its ORG bones then copy its FK controls)."""
    index = {n: i for i, n in enumerate(names)}
    found: dict[int, list] = {}
    blocked: set[int] = set()  # bones with a live constraint that is not followed
    for pb in pose.bones:
        b = index.get(pb.name)
        if b is None:
            continue
        for c in pb.constraints:
            if not getattr(c, "enabled", True) or c.influence <= 0.0:
                continue
            followed = _followed(c, pb.id_data, index)
            if followed is None:
                blocked.add(b)
            else:
                found.setdefault(b, []).append(followed)
    parents = {index[pb.name]: index[pb.parent.name] for pb in pose.bones
               if pb.parent is not None and pb.name in index}
    unsure: dict[int, bool] = {}

    def unsure_of(b: int, seen: frozenset = frozenset()) -> bool:
        """Whether bone b's pose depends on a constraint that is not followed."""
        if b in unsure:
            return unsure[b]
        if b in seen:
            return True
        seen = seen | {b}
        out = b in blocked or (b in parents and unsure_of(parents[b], seen)) or any(
            unsure_of(t, seen) for c in found.get(b, ()) for t in c.sources)
        unsure[b] = out
        return out

    out = {}
    for b, cons in found.items():
        kept = [c for c in cons if not any(unsure_of(t) for t in c.sources)]
        if kept:
            out[b] = kept
    return out


@dataclass
class Channels:
    """A bone's animated properties evaluated at a track's frames."""

    mode: str
    rotation: np.ndarray  # (F, width) values of the rotation property of ``mode``
    location: np.ndarray  # (F, 3)
    scale: np.ndarray  # (F, 3)


def rest_value(data_path: str, index: int) -> float:
    """A channel's value at rest (the identity rotation in any mode, a scale of 1)."""
    if data_path.endswith(".scale") or (data_path.endswith(".rotation_quaternion") and index == 0):
        return 1.0
    return 1.0 if data_path.endswith(".rotation_axis_angle") and index == 2 else 0.0


def curve_map(bag) -> dict[tuple[str, int], object]:
    """(data path, index) -> F-curve, in one pass over the channelbag."""
    return {} if bag is None else {(fc.data_path, fc.array_index): fc for fc in bag.fcurves}


def evaluate_channels(obj, bag, names: list[str], frames, own_keys_of=frozenset()) -> dict[str, Channels]:
    """Each listed bone's location, rotation (in its rotation mode) and scale at the frames, from its F-curves
    evaluated in bulk (:mod:`.fcurves`), or its current values where a channel has no curve, is muted or has no
    keys (Blender leaves the property as it is then). The bones of ``own_keys_of`` are read from the animator's
    keys alone, as if Anyfill's (Generated) keys were not there: a bone keyed on some of its channels on a frame
    is read there as the animator's curves run, never as an earlier fill left them; a channel whose curve holds only
    Anyfill's keys (a bone the animator never keyed, a Rigify rig's spine) is read at rest, as a channel with no
    key (read at what the last fill showed at the playhead, each refill differed)."""
    frames = np.asarray(frames, dtype=np.float64)
    found = curve_map(bag)
    gen = generated_type_value()
    out: dict[str, Channels] = {}
    curves, points, slots = [], [], []  # curves to evaluate, their keys, and (bone, property, component) each fills
    for name in names:
        pb = obj.pose.bones[name]
        mode = pb.rotation_mode
        prop, width = rotation_path(mode)
        arrays = {}
        for key, p, static in (("location", "location", tuple(pb.location)),
                               ("rotation", prop, tuple(getattr(pb, prop))), ("scale", "scale", tuple(pb.scale))):
            arrays[key] = np.broadcast_to(np.asarray(static, dtype=np.float64), (len(frames), len(static))).copy()
            path = bone_path(name, p)
            for i in range(len(static)):
                fc = found.get((path, i))
                if fc is None or fc.mute or not len(fc.keyframe_points):
                    continue
                p = fcurves.read(fc)
                if name in own_keys_of:
                    n = len(fc.keyframe_points)
                    p = fcurves.without(p, fcurves.bulk_get(fc.keyframe_points, "type", n, 1, np.uint8) == gen)
                    if not len(p):  # only Anyfill's keys: as a channel with none, at rest
                        arrays[key][:, i] = rest_value(path, i)
                        continue
                curves.append(fc)
                points.append(p)
                slots.append((name, key, i))
        out[name] = Channels(mode, arrays["rotation"], arrays["location"], arrays["scale"])
    values = fcurves.evaluate(curves, frames, points) if curves else np.zeros((0, len(frames)))
    for (name, key, i), v in zip(slots, values, strict=True):
        getattr(out[name], key)[:, i] = v
    return out


def evaluate_basis(rig: retarget.Rig, bones: list[int], frames, channels: dict[str, Channels]) -> np.ndarray:
    """Every listed bone's ``matrix_basis`` (F, N, 4, 4) at the frames, from its ``channels`` evaluated there
    (:func:`evaluate_channels`: location, rotation in its rotation mode, scale); bones not listed are left at
    rest (identity). The bones of one rotation mode are converted together."""
    out = np.broadcast_to(np.eye(4), (len(frames), len(rig.names), 4, 4)).copy()
    location = out[..., :3, 3]  # a view: (F, N, 3)
    by_mode: dict[str, list[int]] = {}
    for b in bones:
        by_mode.setdefault(channels[rig.names[b]].mode, []).append(b)
    for mode, group in by_mode.items():
        ch = [channels[rig.names[b]] for b in group]
        rotation = np.stack([c.rotation for c in ch], axis=1)  # (F, B, width)
        scale = np.stack([c.scale for c in ch], axis=1)
        out[:, group, :3, :3] = retarget.mode_to_matrix(rotation, mode) * scale[..., None, :]
        location[:, group] = np.stack([c.location for c in ch], axis=1)
    return out

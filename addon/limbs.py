"""Rigify limbs in IK: read through their evaluated pose, written through their IK controls.

Auto Map maps a generated Rigify rig to its FK controls (``thigh_fk.L``, ``hand_fk.L``, ...), but a generated rig's
limbs start in IK (``IK_FK`` on the limb's properties bone below 1; 1 = FK) and most animators key legs, often
arms too, with the IK controls (``foot_ik.L``, the IK chain's first control ``thigh_ik.L`` whose twist turns the
knee, or the pole ``thigh_ik_target.L``, ``foot_heel_ik.L``, ``toe_ik.L``...). The FK controls of such a limb
stand wherever they were left: read from their curves, a walk keyed in IK was read as legs frozen at rest.

A limb is found from the rig itself, as Rigify builds it (its bone names are not assumed): each ORG bone of the
limb copies its FK control through one Copy Transforms constraint and its IK chain's bone through another whose
influence a driver takes from the switch. In IK:

* reading: the limb's keyed frames are those of its FK and IK controls, and its pose there is Blender's own
  (the depsgraph at the frame); each FK control's rotation is the one that puts it where its ORG bone is (the
  FK equivalent, as Rigify's FK->IK snap computes it), so the model reads the limb as the same pose keyed in FK;
* writing: the FK controls are written as on any rig, then on each written frame the IK controls are put where
  that FK pose is, as Rigify's own IK->FK snap does (``rigify_limb_ik2fk``): the IK target control (``foot_ik``)
  onto the FK tip through its current offset to the IK chain's target (the heel and spin controls keep their
  curves), a tail (``toe_ik``) onto its FK control, and the knee or elbow turned onto the FK one by the pole's
  position or, without a pole, the IK chain's first control's twist (found by turning it until the IK solution's
  middle joint lies where the FK one does). Both stay keyed, so the limb shows the fill in IK, in FK, and at any
  blend of the two.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

SWITCH = "IK_FK"  # on the limb's properties bone: 1 = FK, 0 = IK
POLE = "pole_vector"  # on the same bone: the IK chain uses its pole target
_MECHANISM = re.compile(r"^(MCH|ORG|DEF|VIS)[-_]")
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_DRIVEN = re.compile(rf"^pose\.bones\[{_QUOTED}\]\.constraints\[{_QUOTED}\]\.influence$")
_SWITCH_PATH = re.compile(rf'^pose\.bones\[{_QUOTED}\]\["{SWITCH}"\]$')
_BONE = re.compile(rf"^pose\.bones\[{_QUOTED}\]\.(location|rotation_quaternion|rotation_euler|rotation_axis_angle|"
                   r"scale)$")
TWIST_TOLERANCE = math.radians(0.05)  # the knee or elbow within this turn of the FK one (about the limb's line)
SCALE_TOLERANCE = 1e-3  # the IK chain's first bone's scale within 0.1 % of the FK one's (0.5 mm on a thigh)
TWIST_STEPS = 8


def _unquote(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


@dataclass
class Limb:
    """One Rigify limb: its ORG chain (parents first), the FK control and the IK bone each ORG bone copies, and the
    IK controls an animator keys."""

    switch: str  # the properties bone holding IK_FK and pole_vector
    org: list[str]
    fk: list[str]
    ik: list[str]  # the bone each ORG bone copies in IK: the chain's first control, its MCH bones, tails
    end: str  # the IK target control (hand_ik, foot_ik): the chain's target hangs from it
    pole: str  # the pole target control ("" when the IK has none)
    extras: list[str] = field(default_factory=list)  # controls between the end control and the target (heel, spin)

    @property
    def base(self) -> str:
        """The IK chain's first control: its twist turns the knee or elbow when the pole is off."""
        return self.ik[0]

    @property
    def target(self) -> str:
        """The bone at the IK chain's end that the limb's tip copies (hangs from the end control)."""
        return self.ik[2]

    @property
    def tails(self) -> list[tuple[int, str]]:
        """(chain index, control) of the ORG bones past the IK chain that copy a control of their own (toe_ik)."""
        return [(i, b) for i, b in enumerate(self.ik) if i >= 3 and not _MECHANISM.match(b)]

    @property
    def controls(self) -> list[str]:
        """Every IK control whose keys make a frame of the limb keyed."""
        return list(dict.fromkeys([self.base, self.end, *([self.pole] if self.pole else []), *self.extras,
                                   *(b for _, b in self.tails)]))

    def switch_value(self, obj) -> float:
        value = obj.pose.bones[self.switch].get(SWITCH)
        return float(value) if isinstance(value, int | float) else 1.0

    def in_ik(self, obj) -> bool:
        """Whether the limb follows its IK chain at all: the switch below 1 now or at any of its keys."""
        if self.switch_value(obj) < 1.0 - 1e-6:
            return True
        ad = obj.animation_data
        action = ad.action if ad is not None else None
        if action is None:
            return False
        from . import keys

        bag = keys.channelbag(obj)
        fc = bag.fcurves.find(f'pose.bones["{_escape(self.switch)}"]["{SWITCH}"]') if bag is not None else None
        return fc is not None and any(k.co[1] < 1.0 - 1e-6 for k in fc.keyframe_points)

    def uses_pole(self, obj) -> bool:
        return bool(self.pole) and bool(obj.pose.bones[self.switch].get(POLE, False))


def _escape(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def find(obj) -> list[Limb]:
    """Every Rigify limb of the rig whose build Fill can drive: a two-bone IK chain (a driver from the switch on
    the IK Copy Transforms of each ORG bone, an IK constraint of chain length 2 on the chain's second bone, a
    control above its target). Limbs of another build are not listed (Fill names them as in IK)."""
    ad = obj.animation_data
    if ad is None:
        return []
    driven: dict[str, dict[str, str]] = {}  # switch bone -> ORG bone -> its IK constraint
    for d in ad.drivers:
        m = _DRIVEN.match(d.data_path)
        if m is None:
            continue
        for v in d.driver.variables:
            for t in v.targets:
                s = _SWITCH_PATH.match(t.data_path or "")
                if s is not None and t.id in (obj, None):
                    driven.setdefault(_unquote(s.group(1)), {})[_unquote(m.group(1))] = _unquote(m.group(2))
    out = []
    for switch, cons in driven.items():
        limb = _limb(obj, switch, cons)
        if limb is not None:
            out.append(limb)
    return out


def _limb(obj, switch: str, cons: dict[str, str]) -> Limb | None:
    pose = obj.pose.bones
    if switch not in pose or any(b not in pose for b in cons):
        return None
    org = sorted(cons, key=lambda b: len(pose[b].parent_recursive))
    if len(org) < 3 or any(pose[b].parent is None or pose[b].parent.name != a for a, b in zip(org, org[1:],
                                                                                             strict=False)):
        return None
    fk, ik = [], []
    for b in org:
        ik_con = pose[b].constraints.get(cons[b])
        fk_con = [c for c in pose[b].constraints if c.type == "COPY_TRANSFORMS" and c != ik_con]
        if ik_con is None or ik_con.type != "COPY_TRANSFORMS" or len(fk_con) != 1:
            return None
        if ik_con.subtarget not in pose or fk_con[0].subtarget not in pose:
            return None
        fk.append(fk_con[0].subtarget)
        ik.append(ik_con.subtarget)
    solvers = [c for c in pose[ik[1]].constraints if c.type == "IK"]
    if (not solvers or any(c.subtarget != ik[2] or c.chain_count != 2 for c in solvers) or pose[ik[1]].parent is None
            or pose[ik[1]].parent.name != ik[0] or _MECHANISM.match(ik[0]) or any(_MECHANISM.match(b) for b in fk)):
        return None
    poles = {c.pole_subtarget for c in solvers if c.pole_subtarget}
    pole = next(iter(poles)) if len(poles) == 1 else ""
    # the end control: the highest control above the target, before the mechanism it hangs from (the IK parent)
    above, extras, bone = [], [], pose[ik[2]].parent
    while bone is not None:
        if _MECHANISM.match(bone.name):
            if above:
                break
            extras += [c.subtarget for c in bone.constraints if getattr(c, "subtarget", "")
                       and not _MECHANISM.match(c.subtarget) and c.subtarget in pose]
        else:
            above.append(bone.name)
        bone = bone.parent
    if not above:
        return None
    extras = [b for b in dict.fromkeys(above[:-1] + extras) if b != above[-1]]
    return Limb(switch, org, fk, ik, above[-1], pole, extras)


def in_ik(obj, mapped: set[str]) -> tuple[list[Limb], list[str]]:
    """The rig's limbs in IK that Fill reads and writes through their IK controls (their upper, lower and tip FK
    controls all mapped), and the switch bones of the other limbs in IK (Fill writes only the FK controls of
    those: the report names them)."""
    found = find(obj)
    driven = [limb for limb in found if limb.in_ik(obj) and set(limb.fk[:3]) <= mapped]
    handled = {limb.switch for limb in driven}
    others = []
    for pb in obj.pose.bones:
        value = pb.get(SWITCH)
        if isinstance(value, int | float) and value < 1.0 - 1e-6 and pb.name not in handled:
            others.append(pb.name)
    return driven, others


def control_keys(obj, bag, limb: Limb, include_generated: bool) -> list[float]:
    """The frames (sorted) of the keys on the limb's IK controls' transforms: keyed frames of the limb."""
    from . import keys

    if bag is None:
        return []
    controls = set(limb.controls)
    gen = keys.generated_type_value()
    frames: set[float] = set()
    for fc in bag.fcurves:
        m = _BONE.match(fc.data_path)
        if m is None or fc.mute or _unquote(m.group(1)) not in controls:
            continue
        frames.update(keys.key_frames(fc, include_generated, gen))
    return sorted(frames)


# --- reading: the FK equivalent of the evaluated pose ------------------------------------------------------------


def _frame_set(scene, frame: float) -> None:
    whole = math.floor(frame)
    scene.frame_set(int(whole), subframe=float(frame - whole))


def _pose_of(obj, pb, world: dict, cache: dict):
    """A bone's armature-space matrix with the limbs' FK controls put where ``world`` says: the bones below one of
    them (``MCH-hand_fk``) follow through their own ``matrix_basis``, the others as evaluated."""
    if pb.name in world:
        return world[pb.name]
    if pb.name in cache:
        return cache[pb.name]
    parent = pb.parent
    if parent is None or not any(a.name in world for a in pb.parent_recursive):
        out = pb.matrix.copy()
    else:
        out = pb.bone.convert_local_to_pose(pb.matrix_basis, pb.bone.matrix_local,
                                            parent_matrix=_pose_of(obj, parent, world, cache),
                                            parent_matrix_local=parent.bone.matrix_local)
    cache[pb.name] = out
    return out


def without_generated(bag):
    """Take Anyfill's (Generated) keys out of every curve for a while, so that Blender shows the rig as the
    animator's keys alone make it (a refill reads the same pose as the first fill; an IK control Anyfill keyed
    held its last fill's value on the animator's key frames); returns what puts every key back exactly. A curve
    left with no key holds its channel's rest value meanwhile."""
    from . import keys
    from .curves import KEY_STATE, SavedCurves

    saved = SavedCurves(bag)
    gen = keys.generated_type_value()
    for fc in bag.fcurves:
        n, state = saved.curves[(fc.data_path, fc.array_index)]
        keep = state["type"] != gen
        if not n or keep.all():
            continue
        kp = fc.keyframe_points
        kp.clear()
        m = int(keep.sum())
        if m:
            kp.add(m)
            for attr, width, _ in KEY_STATE:
                kp.foreach_set(attr, state[attr].reshape(n, width)[keep].ravel())
        else:
            kp.add(1)
            kp[0].co = (0.0, keys.rest_value(fc.data_path, fc.array_index))
            kp[0].interpolation = "CONSTANT"
    return saved


def fk_rotations(context, obj, limbs: list[Limb], rows_of: dict[str, np.ndarray], frames, channels,
                 include_generated: bool = False) -> int:
    """Put into ``channels`` (:class:`.keys.Channels` of the FK controls) at the rows ``rows_of[bone]`` the FK
    rotation equivalent to the limb's evaluated pose at each of those frames (the scene's frame is set to each and
    put back), as the animator's keys alone pose it (unless ``include_generated``). Returns the number of frames
    evaluated."""
    from mathutils import Euler, Quaternion

    from . import keys
    from .keys import to_quaternion

    scene = context.scene
    need = sorted({int(r) for rows in rows_of.values() for r in rows})
    if not need:
        return 0
    saved = scene.frame_current, scene.frame_subframe
    pose = obj.pose.bones
    bag = keys.channelbag(obj)
    kept = without_generated(bag) if bag is not None and not include_generated else None
    obj.update_tag(refresh={"TIME"})
    try:
        for r in need:
            _frame_set(scene, float(frames[r]))
            world = {fk: pose[org].matrix.copy() for limb in limbs for org, fk in zip(limb.org, limb.fk,
                                                                                        strict=True)}
            cache: dict = {}
            for bone, rows in rows_of.items():
                if not np.isin(r, rows):
                    continue
                pb = pose[bone]
                parent = pb.parent
                if parent is None:
                    local = pb.bone.convert_local_to_pose(world[bone], pb.bone.matrix_local, invert=True)
                else:
                    local = pb.bone.convert_local_to_pose(world[bone], pb.bone.matrix_local,
                                                          parent_matrix=_pose_of(obj, parent, world, cache),
                                                          parent_matrix_local=parent.bone.matrix_local, invert=True)
                q = local.to_quaternion().normalized()
                ch = channels[bone]
                now = ch.rotation[r]
                if ch.mode == "QUATERNION":
                    value = list(q) if q.dot(Quaternion(now)) >= 0 else list(-q)
                elif ch.mode == "AXIS_ANGLE":
                    if q.dot(to_quaternion(now, "AXIS_ANGLE")) < 0:
                        q.negate()
                    axis, angle = q.to_axis_angle()
                    value = [angle, *axis]
                else:
                    value = list(q.to_euler(ch.mode, Euler(now[:3], ch.mode)))
                ch.rotation[r] = value
    finally:
        if kept is not None:
            kept.restore()
        obj.update_tag(refresh={"TIME"})
        scene.frame_set(saved[0], subframe=saved[1])
    return len(need)


# --- writing: the IK controls put where the FK pose is ------------------------------------------------------------


@dataclass
class Solved:
    """The IK controls' values at the written frames: per (bone, property) the frames and values."""

    values: dict[tuple[str, str], list] = field(default_factory=dict)
    frames: dict[tuple[str, str], list] = field(default_factory=dict)
    largest_error: float = 0.0  # the largest distance of an IK chain's joint from its FK place (armature units)

    def add(self, bone: str, prop: str, frame: float, value) -> None:
        self.values.setdefault((bone, prop), []).append(list(value))
        self.frames.setdefault((bone, prop), []).append(frame)


def _rotation_prop(pb) -> str:
    from .keys import rotation_path

    return rotation_path(pb.rotation_mode)[0]


def _set_matrix(pb, matrix, rotation: bool = True, location: bool = True) -> None:
    """Put a pose bone where ``matrix`` (armature space) says under its parent as evaluated, on the channels asked
    for and not locked on the bone (Rigify's own snapping keeps locked channels); its scale kept."""
    old = {p: tuple(getattr(pb, p)) for p in ("location", _rotation_prop(pb), "scale")}
    pb.matrix = matrix
    keep = []
    if not location:
        keep.append(("location", (True, True, True)))
    else:
        keep.append(("location", tuple(pb.lock_location)))
    prop = _rotation_prop(pb)
    if not rotation:
        keep.append((prop, (True,) * len(old[prop])))
    elif prop == "rotation_euler":
        keep.append((prop, tuple(pb.lock_rotation)))
    elif any(pb.lock_rotation) or (prop == "rotation_quaternion" and pb.lock_rotations_4d and pb.lock_rotation_w):
        keep.append((prop, (True,) * len(old[prop])))  # a locked quaternion channel: the rotation stays whole
    keep.append(("scale", (True, True, True)))
    for p, locks in keep:
        now = list(getattr(pb, p))
        setattr(pb, p, [o if lock else v for o, v, lock in zip(old[p], now, locks, strict=False)])


def _twist(pb, angle: float) -> None:
    """Turn a pose bone about its own Y axis (its length) by ``angle``, in its rotation mode."""
    from mathutils import Euler, Quaternion

    from .keys import to_quaternion

    turn = Quaternion((0.0, 1.0, 0.0), angle)
    mode = pb.rotation_mode
    if mode == "QUATERNION":
        pb.rotation_quaternion = pb.rotation_quaternion @ turn
    elif mode == "AXIS_ANGLE":
        axis, a = (to_quaternion(pb.rotation_axis_angle, mode) @ turn).to_axis_angle()
        pb.rotation_axis_angle = (a, *axis)
    else:
        now = Euler(pb.rotation_euler, mode)
        pb.rotation_euler = (now.to_quaternion() @ turn).to_euler(mode, now)


def _swivel_error(pose, limb: Limb, fk) -> tuple[float, float]:
    """The signed angle (about the limb's line, hip to ankle) from the IK chain's middle joint to the FK one, and
    the IK chain's tip's distance from the FK tip."""
    hip = pose[limb.ik[0]].head
    mid, tip = pose[limb.ik[1]].head, pose[limb.ik[2]].head
    want_mid, want_tip = fk[1].translation, fk[2].translation
    axis = want_tip - fk[0].translation
    if axis.length < 1e-9:
        return 0.0, (tip - want_tip).length
    axis.normalize()
    a = (mid - hip) - axis * (mid - hip).dot(axis)
    b = (want_mid - fk[0].translation) - axis * (want_mid - fk[0].translation).dot(axis)
    if a.length < 1e-6 or b.length < 1e-3 * (want_mid - fk[0].translation).length:  # a straight limb: no bend
        return 0.0, (tip - want_tip).length
    return math.atan2(axis.dot(a.cross(b)), a.dot(b)), (tip - want_tip).length


def solve(context, obj, todo: list[tuple[Limb, list[float]]]) -> Solved:
    """The IK controls' values that put each limb where its FK controls are (as Blender now evaluates them, the
    fill's FK keys written) on each of its frames; the rig's pose and the scene's frame are put back."""
    from mathutils import Matrix

    scene, view_layer = context.scene, context.view_layer
    pose = obj.pose.bones
    out = Solved()
    if not todo:
        return out
    touched = list(dict.fromkeys(b for limb, _ in todo for b in (limb.end, limb.base, limb.pole, *(
        c for _, c in limb.tails)) if b))
    saved_pose = {b: {p: tuple(getattr(pose[b], p)) for p in ("location", "rotation_quaternion", "rotation_euler",
                                                                "rotation_axis_angle", "scale")} for b in touched}
    saved_frame = scene.frame_current, scene.frame_subframe
    by_frame: dict[float, list[Limb]] = {}
    for limb, frames in todo:
        for f in frames:
            by_frame.setdefault(float(f), []).append(limb)
    try:
        for f in sorted(by_frame):
            limbs = by_frame[f]
            _frame_set(scene, f)
            fk = {limb.switch: [pose[b].matrix.copy() for b in limb.fk] for limb in limbs}
            for _ in range(2):  # the target's offset from the end control read again once it moved (IK stretch)
                for limb in limbs:
                    end, target = pose[limb.end], pose[limb.target]
                    _set_matrix(end, fk[limb.switch][2] @ target.matrix.inverted() @ end.matrix)
                view_layer.update()
            poles = {}
            for limb in limbs:
                want = fk[limb.switch]
                for i, tail in limb.tails:
                    _set_matrix(pose[tail], want[i], location=False)
                if limb.uses_pole(obj):
                    hip, mid, tip = want[0].translation, want[1].translation, want[2].translation
                    axis = (tip - hip).normalized()
                    side = (mid - hip) - axis * (mid - hip).dot(axis)
                    if side.length > 1e-6:
                        length = (mid - hip).length + (tip - mid).length
                        place = Matrix.Translation(hip + (tip - hip) * 0.5 + side.normalized() * length)
                        _set_matrix(pose[limb.pole], place, rotation=False)
                    poles[limb.switch] = True
            view_layer.update()
            slope = {limb.switch: 1.0 for limb in limbs}
            last: dict[str, tuple[float, float]] = {}
            for _ in range(TWIST_STEPS):
                turning = []
                for limb in limbs:
                    want = fk[limb.switch]
                    e = _swivel_error(pose, limb, want)[0]
                    moved = False
                    if abs(e) > TWIST_TOLERANCE:
                        if limb.switch in last:  # the secant's slope from the last step, kept sane
                            e0, step0 = last[limb.switch]
                            if abs(step0) > 1e-9 and 0.25 < (e0 - e) / step0 < 4.0:
                                slope[limb.switch] = (e0 - e) / step0
                        step = e / slope[limb.switch]
                        if limb.switch in poles:
                            pb = pose[limb.pole]
                            axis = (want[2].translation - want[0].translation).normalized()
                            centre = (want[0].translation + want[2].translation) * 0.5
                            turn = Matrix.Translation(centre) @ Matrix.Rotation(step, 4, axis) @ \
                                Matrix.Translation(-centre)
                            _set_matrix(pb, turn @ pb.matrix, rotation=False)
                        else:
                            _twist(pose[limb.base], step)
                        last[limb.switch] = (e, step)
                        moved = True
                    # IK stretch scales the chain as well as bending it: the first control's scale undoes that, as
                    # Rigify's own snap does (correct_scale)
                    base = pose[limb.base]
                    now, goal = pose[limb.ik[0]].matrix.to_scale(), want[0].to_scale()
                    if not all(base.lock_scale) and max(abs(g / n - 1.0) for g, n in zip(goal, now, strict=True)) \
                            > SCALE_TOLERANCE:
                        base.scale = [v * g / n for v, g, n in zip(base.scale, goal, now, strict=True)]
                        moved = True
                    if moved:
                        turning.append(limb)
                if not turning:
                    break
                view_layer.update()
            for limb in limbs:
                want = fk[limb.switch]
                out.largest_error = max(out.largest_error, *((pose[b].head - m.translation).length
                                                             for b, m in zip(limb.ik[:3], want, strict=False)))
                end = pose[limb.end]
                out.add(limb.end, "location", f, end.location)
                out.add(limb.end, _rotation_prop(end), f, getattr(end, _rotation_prop(end)))
                for _, tail in limb.tails:
                    out.add(tail, _rotation_prop(pose[tail]), f, getattr(pose[tail], _rotation_prop(pose[tail])))
                base = pose[limb.base]
                if limb.switch in poles:
                    out.add(limb.pole, "location", f, pose[limb.pole].location)
                else:
                    out.add(limb.base, _rotation_prop(base), f, getattr(base, _rotation_prop(base)))
                if not all(base.lock_scale):
                    out.add(limb.base, "scale", f, base.scale)
    finally:
        for b, props in saved_pose.items():
            for p, v in props.items():
                setattr(pose[b], p, v)
        scene.frame_set(saved_frame[0], subframe=saved_frame[1])
    return out


def tracks(obj, bag, solved: Solved, include_generated: bool):
    """The solved values as :class:`.editable.Track` per control property, continuous with the control's own keys
    (quaternion sign, Euler branch) and holding the channels locked on the bone (a twist control's X and Z)."""
    from . import curves, editable, fcurves, keys
    from . import retarget as retarget_mod

    out = []
    found = keys.curve_map(bag)
    gen = keys.generated_type_value()
    for (bone, prop), frames in solved.frames.items():
        pb = obj.pose.bones[bone]
        values = np.asarray(solved.values[(bone, prop)], dtype=np.float64)
        frames = np.asarray(frames, dtype=np.float64)
        width = values.shape[1]
        path = keys.bone_path(bone, prop)
        mode = "LOCATION" if prop in ("location", "scale") else pb.rotation_mode
        own: set[float] = set()
        for c in range(width):
            fc = found.get((path, c))
            if fc is not None and not fc.mute:
                own.update(keys.key_frames(fc, include_generated, gen))
        keyed = np.array(sorted(own), dtype=np.float64)
        static = tuple(getattr(pb, prop))
        if mode != "LOCATION" and len(keyed):
            rows = np.union1d(frames, keyed)
            known_rows = np.searchsorted(rows, keyed)
            known = np.broadcast_to(np.asarray(static, dtype=np.float64), (len(keyed), width)).copy()
            live = [c for c in range(width) if found.get((path, c)) is not None and not found[(path, c)].mute
                    and len(found[(path, c)].keyframe_points)]
            if live:
                points = [fcurves.read(found[(path, c)]) for c in live]
                known[:, live] = fcurves.evaluate([found[(path, c)] for c in live], keyed, points).T
            values = curves.continuous_values(np.searchsorted(rows, frames), retarget_mod.mode_to_quat(values, mode),
                                              known_rows, known, mode, np.array([static]))
        elif mode != "LOCATION":
            values = curves.continuous_values(np.arange(len(frames)), retarget_mod.mode_to_quat(values, mode),
                                              np.zeros(0, dtype=np.int64), np.zeros((0, width)), mode,
                                              np.array([static]))
        locks = {"location": tuple(pb.lock_location), "scale": tuple(pb.lock_scale),
                 "rotation_euler": tuple(pb.lock_rotation)}.get(prop, ())
        held = tuple(c for c, lock in enumerate(locks) if lock)
        out.append(editable.Track(bone, path, mode, frames, values, keyed, static, held=held))
    return out

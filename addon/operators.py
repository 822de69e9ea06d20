"""Operators (``anim.anyfill_*``, all ``{'REGISTER', 'UNDO'}``)."""

from __future__ import annotations

import json

import bpy

from . import client as client_mod
from . import curves, keys, provenance, rig
from . import plan as plan_mod
from .jobs import AsyncRequest, SavedRig, backend_url, make_client, preferences
from .plan import length_text

UNCERTAINTY_PROP = "anyfill_uncertainty"
# rig name -> (plan, variations' joints, the frame range they were drawn for)
_variations: dict[str, tuple[plan_mod.Plan, list[dict], tuple[int, int]]] = {}


def _armature(context):
    obj = context.active_object
    if obj is not None and obj.type == "ARMATURE":
        return obj
    return None


def _has_armature(context) -> bool:
    return _armature(context) is not None


def model_for(obj, models: list[dict], part: str) -> dict:
    """The model that fills a part of the rig: the one named in the panel for that part's skeleton (the rig's
    model, or its hand model for a full rig's hands), else the first of that skeleton the backend serves."""
    if not models:
        raise client_mod.BackendError("The backend serves no model")
    if not part:  # a mapping made before rigs had parts: its model, else its skeleton's
        part = obj.anyfill.skeleton if obj.anyfill.skeleton in rig.PART_SKELETON else ""
        if not part:
            return next((m for m in models if m["name"] == obj.anyfill.model), models[0])
    skeleton = rig.part_skeleton(part)
    named = obj.anyfill.hand_model if part.startswith("hand.") else obj.anyfill.model
    if named:
        for m in models:
            if m["name"] == named:
                if m["skeleton"] != skeleton:
                    raise client_mod.BackendError(
                        f"The model {named!r} is a {m['skeleton']} model; the rig's {part} needs a {skeleton} model: "
                        "pick one in the Anyfill panel, or clear the name and press Auto Map")
                return m
        raise client_mod.BackendError(f"The backend has no model {named!r}; it serves "
                                      f"{', '.join(m['name'] for m in models)}: pick one in the Anyfill panel")
    for m in models:
        if m["skeleton"] == skeleton:
            return m
    raise client_mod.BackendError(f"The backend serves no {skeleton} model for the rig's {part}; it serves "
                                  f"{', '.join(m['name'] for m in models)}")


def set_mapping(obj, skeletons: dict[str, list[str]], keep_existing: bool = False) -> list[tuple[str, int, int]]:
    """Fill ``obj.anyfill.joints`` with the automatic mapping of every part the rig has (body, each hand, or the
    one skeleton it is); returns (part, mapped joints, joints) per part. ``keep_existing``: the bones picked by hand
    stay, and so does a hand part added by hand (:func:`add_hand_part`) that Auto Map does not find."""
    bones = [b.name for b in obj.data.bones]
    parts = rig.auto_map_parts(skeletons, bones)
    if not parts:  # nothing maps well: the skeleton that maps most, as far as it goes
        best = max(skeletons, key=lambda k: len(rig.auto_map(skeletons[k], bones, k)[0]) / len(skeletons[k]))
        found, family = rig.auto_map(skeletons[best], bones, best)
        parts = [(best, found, family)]
    old = {(m.part, m.joint): m.bone for m in obj.anyfill.joints} if keep_existing else {}
    if "hand" in skeletons and all(p in rig.PARTS for p, _, _ in parts):
        found_parts = {p for p, _, _ in parts}
        parts += [(p, {}, "by hand") for p in rig.PARTS[1:] if p not in found_parts and any(
            b for (q, _), b in old.items() if q == p)]
        parts.sort(key=lambda p: rig.PARTS.index(p[0]))
    set_rows(obj, [(part, j, old.get((part, j)) or found.get(j, "")) for part, found, _family in parts
                   for j in skeletons[rig.part_skeleton(part)]])
    obj.anyfill.skeleton = " + ".join(p for p, _, _ in parts)
    obj.anyfill.rig_family = parts[0][2]
    return [(p, sum(1 for m in obj.anyfill.joints if m.part == p and m.bone), len(skeletons[rig.part_skeleton(p)]))
            for p, _, _ in parts]


def add_hand_part(obj, side: str, joints: list[str] | tuple[str, ...]) -> tuple[str, str]:
    """Add a hand part (``side`` 'L' or 'R') to the rig's mapping, for a rig whose finger bones Auto Map does not
    recognise: a row for each of the hand model's ``joints``, their bones to pick in the panel, the wrist proposed
    from the body's hand bone of that side when it is mapped. Returns the part and the wrist's bone ('' if none)."""
    part, rows = f"hand.{side}", obj.anyfill.joints
    parts = list(dict.fromkeys(m.part for m in rows))
    if part in parts:
        raise plan_mod.PlanError(f"The rig {obj.name!r} has a {part} part already: pick its bones in the Rig Mapping "
                                 "list, or remove it first")
    if "hand" in parts:
        raise plan_mod.PlanError(f"The rig {obj.name!r} is mapped as a hand alone: its rows are that hand's")
    hand = next((m.bone for m in rows if m.part == "body" and m.joint == f"Hand_{side}" and m.bone), "")
    at = sum(1 for m in rows if m.part in rig.PARTS and rig.PARTS.index(m.part) < rig.PARTS.index(part))
    now = [(m.part, m.joint, m.bone) for m in rows]
    set_rows(obj, now[:at] + [(part, joint, hand if joint == "WRIST" else "") for joint in joints] + now[at:])
    obj.anyfill.skeleton = " + ".join(dict.fromkeys(m.part for m in rows))
    obj.anyfill.rig_family = obj.anyfill.rig_family or "by hand"
    return part, hand


def set_rows(obj, rows: list[tuple[str, str, str]]) -> None:
    """Make the rig's mapping rows these (part, joint, bone), each row rewritten where it stands and rows added or
    removed at the end: on a library override Blender keeps the rows added there (at the end of the list) but removes
    no row the library holds (``clear`` left them without a word). Refused, nothing changed, where the rows cannot
    change: a rig linked and not overridden, or fewer rows than its library holds."""
    if obj.library is not None:
        raise plan_mod.PlanError(f"The rig {obj.name!r} is linked from library {obj.library.name!r}: its mapping "
                                 "changes only on a library override of it (Object > Library Override > Make) or on "
                                 "a local copy (Object > Relations > Make Local); nothing was changed")
    reference = obj.override_library.reference if obj.override_library is not None else None
    held = len(reference.anyfill.joints) if reference is not None else 0
    if len(rows) < held:
        where = f" in library {reference.library.name!r}" if reference.library is not None else ""
        raise plan_mod.PlanError(
            f"The rig {obj.name!r} is a library override: its library's rig{where} maps {held} joints and Blender "
            f"removes none of them on an override, so a mapping of {len(rows)} cannot be made here. Clear the bones "
            "of the joints not to fill in the Rig Mapping list (a joint with no bone is not filled), or change the "
            "mapping in the library file; nothing was changed")
    table = obj.anyfill.joints
    while len(table) > len(rows):
        table.remove(len(table) - 1)
    while len(table) < len(rows):
        table.add()
    for item, (part, joint, bone) in zip(table, rows, strict=True):
        item.joint, item.part, item.bone = joint, part, bone


def check_bones(obj) -> None:
    """An armature with no bones has nothing to map or fill: said so (Fill asked to press Auto Map, and Auto Map to
    pick a bone for each joint)."""
    if not len(obj.data.bones):
        raise plan_mod.PlanError(f"The armature {obj.name!r} has no bones: add its bones (Edit Mode), or select the "
                                 "rig whose bones are keyed")


def skeletons_of(models: list[dict]) -> dict[str, list[str]]:
    """Skeleton -> joint names, from the backend's models (the first model of each skeleton)."""
    out: dict[str, list[str]] = {}
    for m in models:
        out.setdefault(m["skeleton"], [j["name"] for j in m["joints"]])
    return out


def resolve(context, obj, client: client_mod.Client, part: str | None = None) -> dict:
    """The model for a part of this rig (mapping the rig automatically the first time)."""
    models = client_mod.cached_models(client.url) or client_mod.refresh_models(client)
    if not any(m.bone for m in obj.anyfill.joints):
        set_mapping(obj, skeletons_of(models))
    parts = plan_mod.parts_of(obj)
    part = part if part is not None else (parts[0] if parts else "body")
    model = model_for(obj, models, part)
    if part.startswith("hand."):
        obj.anyfill.hand_model = obj.anyfill.hand_model or model["name"]
    else:
        obj.anyfill.model = obj.anyfill.model or model["name"]
    return model


def store_output(obj, written, first: bool = True) -> None:
    """Keep what a fill wrote on the rig for the panel; the parts of one Fill (body, hands) add up."""
    s = obj.anyfill
    if not first:
        written = written.add(type(written)(s.last_keys, s.last_dense_keys, s.last_editable, s.last_max_rotation,
                                            s.last_max_location))
    s.last_keys, s.last_dense_keys, s.last_editable = written.keys, written.dense_keys, written.editable
    s.last_max_rotation, s.last_max_location = written.max_rotation_deg, written.max_location


def describe_output(written, scene) -> str:
    """The report's words for what a fill wrote: its keys, and for editable keys the dense count and the largest
    deviations; the channels skipped because the animator locked them, and those left because their curves are
    muted, by name (a muted curve is the animator saying the channel is not to be driven)."""
    skipped = f", {written.locked} locked channel{'s' * (written.locked != 1)} skipped" if written.locked else ""
    if written.muted:
        skipped += f"; muted curves left as they are: {_named(written.muted)}"
    if written.limbs:
        skipped += (f"; {_named(written.limbs)} in IK filled through their IK controls (FK controls keyed too; IK "
                    f"within {length_text(scene, written.limb_error)} of the FK pose)")
    if not written.editable:
        return f"{written.keys} keys{skipped}"
    return (f"{written.keys} editable keys ({written.dense_keys} on every frame; largest deviation "
            f"{written.max_rotation_deg:.2f} deg, {length_text(scene, written.max_location)}){skipped}")


# --- backend --------------------------------------------------------------------------------------------


class ANYFILL_OT_check_backend(bpy.types.Operator):
    """Check that the backend runs and list its models"""

    bl_idname = "anim.anyfill_check_backend"
    bl_label = "Check Backend"
    bl_options = {"REGISTER"}  # changes no data: no undo step

    def execute(self, context):
        try:
            client = make_client(context)
            health = client.health()
            models = client_mod.refresh_models(client)
        except client_mod.BackendError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Anyfill backend {health.get('version')} at {client.url}: "
                              f"models {', '.join(m['name'] for m in models)}")
        return {"FINISHED"}


class ANYFILL_OT_start_backend(bpy.types.Operator):
    """Start the local backend (anyfill serve) with the Python set in the preferences"""

    bl_idname = "anim.anyfill_start_backend"
    bl_label = "Start Backend"
    bl_options = {"REGISTER"}  # changes no data: no undo step

    def execute(self, context):
        from urllib.parse import urlparse

        prefs = preferences(context)
        try:
            port = urlparse(client_mod.check_url(backend_url(context))).port or urlparse(client_mod.DEFAULT_URL).port
            client_mod.start_backend(prefs.python_executable if prefs else "", port)
        except (client_mod.BackendError, OSError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Anyfill backend starting on port {port}; press Check Backend in a few seconds")
        return {"FINISHED"}


class ANYFILL_OT_stop_backend(bpy.types.Operator):
    """Stop the backend this Blender started"""

    bl_idname = "anim.anyfill_stop_backend"
    bl_label = "Stop Backend"
    bl_options = {"REGISTER"}  # changes no data: no undo step

    @classmethod
    def poll(cls, context):
        return client_mod.backend_process() is not None

    def execute(self, context):
        client_mod.stop_backend()
        return {"FINISHED"}


# --- mapping ----------------------------------------------------------------------------------------------


class ANYFILL_OT_auto_map(bpy.types.Operator):
    """Map the model's joints to this rig's bones by name (exact, Rigify, Mixamo, Unreal-style)"""

    bl_idname = "anim.anyfill_auto_map"
    bl_label = "Auto Map"
    bl_options = {"REGISTER", "UNDO"}

    keep: bpy.props.BoolProperty(name="Keep Manual Choices", default=False)

    @classmethod
    def poll(cls, context):
        return _has_armature(context)

    def execute(self, context):
        obj = _armature(context)
        skeletons, offline = mapping_skeletons(context)
        try:
            check_bones(obj)
            found = set_mapping(obj, skeletons, self.keep)
        except plan_mod.PlanError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        mapped = sum(n for _, n, _ in found)
        if not mapped:
            self.report({"WARNING"}, f"No bone of {obj.name!r} was recognised by its name (exact, Rigify, Mixamo or "
                                     "Unreal-style): pick a bone for each joint in the Anyfill panel's Mapping"
                                     f"{offline}")
            return {"FINISHED"}
        self.report({"INFO"} if not offline else {"WARNING"}, "Mapped " + "; ".join(
            f"{part}: {n} of {total} joints" for part, n, total in found) + f" ({obj.anyfill.rig_family}){offline}")
        return {"FINISHED"}


def mapping_skeletons(context) -> tuple[dict[str, list[str]], str]:
    """Skeleton -> joint names of the backend's models to map a rig to, or the built-in copies when the backend
    cannot be reached, with the report's words on that ('' when reached)."""
    try:
        client = make_client(context)
        return skeletons_of(client_mod.cached_models(client.url) or client_mod.refresh_models(client)), ""
    except client_mod.BackendError as e:  # offline: the built-in skeletons
        return ({name: list(joints) for name, (joints, _) in rig.SKELETONS.items()},
                f"; mapped to the built-in skeletons: {e}")


class ANYFILL_OT_add_hand_part(bpy.types.Operator):
    """Add a hand to the mapping, its fingers filled by the hand model: for a rig whose finger bones Auto Map does not
    recognise (pick a bone for each of its joints in the list)"""

    bl_idname = "anim.anyfill_add_hand_part"
    bl_label = "Add Hand"
    bl_options = {"REGISTER", "UNDO"}

    side: bpy.props.EnumProperty(name="Side", items=(("L", "Left", "The left hand (part hand.L)"),
                                                     ("R", "Right", "The right hand (part hand.R)")), default="L")

    @classmethod
    def poll(cls, context):
        return _has_armature(context)

    def execute(self, context):
        obj = _armature(context)
        skeletons, _ = mapping_skeletons(context)
        joints = skeletons.get("hand") or rig.HAND_JOINTS
        try:
            part, wrist = add_hand_part(obj, self.side, joints)
        except plan_mod.PlanError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        on = f"its WRIST on {wrist!r}, the body's hand bone; " if wrist else ""
        self.report({"INFO"}, f"Added {part} ({len(joints)} joints): {on}pick a bone for each finger joint in the "
                              "Rig Mapping list")
        return {"FINISHED"}


class ANYFILL_OT_remove_part(bpy.types.Operator):
    """Remove a part (a hand) from the mapping: its bones are no longer filled"""

    bl_idname = "anim.anyfill_remove_part"
    bl_label = "Remove Part"
    bl_options = {"REGISTER", "UNDO"}

    part: bpy.props.StringProperty(name="Part", description="The part to remove: hand.L, hand.R or body")

    @classmethod
    def poll(cls, context):
        return _has_armature(context)

    def execute(self, context):
        obj = _armature(context)
        rows = obj.anyfill.joints
        parts = list(dict.fromkeys(m.part for m in rows))
        if self.part not in parts:
            self.report({"ERROR"}, f"The rig {obj.name!r} has no part {self.part!r} in its mapping; its parts: "
                                   f"{', '.join(parts) or 'none'}")
            return {"CANCELLED"}
        gone = [i for i, m in enumerate(rows) if m.part == self.part]
        try:
            set_rows(obj, [(m.part, m.joint, m.bone) for m in rows if m.part != self.part])
        except plan_mod.PlanError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        obj.anyfill.skeleton = " + ".join(dict.fromkeys(m.part for m in rows))
        obj.anyfill.active_joint = min(obj.anyfill.active_joint, max(len(rows) - 1, 0))
        self.report({"INFO"}, f"Removed {self.part} ({len(gone)} joints) from the mapping of {obj.name!r}")
        return {"FINISHED"}


# --- fill -------------------------------------------------------------------------------------------------


class _FillBase(AsyncRequest):
    kind = "fill"

    @classmethod
    def poll(cls, context):
        return _has_armature(context)

    def stages(self, context) -> list[str]:
        """The rig's parts, the body first: each hand's fingers are filled after the body gave its wrist."""
        obj = _armature(context)
        if obj is None:
            raise plan_mod.PlanError("Select an armature (the rig to fill)")
        check_bones(obj)
        if not any(m.bone for m in obj.anyfill.joints):
            resolve(context, obj, self._client)
        parts = plan_mod.parts_of(obj)
        if not parts:
            raise plan_mod.PlanError(f"The rig {obj.name!r} has no bones mapped to the model's joints: open the "
                                     "Anyfill panel's Mapping and press Auto Map, or pick bones for the joints")
        return parts

    def before(self, context) -> list[str]:
        """Poses the animator keyed over Anyfill's keys (Blender kept those keys typed Generated) become the
        animator's keys before anything is read (:mod:`.provenance`)."""
        obj = _armature(context)
        if obj is None or not provenance.adopt(obj, change=False):
            return []
        self._saved = SavedRig(obj)
        adopted = provenance.adopt(obj)
        frames = sorted({f for _, f in adopted})
        bones = list(dict.fromkeys(b for b, _ in adopted))
        return [f"kept as your keys: {_named(bones)} keyed over Anyfill's on frame"
                f"{'s' if len(frames) > 1 else ''} {_named([f'{f:g}' for f in frames])}"]

    def prepare(self, context, stage=None):
        obj = _armature(context)
        if obj is None:
            raise plan_mod.PlanError("Select an armature (the rig to fill)")
        model = resolve(context, obj, self._client, stage)
        return plan_mod.prepare(context, obj, self.kind, model, self.sample_settings(context), stage)

    def sample_settings(self, context):
        return None

    def warnings(self, context) -> list[str]:
        """Mapping rows whose bone is gone (renamed or deleted since Auto Map): the rest fills, the report says; and
        the mapped bones a constraint or driver overrides (:func:`.plan.overridden_bones`), and Rigify limbs in IK
        that Fill cannot write through their IK controls (:func:`.plan.limbs_in_ik`)."""
        obj = _armature(context)
        if obj is None:
            return []
        missing, overridden, ik = plan_mod.missing_bones(obj), plan_mod.overridden_bones(obj), plan_mod.limbs_in_ik(obj)
        thin = plan_mod.thinly_mapped(obj)
        return ((["not filled: " + ", ".join(missing)] if missing else [])
                + [f"{part}: only {n} of {total} joints mapped, the model places the others from its data's habits "
                   "(map more bones in the Anyfill panel)" for part, n, total in thin]
                + ([f"keys written, but a constraint or driver sets what Blender shows of {_named(overridden)}"]
                   if overridden else [])
                + ([f"limbs in IK ({_named(ik)}: IK_FK below 1) that Fill cannot drive through their IK controls: "
                    "the FK controls Fill writes show once they are switched to FK"] if ik else []))

    def request(self, client, plan, progress, cancel):
        return client.fill(plan.body)

    def finish(self, context, plan, answer) -> str:
        joints = plan_mod.answer_joints(answer)
        decoded = plan_mod.validate(plan, joints)
        timings = answer.get("timings")
        ms = timings.get("total_ms") if isinstance(timings, dict) else None
        backend = f"; backend {ms:.0f} ms" if isinstance(ms, int | float) else ""
        at = rate_note(answer, "filled", plan_mod.scene_fps(context))
        written = plan_mod.apply(context, plan, joints, decoded)
        obj = bpy.data.objects[plan.object_name]
        store_output(obj, written, first=not self._messages)
        plan_mod.store_uncertainty(obj, plan, joints)
        matched = [line for line in obj.anyfill.last_match.split("\n") if line and not line.startswith(
            f"{plan.part or plan.model}:")]
        obj.anyfill.last_match = "\n".join([*matched, plan_mod.describe_match(plan, obj, context.scene)])
        return f"Anyfill: wrote {describe_output(written, context.scene)} ({plan.summary}{backend}{at})"


def _named(bones: list[str], most: int = 6) -> str:
    """Bone names for a report, the first few and how many more."""
    more = f" and {len(bones) - most} more" if len(bones) > most else ""
    return ", ".join(bones[:most]) + more


def rate_note(answer: dict, done: str, scene_fps: float) -> str:
    """'; filled at 40 fps, ...' when the backend worked at another rate than the scene's (its ``resampled``: the
    request's frames are numbered at the scene's rate, whichever of them are sent)."""
    rate = answer.get("resampled")
    if not isinstance(rate, dict) or not isinstance(rate.get("filled_fps"), int | float):
        return ""
    return (f"; {done} at {rate['filled_fps']:.0f} fps, the scene's {scene_fps:.0f} fps is outside the model's "
            "trained rates")


class ANYFILL_OT_fill(_FillBase, bpy.types.Operator):
    """Fill every unkeyed frame of the mapped bones in the range, conditioned on the keyed ones"""

    bl_idname = "anim.anyfill_fill"
    bl_label = "Fill"
    bl_options = {"REGISTER", "UNDO"}
    label = "Anyfill fill"


class ANYFILL_OT_complete_pose(_FillBase, bpy.types.Operator):
    """Fill the mapped bones that have no key at the current frame"""

    bl_idname = "anim.anyfill_complete_pose"
    bl_label = "Complete Pose"
    bl_options = {"REGISTER", "UNDO"}
    kind = "pose"
    label = "Anyfill complete pose"


class ANYFILL_OT_sample_variations(_FillBase, bpy.types.Operator):
    """Sample several fills (any-order sampling) and show the first; step through them in the panel"""

    bl_idname = "anim.anyfill_sample_variations"
    bl_label = "Sample Variations"
    bl_options = {"REGISTER", "UNDO"}
    kind = "sample"
    label = "Anyfill variations"

    def stages(self, context) -> list[str]:
        """Variations of the rig's first part (the body of a full rig)."""
        return _FillBase.stages(self, context)[:1]

    _drawn = (0, 0)

    def prepare(self, context, stage=None):
        plan = _FillBase.prepare(self, context, stage)
        self._drawn = plan_mod.frame_range(context)  # kept with the variations: stepping writes this range
        return plan

    def sample_settings(self, context):
        s = context.scene.anyfill
        return {"order": s.order, "k": s.k, "temperature": s.temperature, "seed": s.seed, "n": s.count}

    def request(self, client, plan, progress, cancel):
        return client.sample(plan.body, progress, cancel)

    def finish(self, context, plan, answer) -> str:
        variations = plan_mod.answer_variations(answer)
        decoded = [plan_mod.validate(plan, v) for v in variations]  # all checked before writing
        note = rate_note(answer, "drawn", plan_mod.scene_fps(context))
        written = plan_mod.apply(context, plan, variations[0], decoded[0])
        obj = bpy.data.objects[plan.object_name]
        store_output(obj, written)
        plan_mod.store_uncertainty(obj, plan, variations[0])
        _variations[obj.name] = (plan, variations, self._drawn)
        obj.anyfill.variation_index, obj.anyfill.variation_count = 0, len(variations)
        what = describe_output(written, context.scene) + note
        return f"Anyfill: variation 1 of {len(variations)} ({what}); step with the arrows, then Keep"


class ANYFILL_OT_step_variation(bpy.types.Operator):
    """Show the next or previous sampled variation"""

    bl_idname = "anim.anyfill_step_variation"
    bl_label = "Step Variation"
    bl_options = {"REGISTER", "UNDO"}

    step: bpy.props.IntProperty(name="Step", default=1)

    @classmethod
    def poll(cls, context):
        obj = _armature(context)
        return obj is not None and obj.name in _variations

    def execute(self, context):
        obj = _armature(context)
        if obj is None or obj.name not in _variations:  # kept, or forgotten (an undo brings the count back, not them)
            if obj is not None:
                obj.anyfill.variation_count = 0
            self.report({"ERROR"}, "No variations to step: sample them again; nothing was written")
            return {"CANCELLED"}
        plan, variations, span = _variations[obj.name]
        if plan_mod.rig_fingerprint(obj, plan.bones_read) != plan.fingerprint:
            _variations.pop(obj.name, None)
            obj.anyfill.variation_count = 0
            self.report({"ERROR"}, f"The variations were drawn for another state of {obj.name!r} (its bones or "
                                   "keys changed since): sample them again; nothing was written")
            return {"CANCELLED"}
        drawn, now = plan.body.get("fps"), plan_mod.scene_fps(context)
        if drawn is not None and abs(drawn - now) > 1e-6:  # the same frame numbers would play another motion
            _variations.pop(obj.name, None)
            obj.anyfill.variation_count = 0
            self.report({"ERROR"}, f"The variations were drawn at {drawn:g} fps and the scene now plays {now:g}: "
                                   "sample them again; nothing was written")
            return {"CANCELLED"}
        i = (obj.anyfill.variation_index + self.step) % len(variations)
        try:
            written = plan_mod.apply(context, plan, variations[i])
        except keys.RigError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        store_output(obj, written)
        plan_mod.store_uncertainty(obj, plan, variations[i])
        obj.anyfill.variation_index = i
        what = describe_output(written, context.scene)
        self.report({"INFO"}, f"Anyfill: variation {i + 1} of {len(variations)} ({what}){drawn_note(context, span)}")
        return {"FINISHED"}


def drawn_note(context, drawn: tuple[int, int]) -> str:
    """The report's words on the range variations step when it is not the range a Fill would take now: variations
    keep the range they were drawn for (the scene's range changed since)."""
    try:
        now = plan_mod.frame_range(context)
    except plan_mod.PlanError as e:
        return f"; frames {drawn[0]}..{drawn[1]}, the range they were drawn for ({e})"
    if now == drawn:
        return ""
    return (f"; frames {drawn[0]}..{drawn[1]}, the range they were drawn for (the range is now {now[0]}..{now[1]}: "
            "sample again to draw it)")


class ANYFILL_OT_keep_variation(bpy.types.Operator):
    """Keep the variation shown and forget the others"""

    bl_idname = "anim.anyfill_keep_variation"
    bl_label = "Keep Variation"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = _armature(context)
        return obj is not None and obj.name in _variations

    def execute(self, context):
        obj = _armature(context)
        _variations.pop(obj.name, None)
        self.report({"INFO"}, f"Anyfill: kept variation {obj.anyfill.variation_index + 1}")
        obj.anyfill.variation_count = 0
        return {"FINISHED"}


class ANYFILL_OT_show_uncertainty(bpy.types.Operator):
    """Key the last fill's per-frame uncertainty (degrees) on the custom property 'anyfill_uncertainty' of
    the rig, to see in the Graph Editor and Dope Sheet where a key would help most"""

    bl_idname = "anim.anyfill_show_uncertainty"
    bl_label = "Show Uncertainty"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = _armature(context)
        return obj is not None and bool(obj.anyfill.last_uncertainty)

    def execute(self, context):
        obj = _armature(context)
        data = json.loads(obj.anyfill.last_uncertainty or "{}")
        frames, values = data.get("frames") or [], data.get("values") or []
        if not frames:
            self.report({"WARNING"}, "Anyfill: the last fill has no uncertainty to show")
            return {"CANCELLED"}
        try:
            keys.check_rig_editable(obj)  # before anything changes (write_keys checks again)
        except keys.RigError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        obj[UNCERTAINTY_PROP] = 0.0
        ui = obj.id_properties_ui(UNCERTAINTY_PROP)
        ui.update(description="Anyfill: uncertainty of the last fill (degrees, largest over the bones)")
        bag = keys.channelbag(obj, create=True)
        path = f'["{UNCERTAINTY_PROP}"]'
        old = bag.fcurves.find(path, index=0)
        if old is not None:
            bag.fcurves.remove(old)
        curves.write_keys(bag, path, 0, "Anyfill", frames, values, interpolation="LINEAR")
        worst = max(range(len(values)), key=values.__getitem__)
        self.report({"INFO"}, f"Anyfill: uncertainty keyed on '{UNCERTAINTY_PROP}'; most uncertain frame "
                              f"{frames[worst]:g} ({values[worst]:.1f} deg)")
        return {"FINISHED"}


classes = (
    ANYFILL_OT_check_backend,
    ANYFILL_OT_start_backend,
    ANYFILL_OT_stop_backend,
    ANYFILL_OT_auto_map,
    ANYFILL_OT_add_hand_part,
    ANYFILL_OT_remove_part,
    ANYFILL_OT_fill,
    ANYFILL_OT_complete_pose,
    ANYFILL_OT_sample_variations,
    ANYFILL_OT_step_variation,
    ANYFILL_OT_keep_variation,
    ANYFILL_OT_show_uncertainty,
)


@bpy.app.handlers.persistent
def forget_variations(*_args) -> None:
    """Another file loaded: variations drawn for a rig of the file before are dropped (a rig of the same name in
    this one is another rig)."""
    _variations.clear()


def has_variations(obj) -> bool:
    return obj is not None and obj.name in _variations


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.app.handlers.load_post.append(forget_variations)


def unregister() -> None:
    _variations.clear()
    if forget_variations in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(forget_variations)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)

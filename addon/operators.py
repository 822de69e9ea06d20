"""Operators (``anim.anyfill_*``, all ``{'REGISTER', 'UNDO'}``)."""

from __future__ import annotations

import json

import bpy

from . import client as client_mod
from . import curves, keys, rig
from . import plan as plan_mod
from .jobs import AsyncRequest, backend_url, make_client, preferences

UNCERTAINTY_PROP = "anyfill_uncertainty"
_variations: dict[str, tuple[plan_mod.Plan, list[dict]]] = {}  # rig name -> (plan, variations' joints)


def _armature(context):
    obj = context.active_object
    if obj is not None and obj.type == "ARMATURE":
        return obj
    return None


def _has_armature(context) -> bool:
    return _armature(context) is not None


def choose_model(obj, models: list[dict]) -> dict:
    """The rig's model (by name), else the model whose joints map most of the rig's bones."""
    if not models:
        raise client_mod.BackendError("The backend serves no model")
    if obj.anyfill.model:
        for m in models:
            if m["name"] == obj.anyfill.model:
                return m
        raise client_mod.BackendError(f"The backend has no model {obj.anyfill.model!r}; it serves "
                                      f"{', '.join(m['name'] for m in models)}: pick one in the Anyfill panel")
    bones = [b.name for b in obj.data.bones]
    return max(models, key=lambda m: len(rig.auto_map([j["name"] for j in m["joints"]], bones, m["skeleton"])[0]))


def set_mapping(obj, joints: list[str], skeleton: str, keep_existing: bool = False) -> int:
    """Fill ``obj.anyfill.joints`` with the automatic mapping; returns the number of mapped joints."""
    bones = [b.name for b in obj.data.bones]
    found, family = rig.auto_map(joints, bones, skeleton)
    old = {m.joint: m.bone for m in obj.anyfill.joints} if keep_existing else {}
    obj.anyfill.joints.clear()
    for j in joints:
        item = obj.anyfill.joints.add()
        item.joint = j
        item.bone = old.get(j) or found.get(j, "")
    obj.anyfill.skeleton = skeleton
    obj.anyfill.rig_family = family
    return sum(1 for m in obj.anyfill.joints if m.bone)


def resolve(context, obj, client: client_mod.Client) -> dict:
    """The model for this rig (mapping it automatically the first time)."""
    models = client_mod.cached_models(client.url) or client_mod.refresh_models(client)
    model = choose_model(obj, models)
    if not obj.anyfill.model:
        obj.anyfill.model = model["name"]
    if not any(m.bone for m in obj.anyfill.joints):
        set_mapping(obj, [j["name"] for j in model["joints"]], model["skeleton"])
    return model


# --- backend --------------------------------------------------------------------------------------------


class ANYFILL_OT_check_backend(bpy.types.Operator):
    """Check that the backend runs and list its models"""

    bl_idname = "anim.anyfill_check_backend"
    bl_label = "Check Backend"
    bl_options = {"REGISTER"}  # changes no data: no undo step

    def execute(self, context):
        client = make_client(context)
        try:
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
        port = urlparse(backend_url(context)).port or urlparse(client_mod.DEFAULT_URL).port
        try:
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
        bones = [b.name for b in obj.data.bones]
        try:
            client = make_client(context)
            models = client_mod.cached_models(client.url) or client_mod.refresh_models(client)
            model = choose_model(obj, models)
            obj.anyfill.model = model["name"]
            joints, skeleton = [j["name"] for j in model["joints"]], model["skeleton"]
        except client_mod.BackendError:  # offline: the built-in skeletons
            skeleton = obj.anyfill.skeleton or rig.guess_skeleton(bones)
            joints = list(rig.SKELETONS[skeleton][0])
        n = set_mapping(obj, joints, skeleton, self.keep)
        level = {"INFO"} if n else {"WARNING"}
        self.report(level, f"Mapped {n} of {len(joints)} {skeleton} joints ({obj.anyfill.rig_family})")
        return {"FINISHED"}


# --- fill -------------------------------------------------------------------------------------------------


class _FillBase(AsyncRequest):
    kind = "fill"

    @classmethod
    def poll(cls, context):
        return _has_armature(context)

    def prepare(self, context):
        obj = _armature(context)
        if obj is None:
            raise plan_mod.PlanError("Select an armature (the rig to fill)")
        model = resolve(context, obj, self._client)
        return plan_mod.prepare(context, obj, self.kind, model, self.sample_settings(context))

    def sample_settings(self, context):
        return None

    def request(self, client, plan, progress, cancel):
        return client.fill(plan.body)

    def finish(self, context, plan, answer) -> str:
        decoded = plan_mod.validate(plan, answer["joints"])
        n = plan_mod.apply(context, plan, answer["joints"], decoded)
        obj = bpy.data.objects[plan.object_name]
        plan_mod.store_uncertainty(obj, plan, answer["joints"])
        ms = answer.get("timings", {}).get("total_ms", 0.0)
        return f"Anyfill: wrote {n} keys ({plan.summary}; backend {ms:.0f} ms)"


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

    def sample_settings(self, context):
        s = context.scene.anyfill
        return {"order": s.order, "k": s.k, "temperature": s.temperature, "seed": s.seed, "n": s.count}

    def request(self, client, plan, progress, cancel):
        return client.sample(plan.body, progress, cancel)

    def finish(self, context, plan, answer) -> str:
        variations = [v["joints"] for v in answer["variations"]]
        if not variations:
            raise plan_mod.PlanError("The backend returned no variation")
        decoded = [plan_mod.validate(plan, v) for v in variations]  # all checked before writing
        n = plan_mod.apply(context, plan, variations[0], decoded[0])
        obj = bpy.data.objects[plan.object_name]
        plan_mod.store_uncertainty(obj, plan, variations[0])
        _variations[obj.name] = (plan, variations)
        obj.anyfill.variation_index, obj.anyfill.variation_count = 0, len(variations)
        return f"Anyfill: variation 1 of {len(variations)} ({n} keys); step with the arrows, then Keep"


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
        plan, variations = _variations[obj.name]
        i = (obj.anyfill.variation_index + self.step) % len(variations)
        try:
            n = plan_mod.apply(context, plan, variations[i])
        except plan_mod.PlanError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        plan_mod.store_uncertainty(obj, plan, variations[i])
        obj.anyfill.variation_index = i
        self.report({"INFO"}, f"Anyfill: variation {i + 1} of {len(variations)} ({n} keys)")
        return {"FINISHED"}


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
    ANYFILL_OT_fill,
    ANYFILL_OT_complete_pose,
    ANYFILL_OT_sample_variations,
    ANYFILL_OT_step_variation,
    ANYFILL_OT_keep_variation,
    ANYFILL_OT_show_uncertainty,
)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    _variations.clear()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)

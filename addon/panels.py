"""The "Anyfill" sidebar tab (Graph Editor, Dope Sheet, 3D Viewport) and the pose / key menu entries."""

import bpy

from . import client as client_mod
from .jobs import backend_url
from .operators import has_variations, length_text
from .plan import mapped_twice


class ANYFILL_UL_mapping(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        obj = data.id_data
        row = layout.row(align=True)
        name = f"{item.part} {item.joint}" if item.part.startswith("hand.") else item.joint
        twice = item.bone and item.bone in mapped_twice(obj)
        gone = item.bone and item.bone not in obj.data.bones  # renamed or deleted since it was mapped
        icon = "ERROR" if twice or gone else ("CHECKMARK" if item.bone else "BLANK1")
        row.label(text=name + (" (bone mapped twice)" if twice and not gone else " (no such bone)" if gone else ""),
                  icon=icon)
        row.prop_search(item, "bone", obj.data, "bones", text="")


def _draw_backend(layout, context) -> None:
    url = backend_url(context)
    box = layout.box()
    models = client_mod.cached_models(url)
    row = box.row()
    row.label(text=f"Backend: {url}", icon="LINKED" if models is not None else "UNLINKED")
    row = box.row(align=True)
    row.operator("anim.anyfill_check_backend", icon="FILE_REFRESH")
    if client_mod.backend_process() is None:
        row.operator("anim.anyfill_start_backend", icon="PLAY")
    else:
        row.operator("anim.anyfill_stop_backend", icon="PAUSE")
    if models:
        box.label(text="Models: " + ", ".join(f"{m['name']} ({m['skeleton']})" for m in models))


def _draw_fill(layout, context) -> None:
    obj = context.active_object
    scene = context.scene.anyfill
    col = layout.column(align=True)
    col.prop(scene, "range_mode")
    if scene.range_mode == "CUSTOM":
        row = col.row(align=True)
        row.prop(scene, "frame_start")
        row.prop(scene, "frame_end")
    col.prop(scene, "bones")
    col = layout.column(align=True)
    col.row().prop(scene, "keys_output", expand=True)
    if scene.keys_output == "EDITABLE":
        col.prop(scene, "rotation_tolerance")
        col.prop(scene, "location_tolerance")
    col = layout.column(align=True)
    col.scale_y = 1.3
    col.operator("anim.anyfill_fill", icon="IPO_BEZIER")
    col.operator("anim.anyfill_complete_pose", icon="POSE_HLT")
    col = layout.column(align=True)
    col.operator("anim.anyfill_show_uncertainty", icon="GRAPH")
    if obj is not None and obj.type == "ARMATURE" and obj.anyfill.model:
        layout.label(text=f"Model: {obj.anyfill.model}")
    if obj is not None and obj.type == "ARMATURE" and obj.anyfill.last_dense_keys:
        for line in output_lines(obj.anyfill, context.scene):
            layout.label(text=line)


def output_lines(s, scene) -> list[str]:
    """What the last fill wrote: its key count against a key on every frame, and for editable keys the largest
    deviation from the dense fill as Blender evaluates the curves."""
    share = 100.0 * s.last_keys / max(s.last_dense_keys, 1)
    lines = [f"Keys: {s.last_keys:,} ({share:.0f} % of {s.last_dense_keys:,} on every frame)"]
    if s.last_editable:
        lines.append(f"Largest deviation: {s.last_max_rotation:.2f}\u00b0, {length_text(scene, s.last_max_location)}")
    return lines


def _draw_variations(layout, context) -> None:
    scene = context.scene.anyfill
    col = layout.column(align=True)
    col.prop(scene, "count")
    col.prop(scene, "order")
    col.prop(scene, "temperature")
    col.prop(scene, "k")
    col.prop(scene, "seed")
    layout.operator("anim.anyfill_sample_variations", icon="SHADERFX")
    obj = context.active_object
    if obj is not None and obj.type == "ARMATURE" and obj.anyfill.variation_count and has_variations(obj):
        row = layout.row(align=True)
        row.operator("anim.anyfill_step_variation", text="", icon="TRIA_LEFT").step = -1
        row.label(text=f"Variation {obj.anyfill.variation_index + 1} / {obj.anyfill.variation_count}")
        row.operator("anim.anyfill_step_variation", text="", icon="TRIA_RIGHT").step = 1
        row.operator("anim.anyfill_keep_variation", text="Keep", icon="CHECKMARK")


def _draw_mapping(layout, context) -> None:
    obj = context.active_object
    if obj is None or obj.type != "ARMATURE":
        layout.label(text="Select an armature", icon="INFO")
        return
    s = obj.anyfill
    row = layout.row(align=True)
    row.prop(s, "model")
    row.operator("anim.anyfill_auto_map", icon="AUTOMERGE_ON")
    if any(m.part.startswith("hand.") for m in s.joints):
        layout.prop(s, "hand_model")
    if s.rig_family:
        mapped = sum(1 for m in s.joints if m.bone in obj.data.bones)
        layout.label(text=f"{s.skeleton}: {mapped}/{len(s.joints)} joints mapped ({s.rig_family})")
    for line in s.last_match.split("\n"):
        if line:
            layout.label(text=f"Matched {line}", icon="ARMATURE_DATA")
    layout.template_list("ANYFILL_UL_mapping", "", s, "joints", s, "active_joint", rows=4)
    parts = {m.part for m in s.joints}
    if "hand" not in parts:  # a hand rig alone is that one hand; another rig may have a hand added or removed by hand
        row = layout.row(align=True)
        for side, name in (("L", "Left"), ("R", "Right")):
            part = f"hand.{side}"
            if part in parts:
                row.operator("anim.anyfill_remove_part", text=f"Remove {name} Hand", icon="REMOVE").part = part
            else:
                row.operator("anim.anyfill_add_hand_part", text=f"Add {name} Hand", icon="ADD").side = side
    col = layout.column(align=True)
    col.prop(s, "mirror")
    col.prop(s, "rest_pose")
    col.prop(s, "floor")
    col.prop(s, "replace_generated")


_SPACES = (("GRAPH_EDITOR", "GRAPH"), ("DOPESHEET_EDITOR", "DOPESHEET"), ("VIEW_3D", "VIEW3D"))
_SECTIONS = (("backend", "Backend", _draw_backend, {"DEFAULT_CLOSED"}),
             ("fill", "Fill", _draw_fill, set()),
             ("variations", "Variations", _draw_variations, {"DEFAULT_CLOSED"}),
             ("mapping", "Rig Mapping", _draw_mapping, {"DEFAULT_CLOSED"}))


def _make_panels() -> list[type]:
    out = []
    for space, short in _SPACES:
        parent = None
        for key, title, fn, options in _SECTIONS:
            attrs = {"bl_space_type": space, "bl_region_type": "UI", "bl_category": "Anyfill", "bl_label": title,
                     "bl_idname": f"{short}_PT_anyfill_{key}", "bl_options": options,
                     "draw": (lambda f: lambda self, context: f(self.layout, context))(fn)}
            if parent is not None:
                attrs["bl_parent_id"] = parent
            else:
                parent = attrs["bl_idname"]
                attrs["bl_label"] = "Anyfill"
            out.append(type(f"{short}_PT_anyfill_{key}", (bpy.types.Panel,), attrs))
    return out


def _menu_entries(self, context) -> None:
    layout = self.layout
    layout.separator()
    layout.operator("anim.anyfill_fill", text="Anyfill: Fill", icon="IPO_BEZIER")
    layout.operator("anim.anyfill_complete_pose", text="Anyfill: Complete Pose", icon="POSE_HLT")
    layout.operator("anim.anyfill_sample_variations", text="Anyfill: Sample Variations", icon="SHADERFX")


_MENUS = ("VIEW3D_MT_pose", "GRAPH_MT_key", "DOPESHEET_MT_key")
classes = (ANYFILL_UL_mapping, *_make_panels())


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    for name in _MENUS:
        menu = getattr(bpy.types, name, None)
        if menu is not None:
            menu.append(_menu_entries)


def unregister() -> None:
    for name in _MENUS:
        menu = getattr(bpy.types, name, None)
        if menu is not None:
            menu.remove(_menu_entries)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)

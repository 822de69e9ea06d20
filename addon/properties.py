"""Scene and object settings, saved with the .blend file.

``Object.anyfill`` (per rig): the model, the joint -> bone mapping, mirror and rest-pose matching, the last
fill's uncertainty, what the last fill wrote and the variations being browsed (all of it library-overridable).
``Scene.anyfill``: frame range mode, bone scope, the keys written (every frame or editable, with tolerances) and the
sampling settings.
"""

import bpy

ORDERS = (
    ("forward", "Forward", "Fill frames in time order"),
    ("random", "Random", "Fill cells in a random order"),
    ("lowest-entropy", "Most Certain First", "Fill the most certain cell first"),
    ("highest-entropy", "Least Certain First", "Fill the least certain cell first"),
)
AUTO_ON_OFF = (
    ("AUTO", "Auto", "Decide from the rest pose"),
    ("ON", "On", ""),
    ("OFF", "Off", ""),
)
# A rig linked from a library and overridden (its shot's copy) keeps the animator's mapping and rig settings, saved
# with the override. Its mapping rows are matched to the library's by their place (they have no names), and rows
# added on the override are kept (USE_INSERTION); Blender removes none the library holds (operators.set_rows).
OVERRIDABLE = {"LIBRARY_OVERRIDABLE"}
OVERRIDABLE_ROWS = {"LIBRARY_OVERRIDABLE", "USE_INSERTION", "NO_PROPERTY_NAME"}


class AnyfillJointMap(bpy.types.PropertyGroup):
    joint: bpy.props.StringProperty(name="Joint", description="Joint of the model's skeleton", override=OVERRIDABLE)
    bone: bpy.props.StringProperty(name="Bone", description="Bone of this rig that plays the joint (empty: unmapped)",
                                   override=OVERRIDABLE)
    part: bpy.props.StringProperty(name="Part", default="", override=OVERRIDABLE,
                                   description="The part of the rig the joint belongs to: body, hand.L or hand.R "
                                   "(a rig of one skeleton: that skeleton's name)")


class AnyfillRigSettings(bpy.types.PropertyGroup):
    model: bpy.props.StringProperty(name="Model", description="Backend model that fills this rig (hand, body, ...)",
                                    default="", override=OVERRIDABLE)
    hand_model: bpy.props.StringProperty(name="Hand Model", default="", override=OVERRIDABLE,
                                         description="Backend model that fills the fingers of a full rig's hands")
    skeleton: bpy.props.StringProperty(name="Skeleton", description="The parts of the rig Auto Map found", default="",
                                       override=OVERRIDABLE)
    rig_family: bpy.props.StringProperty(name="Rig", description="How the mapping was found", default="",
                                         override=OVERRIDABLE)
    joints: bpy.props.CollectionProperty(type=AnyfillJointMap, override=OVERRIDABLE_ROWS)
    active_joint: bpy.props.IntProperty(name="Active Joint", default=0, override=OVERRIDABLE)
    mirror: bpy.props.EnumProperty(name="Mirror", items=AUTO_ON_OFF, default="AUTO", override=OVERRIDABLE,
                                   description="Mirror left/right (a hand of the other side than the hand model's)")
    rest_pose: bpy.props.EnumProperty(
        name="Rest Pose", default="AUTO", override=OVERRIDABLE,
        items=(("AUTO", "Auto", "The model's own rest when the rig is an import of the model's skeleton (same bone "
                "names), else measured from the rig's rest pose"),
               ("MODEL", "Model's Own", "The rig's rest pose is the model skeleton's rest pose (a BVH import of it)"),
               ("REST", "From Rig Rest", "Match the rig's rest pose (T-pose, A-pose, any) to the model: bone "
                "directions from the rig, twists as the model's training data holds them")),
        description="How the rig's rest pose is matched to the model's skeleton")
    floor: bpy.props.EnumProperty(
        name="Floor", default="AUTO", override=OVERRIDABLE,
        items=(("AUTO", "Auto", "A rig whose keyed feet lie above or below the floor the model was trained on is "
                "read raised or lowered onto it (and written back where it was)"),
               ("RIG", "Rig's Own", "Read the rig at its own height (a shot that never touches the ground)")),
        description="Where the model takes the rig's floor to be")
    replace_generated: bpy.props.BoolProperty(
        name="Replace Generated Keys", default=True, override=OVERRIDABLE,
        description="Keys typed Generated (earlier fills) do not condition the fill and are replaced")
    last_uncertainty: bpy.props.StringProperty(name="Last Uncertainty", default="", options={"HIDDEN"},
                                               override=OVERRIDABLE)
    last_match: bpy.props.StringProperty(
        name="Last Match", default="", options={"HIDDEN"}, override=OVERRIDABLE,
        description="How the last fill matched the rig to the model (rest pose, scale, mirror, per part)")
    last_keys: bpy.props.IntProperty(name="Keys Written", default=0, options={"HIDDEN"}, override=OVERRIDABLE,
                                     description="Keys the last fill wrote on this rig")
    last_dense_keys: bpy.props.IntProperty(name="Dense Keys", default=0, options={"HIDDEN"}, override=OVERRIDABLE,
                                           description="Keys a key on every filled frame would have written")
    last_editable: bpy.props.BoolProperty(name="Last Fill Editable", default=False, options={"HIDDEN"},
                                          override=OVERRIDABLE)
    last_max_rotation: bpy.props.FloatProperty(
        name="Largest Rotation Deviation", default=0.0, options={"HIDDEN"}, override=OVERRIDABLE,
        description="The last editable fill's largest deviation from the dense fill, degrees, as Blender evaluates "
        "the written curves")
    last_max_location: bpy.props.FloatProperty(
        name="Largest Location Deviation", default=0.0, subtype="DISTANCE", unit="LENGTH", options={"HIDDEN"},
        override=OVERRIDABLE,
        description="The last editable fill's largest location deviation from the dense fill")
    variation_index: bpy.props.IntProperty(name="Variation", default=0, min=0, override=OVERRIDABLE)
    variation_count: bpy.props.IntProperty(name="Variations", default=0, min=0, override=OVERRIDABLE)


def _get_location_tolerance(self) -> float:
    return self.location_tolerance_m / (self.id_data.unit_settings.scale_length or 1.0)


def _set_location_tolerance(self, value: float) -> None:
    self.location_tolerance_m = value * (self.id_data.unit_settings.scale_length or 1.0)


class AnyfillSceneSettings(bpy.types.PropertyGroup):
    range_mode: bpy.props.EnumProperty(
        name="Range",
        items=(("AUTO", "Auto", "The preview range when set, else the scene range"),
               ("PREVIEW", "Preview", "The preview range"),
               ("SCENE", "Scene", "The scene range"),
               ("CUSTOM", "Custom", "The frames below")),
        default="AUTO")
    frame_start: bpy.props.IntProperty(name="Start", default=1)
    frame_end: bpy.props.IntProperty(name="End", default=100)
    bones: bpy.props.EnumProperty(
        name="Bones",
        items=(("ALL", "All Mapped", "Fill every mapped bone"),
               ("SELECTED", "Selected", "Fill the selected mapped bones; the others only condition")),
        default="ALL")
    order: bpy.props.EnumProperty(name="Order", items=ORDERS, default="lowest-entropy")
    temperature: bpy.props.FloatProperty(
        name="Temperature", default=1.0, min=0.0, max=10.0,
        description="How far variations stray from the fill: 1 is the model's calibrated default, 0 the fill itself")
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0)
    count: bpy.props.IntProperty(name="Count", description="Number of variations", default=4, min=1, max=16)
    k: bpy.props.IntProperty(name="Cells per Step", default=8, min=1, max=4096)
    keys_output: bpy.props.EnumProperty(
        name="Keys",
        items=(("DENSE", "Every Frame", "A key on every filled frame"),
               ("EDITABLE", "Editable", "Keys only where Blender's curves (Auto Clamped Bezier) need them to stay "
                "within the tolerances of the fill; a bone's rotation channels share their key frames")),
        default="DENSE")
    rotation_tolerance: bpy.props.FloatProperty(
        name="Rotation Tolerance", default=1.0, min=0.01, max=45.0, precision=2,
        description="Editable keys: the largest angle (degrees) a bone may turn away from the fill on any filled frame")
    location_tolerance_m: bpy.props.FloatProperty(default=0.01, min=1e-6, options={"HIDDEN"})  # metres
    location_tolerance: bpy.props.FloatProperty(
        name="Location Tolerance", subtype="DISTANCE", unit="LENGTH", min=1e-6, precision=3,
        get=_get_location_tolerance, set=_set_location_tolerance,
        description="Editable keys: the largest distance a moving bone's location may stray from the fill (in scene "
        "units: 1 cm unless set, whatever the scene's Unit Scale)")


classes = (AnyfillJointMap, AnyfillRigSettings, AnyfillSceneSettings)


@bpy.app.handlers.persistent
def settings_in_library(*_args) -> None:
    """Before a save, the library's rig of each overridden rig with Anyfill settings is given an empty group of
    them, in memory (linked data is never written). Blender saves an override as what differs from its library's
    rig: where that rig has no Anyfill settings at all (a rig its rigger never mapped), Blender 5.0 took the whole
    group for a new one, could not put it back on load ('expected ID type') and the mapping and settings were lost."""
    for ob in bpy.data.objects:
        ov = ob.override_library
        if ov is not None and ov.reference is not None and ob.is_property_set("anyfill"):
            _ = ov.reference.anyfill  # reading an extension's group makes it


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Object.anyfill = bpy.props.PointerProperty(type=AnyfillRigSettings, override=OVERRIDABLE)
    bpy.types.Scene.anyfill = bpy.props.PointerProperty(type=AnyfillSceneSettings)
    bpy.app.handlers.save_pre.append(settings_in_library)


def unregister() -> None:
    if settings_in_library in bpy.app.handlers.save_pre:
        bpy.app.handlers.save_pre.remove(settings_in_library)
    del bpy.types.Scene.anyfill
    del bpy.types.Object.anyfill
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)

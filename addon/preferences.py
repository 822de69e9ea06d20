"""Extension preferences: where the backend is and how to reach it."""

import bpy

from .client import DEFAULT_URL


class AnyfillPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_url: bpy.props.StringProperty(
        name="Backend URL",
        description="Address of the local anyfill backend (anyfill serve)",
        default=DEFAULT_URL,
    )
    token: bpy.props.StringProperty(
        name="Token",
        description="Per-install access token; read from the backend's token file when left empty",
        default="",
        subtype="PASSWORD",
    )
    python_executable: bpy.props.StringProperty(
        name="Python for the backend",
        description="Optional Python interpreter with anyfill installed, used to start the backend",
        default="",
        subtype="FILE_PATH",
    )

    def draw(self, context):
        from . import client

        layout = self.layout
        layout.prop(self, "backend_url")
        layout.prop(self, "token")
        if not self.token:
            layout.label(text=client.token_status(), icon="INFO")
        layout.prop(self, "python_executable")
        row = layout.row(align=True)
        row.operator("anim.anyfill_start_backend")
        row.operator("anim.anyfill_check_backend")


classes = (AnyfillPreferences,)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)

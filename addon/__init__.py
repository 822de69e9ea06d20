"""Anyfill, the Blender extension: key a few poses, fill the rest with the local anyfill backend.

Only ``bpy`` and the standard library are used here; the model runs in the backend, reached over HTTP.
"""

from . import preferences

_modules = (preferences,)


def register() -> None:
    for m in _modules:
        m.register()


def unregister() -> None:
    for m in reversed(_modules):
        m.unregister()

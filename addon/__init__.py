"""Anyfill, the Blender extension: key a few poses, fill the rest with the local anyfill backend.

Only ``bpy``, the numpy that Blender bundles and the standard library are used here; the model runs in the
backend, reached over HTTP.
Modules: ``preferences`` (backend URL, token, Python), ``properties`` (scene and rig settings), ``rig``
(mapping), ``retarget`` (rig <-> model through world rotations), ``keys`` (reading keys and poses),
``fcurves`` (Blender's F-curve evaluation in bulk), ``curves`` (continuity and writing keys), ``editable``
(a key per frame, or editable curves within a tolerance), ``provenance`` (which keys Anyfill wrote, so a pose
keyed over one is the animator's), ``client`` (HTTP, token, worker thread, backend
process), ``plan`` (request and answer), ``jobs`` (non-blocking operators), ``operators`` and ``panels``.
"""

from . import client, operators, panels, preferences, properties

_modules = (preferences, properties, operators, panels)


def register() -> None:
    for m in _modules:
        m.register()


def unregister() -> None:
    client.stop_backend()  # a backend this Blender started ends with the extension
    for m in reversed(_modules):
        m.unregister()

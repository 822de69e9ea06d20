"""Shared fixtures. Tests that read the real capture take ``data_root`` and skip when it is absent; Blender
tests take ``bpy`` (the real module, skipped when it cannot be imported) and ``ext`` (the extension built,
installed and enabled in it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.motion import splits


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data folder (``../shared/data`` beside the checkout, or ``$ANYFILL_DATA``)."""
    try:
        return splits.data_root()
    except splits.DataNotFound as e:
        pytest.skip(f"real data folder ../shared/data is absent: {e}")


@pytest.fixture(scope="module")
def bpy():
    from blender_support import import_bpy

    return import_bpy()


@pytest.fixture(scope="module")
def ext(bpy):
    from blender_support import install_extension

    return install_extension(bpy)


@pytest.fixture(scope="module")
def backend(ext):
    """A real ``anyfill serve`` process on 127.0.0.1 (one per session; small untrained models)."""
    from blender_support import start_backend

    try:
        return start_backend()
    except ImportError as e:
        pytest.skip(f"the backend's packages are not installed: {e}")


@pytest.fixture()
def prefs(bpy, ext, backend):
    """The extension's preferences pointed at the test backend, the token left to the token file."""
    from blender_support import EXT_MODULE

    p = bpy.context.preferences.addons[EXT_MODULE].preferences
    p.backend_url, p.token = backend.url, ""
    return p

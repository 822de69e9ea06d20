"""The extension keeps copies of a few server facts (it talks to the server over HTTP and imports nothing of
it): the model skeletons' joints and parents (``addon/rig.py``), the sampling orders (``addon/properties.py``) and
how close two frames may be (``addon/curves.py``'s EPS_FRAME: the extension merges keys that close, the server
refuses frames that close). Checked here against a real server's ``/v1/models`` and its API contract."""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

from backend_support import live_server

ADDON = Path(__file__).resolve().parents[1] / "addon"


def _constants(path: Path) -> dict[str, object]:
    """The module-level literal constants of an extension file, read without Blender."""
    tree = ast.parse(path.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            with contextlib.suppress(ValueError):
                out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def test_the_extensions_skeletons_are_the_servers():
    rig = _constants(ADDON / "rig.py")
    live = live_server()
    with live.client() as c:
        models = c.get("/v1/models").json()["models"]
    seen = set()
    for m in models:
        joints = [j["name"] for j in m["joints"]]
        parents = [j["parent_index"] for j in m["joints"]]
        skeleton = m["skeleton"].upper()
        assert tuple(joints) == rig[f"{skeleton}_JOINTS"], m["name"]
        assert tuple(parents) == rig[f"{skeleton}_PARENTS"], m["name"]
        seen.add(m["skeleton"])
    assert seen == {"hand", "body"}


def test_the_extensions_orders_are_the_apis():
    orders = [o[0] for o in _constants(ADDON / "properties.py")["ORDERS"]]
    live = live_server()
    with live.client() as c:
        schema = c.get("/v1/openapi.json").json()
    assert orders == schema["components"]["schemas"]["SampleRequest"]["properties"]["order"]["enum"]


def test_the_extensions_frame_tolerance_is_the_servers_frame_step():
    eps = _constants(ADDON / "curves.py")["EPS_FRAME"]
    live = live_server()
    with live.client() as c:
        models = c.get("/v1/models").json()["models"]
    assert models and all(m["limits"]["min_frame_step"] == eps for m in models)

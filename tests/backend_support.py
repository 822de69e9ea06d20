"""Shared by the backend tests: small untrained models of each schema, and one real uvicorn server on a free
127.0.0.1 port per test session (started on first use in a thread, stopped at exit).

Every answer a test client of that server receives is checked against the pydantic model of its route
(:func:`check_answer`, an httpx response hook): a JSON answer against the route's ``response_model``
(``ErrorResponse`` for an error), each line of an NDJSON stream against ``SampleEvent``. ``CHECKED``
counts the answers checked, by route and status."""

from __future__ import annotations

import atexit
import collections
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import uvicorn

torch.set_num_threads(1)

TOKEN = "test-token-0123456789abcdef"
_state: dict = {}


def make_models(folder: Path) -> dict[str, Path]:
    """Untrained models of the right schemas (stats buffers at mean 0 / std 1): hand and body (query
    variant) and a triples hand, each a few kB."""
    from training.inbetween.checkpoint import save_model
    from training.inbetween.config import AnyOrderTrainConfig
    from training.inbetween.task import build_model

    torch.manual_seed(0)
    out = {}
    for name, skel, variant in (("hand", "hand", "query"), ("body", "body", "query"),
                                ("hand-triples", "hand", "triples")):
        cfg = AnyOrderTrainConfig(skeleton=skel, variant=variant, d_model=32, n_heads=2, n_enc_layers=1,
                                  n_dec_layers=1, dropout=0.0)
        model = build_model(cfg)
        torch.nn.init.normal_(model.out.weight, std=0.02)  # not exactly the baseline, so fills differ by input
        out[name] = save_model(model, folder / f"{name}.safetensors")
    return out


def models_dir() -> Path:
    if "models" not in _state:
        d = Path(tempfile.mkdtemp(prefix="anyfill-models-"))
        _state["models"] = (d, make_models(d))
    return _state["models"][0]


CHECKED: collections.Counter = collections.Counter()  # (route path, status) -> answers checked


def _routes(app) -> list[tuple[str, re.Pattern, str, dict[str, str]]]:
    """(method, path pattern, path, {status: model name}) of each operation in the app's OpenAPI schema."""
    if _state.get("routes_of") is not app:
        table = []
        for path, ops in app.openapi()["paths"].items():
            pattern = re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path)) + "$")
            for method, op in ops.items():
                models = {}
                for status, resp in op.get("responses", {}).items():
                    ref = resp.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
                    if ref:
                        models[status] = ref.rsplit("/", 1)[1]
                table.append((method.upper(), pattern, path, models))
        _state["routes"], _state["routes_of"] = table, app
    return _state["routes"]


class _CheckedLines(httpx.SyncByteStream):
    """An NDJSON body whose lines are validated with ``model`` as they pass (the test still streams)."""

    def __init__(self, inner, model, key):
        self.inner, self.model, self.key = inner, model, key

    def __iter__(self):
        pending = b""
        for chunk in self.inner:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    self.model.model_validate_json(line)
                    CHECKED[self.key] += 1
            yield chunk
        if pending.strip():
            self.model.model_validate_json(pending)
            CHECKED[self.key] += 1

    def close(self):
        self.inner.close()


def check_answer(app, response: httpx.Response) -> None:
    """Validate an answer of ``app`` with the pydantic model its route declares (see the module docstring);
    raises pydantic's ``ValidationError`` when it does not match."""
    from backend import schemas

    method, path = response.request.method, response.request.url.path
    route = next((r for r in _routes(app) if r[0] == method and r[1].match(path)), None)
    key = (route[2] if route else path, response.status_code)
    kind = response.headers.get("content-type", "").split(";")[0]
    if kind == "application/x-ndjson":
        response.stream = _CheckedLines(response.stream, schemas.SampleEvent, key)
        return
    assert kind == "application/json", f"{key}: answer of type {kind!r}"
    response.read()
    name = route[3].get(str(response.status_code)) if route else None
    if response.status_code >= 400:
        name = name or "ErrorResponse"  # also the middleware's refusals (403, 413) and unknown paths
    elif name is None:  # the OpenAPI schema: no model of its own
        assert path == "/v1/openapi.json", key
        return
    getattr(schemas, name).model_validate_json(response.content)
    CHECKED[key] += 1


@dataclass
class Live:
    url: str
    token: str
    app: object

    def client(self, token: str | None = None, anonymous: bool = False, **kw) -> httpx.Client:
        """A client whose every answer is checked (:func:`check_answer`); ``anonymous``: no token sent."""
        headers = {**({} if anonymous else {"Authorization": f"Bearer {token or self.token}"}), **kw.pop("headers", {})}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0,
                            event_hooks={"response": [lambda r: check_answer(self.app, r)]}, **kw)


def start_server(jobs=None, registry=None) -> tuple[Live, object]:
    """A real uvicorn server on a free 127.0.0.1 port in a thread, serving ``registry`` (default: the small
    hand, body and hand-triples) with ``jobs`` (default: 2 workers, 32 jobs at most); returns it and a
    function that stops it."""
    from backend.jobs import Jobs
    from backend.registry import Registry
    from backend.server import bind, create_app

    d = models_dir()
    if "registry" not in _state:
        _state["registry"] = Registry.load([f"{n}={d / n}.safetensors" for n in ("hand", "body", "hand-triples")])
    app = create_app(registry or _state["registry"], TOKEN, jobs or Jobs(workers=2, max_jobs=32))
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)

    def stop():
        server.should_exit = True
        thread.join(10)

    return Live(f"http://127.0.0.1:{port}", TOKEN, app), stop


def live_server() -> Live:
    """The session's server (models hand, body, hand-triples; 2 workers)."""
    if "server" not in _state:
        live, stop = start_server()
        atexit.register(stop)
        _state["server"] = live
    return _state["server"]


@pytest.fixture(scope="module")
def server() -> Live:
    return live_server()


@pytest.fixture(scope="module")
def client(server: Live):
    with server.client() as c:
        yield c


# --- requests --------------------------------------------------------------------------------------------


def schema_of(skeleton: str):
    from training.motion.skeleton import get_schema

    return get_schema(skeleton)


def random_quats(rng: np.random.Generator, shape: tuple[int, ...], spread: float = 0.6) -> np.ndarray:
    """Unit quaternions (x, y, z, w) near identity, hemisphere w > 0."""
    from training.motion.rotations import axis_angle_to_quat

    q = axis_angle_to_quat(rng.normal(scale=spread, size=(*shape, 3)))
    return np.where(q[..., 3:] < 0, -q, q)


def smooth_quats(rng: np.random.Generator, frames: int, joints: int) -> np.ndarray:
    """(frames, joints, 4) curves turning smoothly between two random rotations."""
    from training.motion.rotations import axis_angle_to_quat

    a, b = rng.normal(scale=0.8, size=(2, joints, 3))
    u = np.linspace(0.0, 1.0, frames)[:, None, None]
    return axis_angle_to_quat(a * (1 - u) + b * u)


def fill_request(skeleton: str = "body", frames: int = 12, keys: tuple[int, ...] | None = None, data_seed: int = 0,
                 fmt: dict | None = None, model: str | None = None, **extra) -> dict:
    """A valid request: every joint listed, keys (default first 3 frames and the last) known, quaternions
    wxyz unless ``fmt`` (values are given in that format)."""
    from backend import convert
    from backend.schemas import FillRequest

    rng = np.random.default_rng(data_seed)
    schema = schema_of(skeleton)
    keys = keys if keys is not None else (0, 1, 2, frames - 1)
    q = smooth_quats(rng, frames, schema.n_joints)
    fmt = fmt or {"type": "quaternion", "layout": "wxyz"}
    fmt_model = FillRequest.model_validate({"model": "x", "fps": 30, "frames": [0], "joints": {"a": {}},
                                            "rotation_format": fmt}).rotation_format
    joints = {}
    for j, name in enumerate(schema.joints):
        values = convert.encode_track(q[:, j], fmt_model, np.zeros((frames, convert.width(fmt_model))),
                                      np.zeros(frames, dtype=bool))
        rots = [values[t].tolist() if t in keys else None for t in range(frames)]
        track = {"rotations": rots}
        if j in schema.moving:
            pos = rng.normal(size=(frames, 3)) + np.linspace(0, 1, frames)[:, None]
            track["translations"] = [pos[t].tolist() if t in keys else None for t in range(frames)]
        joints[name] = track
    body = {"model": model or skeleton, "fps": 30.0, "frames": list(range(frames)), "rotation_format": fmt,
            "joints": joints}
    body.update(extra)
    return body

"""The fill server's endpoints against a real uvicorn server on 127.0.0.1 (see backend_support)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import backend_support
import numpy as np
import pytest
from backend_support import fill_request, schema_of

from backend import convert
from backend.schemas import FillRequest, FillResponse, SampleResponse
from training.motion.rotations import quat_angle

server, client = backend_support.server, backend_support.client  # the session's live server

FORMATS = (
    [{"type": "quaternion", "layout": "wxyz"}, {"type": "quaternion", "layout": "xyzw"}]
    + [{"type": "euler", "order": o, "convention": c} for o in ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")
       for c in ("blender", "bvh")]
    + [{"type": "euler", "order": "ZXY", "units": "radians"}, {"type": "axis_angle"},
       {"type": "axis_angle", "units": "degrees"}, {"type": "rotation_vector"}]
)


def _fmt(d: dict):
    return FillRequest.model_validate({"model": "x", "fps": 30, "frames": [0], "joints": {"a": {}},
                                       "rotation_format": d}).rotation_format


def _quats(values: list, fmt: dict) -> np.ndarray:
    return convert.to_quat(np.array(values, dtype=np.float64), _fmt(fmt), normalize=True)


def test_health_needs_no_token(server):
    with server.client(anonymous=True) as anonymous:
        r = anonymous.get("/v1/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["api"] == "v1" and body["version"]
    assert set(body["models"]) == {"hand", "body", "hand-triples"}


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_servers_connections_send_answers_at_once(host):
    """Every connection the server accepts has Nagle's algorithm off (TCP_NODELAY), as asyncio sets it on the
    connections of a TCP socket: with it on, each small answer on a kept-alive connection (headers and body written
    apart) waited for the client's delayed ACK, 40 ms a request (a health check 44 ms, now 1.4 ms)."""
    import asyncio
    import socket

    from backend.server import bind

    async def accepted_nodelay() -> int:
        sock = bind(host, 0)
        accepted: asyncio.Future = asyncio.get_running_loop().create_future()
        server = await asyncio.start_server(lambda _r, w: accepted.set_result(w), sock=sock)
        _, client = await asyncio.open_connection(host, sock.getsockname()[1])
        conn = await asyncio.wait_for(accepted, 10)
        nodelay = conn.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        for w in (client, conn):
            w.close()
        server.close()
        await server.wait_closed()
        return nodelay

    try:
        assert asyncio.run(accepted_nodelay()) != 0
    except OSError as e:  # a machine without IPv6 on loopback
        pytest.skip(f"cannot listen on {host}: {e}")


def test_models_describe_skeletons(client):
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    body = models["body"]
    schema = schema_of("body")
    assert [j["name"] for j in body["joints"]] == list(schema.joints)
    assert [j["parent_index"] for j in body["joints"]] == list(schema.parents)
    assert body["joints"][2]["parent"] == "Hips" and body["joints"][0]["parent"] is None
    assert [j["name"] for j in body["joints"] if j["moving"]] == ["joint_Root", "Hips"]
    assert all(len(j["rest_offset"]) == 3 for j in body["joints"])
    assert body["root"] == "Hips" and body["up_axis"] == "y" and body["window_frames"] == 65
    assert body["rotations"]["default_quaternion_layout"] == "wxyz"
    assert set(body["rotations"]["euler_orders"]) == {"XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"}
    limits = body["limits"]
    assert limits["max_sample_frames"] == limits["max_frames"] == 2048 and limits["max_variations"] >= 8
    assert body["fps_range"][0] <= 30 <= body["fps_range"][1]
    assert models["hand-triples"]["variant"] == "triples" and models["hand"]["skeleton"] == "hand"


def test_fill_keeps_known_and_fills_targets(client):
    req = fill_request("body", frames=12)
    r = client.post("/v1/fill", json=req)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == "body" and out["frames"] == req["frames"] and out["id"]
    assert set(out["timings"]) >= {"total_ms", "model_ms", "queue_ms", "prepare_ms", "encode_ms"}
    assert out["timings"]["model_ms"] <= out["timings"]["total_ms"]
    for name, track in req["joints"].items():
        res = out["joints"][name]
        for t, given in enumerate(track["rotations"]):
            if given is not None:
                assert res["known"][t] and not res["target"][t]
                assert res["rotations"][t] == given  # exactly as sent
                assert res["uncertainty_deg"][t] is None
            else:
                assert res["target"][t] and len(res["rotations"][t]) == 4
                assert abs(np.linalg.norm(res["rotations"][t]) - 1) < 1e-9
                assert res["uncertainty_deg"][t] > 0 and np.isfinite(res["entropy"][t])
        if "translations" in track:
            assert res["translations"][0] == track["translations"][0]
            assert all(v is not None for v in res["translations"])
        else:
            assert res["translations"] is None


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: "-".join(str(v) for v in f.values()))
def test_rotation_formats_round_trip(client, fmt):
    """Known cells come back unchanged in every format and Euler order; filled cells are the same
    rotations as in the quaternion answer, and curves have no jumps."""
    ref = client.post("/v1/fill", json=fill_request("hand", frames=10, keys=(0, 1, 9))).json()
    req = fill_request("hand", frames=10, keys=(0, 1, 9), fmt=fmt)
    r = client.post("/v1/fill", json=req)
    assert r.status_code == 200, r.text
    out = r.json()
    for name, track in req["joints"].items():
        res = out["joints"][name]
        assert res["rotation_format"]["type"] == fmt["type"]
        for t in (0, 1, 9):
            np.testing.assert_allclose(res["rotations"][t], track["rotations"][t], atol=1e-5, rtol=0)
        got = _quats(res["rotations"], fmt)
        want = _quats(ref["joints"][name]["rotations"], {"type": "quaternion"})
        assert quat_angle(got, want).max() < 1e-6
        v = np.array(res["rotations"])
        if fmt["type"] == "euler":
            step = np.abs(np.diff(v, axis=0)).max()
            assert step < (180 if fmt.get("units", "degrees") == "degrees" else np.pi)  # no wrap-around


def test_mixed_formats_per_joint(client):
    req = fill_request("hand", frames=8)
    wrist = req["joints"]["WRIST"]
    q = np.array([r for r in wrist["rotations"] if r is not None])
    euler = {"type": "euler", "order": "YXZ"}
    e = convert.encode_track(convert.to_quat(q, _fmt({"type": "quaternion"}))[:, None], _fmt(euler),
                             np.zeros((len(q), 1, 3)), np.zeros(len(q), dtype=bool))[:, 0]
    it = iter(e.tolist())
    wrist["rotations"] = [next(it) if r is not None else None for r in wrist["rotations"]]
    wrist["rotation_format"] = euler
    out = client.post("/v1/fill", json=req).json()
    assert out["joints"]["WRIST"]["rotation_format"]["type"] == "euler"
    assert len(out["joints"]["WRIST"]["rotations"][4]) == 3
    assert out["joints"]["INDEX_MCP"]["rotation_format"]["type"] == "quaternion"
    assert out["joints"]["WRIST"]["rotations"][0] == wrist["rotations"][0]


def test_explicit_targets_and_partial_joints(client):
    req = fill_request("body", frames=10)
    keep = ["Hips", "Spine", "Chest", "UpperArm_L"]
    req["joints"] = {k: req["joints"][k] for k in keep}
    req["joints"]["Spine"]["targets"] = [4, 5]
    req["joints"]["Chest"]["targets"] = []
    out = client.post("/v1/fill", json=req).json()
    assert set(out["joints"]) == set(keep)
    spine = out["joints"]["Spine"]
    assert [t for t, v in enumerate(spine["target"]) if v] == [4, 5]
    assert spine["rotations"][3] is None and spine["rotations"][4] is not None
    assert not any(out["joints"]["Chest"]["target"])
    assert sum(out["joints"]["UpperArm_L"]["target"]) == 6


@pytest.mark.parametrize("frames", [2, 3])
def test_windows_of_two_and_three_frames_fill_and_sample(client, frames):
    """One joint keyed on the first and last frames of a 2- or 3-frame window (a partial key: the other joints are
    left to the model): filled and sampled (was a 422 quoting a numpy broadcasting error)."""
    q = [1.0, 0.0, 0.0, 0.0]
    req = {"model": "body", "fps": 30, "frames": list(range(frames)),
           "joints": {"Spine": {"rotations": [q] + [None] * (frames - 2) + [q]},
                      "Chest": {"rotations": [q] + [None] * (frames - 1)}}}
    for route in ("/v1/fill", "/v1/sample"):
        r = client.post(route, json=req)
        assert r.status_code == 200, (route, r.text)
        out = r.json() if route == "/v1/fill" else r.json()["variations"][0]
        chest = out["joints"]["Chest"]["rotations"]
        assert chest[0] == q and all(np.isfinite(v).all() for v in chest)


def test_long_window_and_uneven_frames(client):
    req = fill_request("hand", frames=90, keys=(0, 1, 2, 40, 89))
    req["frames"] = [f * 2 + (0.5 if f % 7 == 0 else 0) for f in range(90)]
    req["fps"] = 60
    r = client.post("/v1/fill", json=req)
    assert r.status_code == 200, r.text
    assert all(v is not None for v in r.json()["joints"]["PINKY_DIP_FE"]["rotations"])


def test_the_answer_says_when_a_window_was_filled_at_another_rate(client):
    """A 120 fps window is filled at the highest rate the model was trained at, and the answer says so; a window
    at a trained rate is filled at its own frames and says nothing."""
    lo, hi = next(m for m in client.get("/v1/models").json()["models"] if m["name"] == "body")["fps_range"]
    req = fill_request("body", frames=60, keys=(0, 20, 40, 59))
    req["fps"] = 120
    out = client.post("/v1/fill", json=req).json()
    assert out["resampled"] == {"window_fps": pytest.approx(120.0), "filled_fps": pytest.approx(hi)}
    assert all(v is not None for v in out["joints"]["Spine"]["rotations"])
    req["fps"] = lo
    assert client.post("/v1/fill", json=req).json()["resampled"] is None


def test_a_long_fill_reports_its_progress_in_its_job(client):
    """A fill longer than the model's window tells ``GET /v1/jobs/{id}`` the frames it has committed."""
    r = client.post("/v1/fill", json=fill_request("body", frames=200, keys=tuple(range(0, 200, 10)) + (199,),
                                                  id="long-fill"))
    assert r.status_code == 200
    status = client.get("/v1/jobs/long-fill").json()
    assert status["state"] == "done" and status["kind"] == "fill"
    assert 0 < status["total"] <= 200 and status["done"] == status["total"]


def test_sample_variations(client):
    req = fill_request("hand", frames=6, keys=(0, 5), k=40, n=3, seed=7, order="lowest-entropy")
    a = client.post("/v1/sample", json=req)
    assert a.status_code == 200, a.text
    a = a.json()
    assert len(a["variations"]) == 3 and a["order"] == "lowest-entropy" and a["seed"] == 7
    b = client.post("/v1/sample", json=req).json()
    va = [np.array(v["joints"]["INDEX_MCP"]["rotations"][1:5]) for v in a["variations"]]
    vb = [np.array(v["joints"]["INDEX_MCP"]["rotations"][1:5]) for v in b["variations"]]
    np.testing.assert_allclose(va[0], vb[0])  # same seed, same draw
    assert np.abs(va[0] - va[1]).max() > 1e-6  # variations differ
    for v in a["variations"]:
        assert v["joints"]["WRIST"]["rotations"][0] == req["joints"]["WRIST"]["rotations"][0]


def test_sample_a_shot_longer_than_the_window_and_a_60_fps_one(client):
    """Variations of any length (window by window, as a fill) and at any rate (drawn at a trained rate, carried
    back to the request's frames, the answer saying so); a triples model names its limit."""
    keys = tuple(range(0, 100, 10)) + (99,)
    r = client.post("/v1/sample", json=fill_request("hand", frames=100, keys=keys, k=50, n=2, seed=1))
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["variations"]) == 2 and body["resampled"] is None
    tracks = [v["joints"]["INDEX_MCP"]["rotations"] for v in body["variations"]]
    assert all(len(t) == 100 and all(q is not None for q in t) for t in tracks)
    assert np.abs(np.array(tracks[0]) - np.array(tracks[1])).max() > 1e-6
    r = client.post("/v1/sample", json=fill_request("hand", frames=61, keys=(0, 20, 40, 60), k=50, n=2, fps=60.0))
    assert r.status_code == 200, r.text
    assert r.json()["resampled"]["window_fps"] == pytest.approx(60.0) and r.json()["resampled"]["filled_fps"] <= 40
    r = client.post("/v1/sample", json=fill_request("hand", frames=100, keys=keys, k=50, model="hand-triples"))
    assert r.status_code == 422 and "query model" in r.json()["error"], r.text


def test_every_kind_of_answer_holds_to_its_response_model(client):
    """Answers are written without FastAPI's validation (:func:`backend.routes.common.json_answer`): each kind,
    one window or a long one, at its own rate or resampled, any rotation format, with a joint above the root
    folded in, validates against its response model and answers the frames and joints it was asked for."""
    euler = {"type": "euler", "order": "ZXY", "units": "degrees"}
    body = fill_request("body", frames=40, keys=(0, 1, 2, 39))
    del body["joints"]["joint_Root"]  # keyed at rest by the server and folded into the hips' answer
    fills = [body, fill_request("hand", frames=20, fmt=euler), fill_request("body", frames=150, keys=(0, 70, 149)),
             fill_request("hand", frames=61, keys=(0, 20, 40, 60), fps=60.0)]
    for req in fills:
        r = client.post("/v1/fill", json=req)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
        answer = FillResponse.model_validate(r.json())
        assert answer.frames == req["frames"] and set(answer.joints) == set(req["joints"])
        assert (answer.resampled is not None) == (req["fps"] == 60.0)
    for extra in ({}, {"frames": 61, "keys": (0, 20, 40, 60), "fps": 60.0}):
        req = fill_request("hand", **{"frames": 8, "keys": (0, 7), "k": 17, "n": 2, "seed": 3, **extra})
        r = client.post("/v1/sample", json=req)
        assert r.status_code == 200, r.text
        answer = SampleResponse.model_validate(r.json())
        assert len(answer.variations) == 2 and answer.seed == 3


def test_sample_triples_model_and_stream(client):
    req = fill_request("hand", frames=6, keys=(0, 5), model="hand-triples", k=1, n=2, stream=True)
    events = []
    with client.stream("POST", "/v1/sample", json=req) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        events = [json.loads(line) for line in r.iter_lines() if line]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "result" and "progress" in kinds
    last = [e for e in events if e["event"] == "progress"][-1]
    assert last["done"] == last["total"] == 4  # triples variant: one frame per step
    assert len({e["id"] for e in events}) == 1
    assert len(events[-1]["result"]["variations"]) == 2
    assert events[-1]["result"]["order"] == "lowest-entropy"  # the default order: most certain first


def _slow_sample(job_id: str) -> dict:
    return fill_request("body", frames=40, keys=(0, 39), k=1, n=4, id=job_id)


def _wait_state(client, job_id: str, states: set[str], timeout: float = 30) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = client.get(f"/v1/jobs/{job_id}")
        if r.status_code == 200 and r.json()["state"] in states:
            return r.json()
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {states}")


def test_cancel_running_sample(server, client):
    answer = {}

    def run():
        with server.client() as c:
            answer["r"] = c.post("/v1/sample", json=_slow_sample("cancel-me"))

    th = threading.Thread(target=run)
    th.start()
    status = _wait_state(client, "cancel-me", {"running"})
    assert status["kind"] == "sample"
    _wait_until_progress(client, "cancel-me")
    c = client.post("/v1/jobs/cancel-me/cancel")
    assert c.status_code == 200 and c.json()["cancelled"] is True
    th.join(30)
    assert answer["r"].status_code == 409 and "cancelled" in answer["r"].json()["error"]
    final = client.get("/v1/jobs/cancel-me").json()
    assert final["state"] == "cancelled" and final["done"] < final["total"]
    assert client.post("/v1/jobs/cancel-me/cancel").json()["cancelled"] is False
    assert client.post("/v1/fill", json=fill_request("hand", frames=5)).status_code == 200


def _wait_until_progress(client, job_id: str) -> None:
    deadline = time.time() + 30
    while client.get(f"/v1/jobs/{job_id}").json()["done"] == 0 and time.time() < deadline:
        time.sleep(0.02)


def test_disconnect_cancels_streamed_sample(server, client):
    req = _slow_sample("leaver")
    req["stream"] = True
    with server.client() as c, c.stream("POST", "/v1/sample", json=req) as r:
        first = json.loads(next(r.iter_lines()))
        assert first["event"] == "started" and first["id"] == "leaver"
    final = _wait_state(client, "leaver", {"cancelled", "done"})
    assert final["state"] == "cancelled"


def test_disconnect_cancels_plain_sample(server, client):
    import httpx

    def run():
        try:
            with server.client() as c:
                c.post("/v1/sample", json=_slow_sample("gone"), timeout=httpx.Timeout(60, read=1.5))
        except httpx.ReadTimeout:
            pass  # the client gives up and closes the connection

    th = threading.Thread(target=run)
    th.start()
    th.join(30)
    assert _wait_state(client, "gone", {"cancelled", "done"})["state"] == "cancelled"


def test_eight_concurrent_clients_get_their_own_answers(server, client):
    reqs = [fill_request("body" if i % 2 else "hand", frames=10 + i, data_seed=100 + i) for i in range(8)]
    expected = [client.post("/v1/fill", json=q).json() for q in reqs]
    got: list = [None] * 8
    barrier = threading.Barrier(8)

    def run(i):
        with server.client() as c:
            barrier.wait()
            got[i] = c.post("/v1/fill", json=reqs[i]).json()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    for e, g in zip(expected, got, strict=True):
        assert g["frames"] == e["frames"] and g["model"] == e["model"] and g["id"] != e["id"]
        for name in e["joints"]:
            np.testing.assert_allclose(np.array(g["joints"][name]["rotations"], dtype=float),
                                       np.array(e["joints"][name]["rotations"], dtype=float), atol=1e-6)  # float32


def test_concurrent_windows_of_one_shape_are_filled_together_as_alone(server, client):
    """Concurrent one-window fills of one model and length wait for one engine call together: each client gets
    its own window's answer, as it gets it alone (to float32 rounding: a batch of unequal windows runs padded),
    a request the engine refuses fails alone, and a long window beside them is filled on its own."""
    keys = [(0, 1, 2, 29), (0, 10, 20, 29), (0, 29), (0, 5, 29)]
    reqs = [fill_request("body", frames=30, keys=keys[i % 4], data_seed=200 + i) for i in range(6)]
    reqs.append(fill_request("body", frames=150, keys=(0, 70, 149), data_seed=7))
    expected = [client.post("/v1/fill", json=q).json() for q in reqs]
    bad = fill_request("body", frames=30, data_seed=9)
    bad["frames"] = [f * 1000 for f in bad["frames"]]  # 1000 s apart: the engine refuses the frame rate
    reqs.append(bad)
    got: list = [None] * len(reqs)
    barrier = threading.Barrier(len(reqs))

    def run(i):
        with server.client() as c:
            barrier.wait()
            got[i] = c.post("/v1/fill", json=reqs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(reqs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert got[-1].status_code == 422 and got[-1].json()["field"] == "frames", got[-1].text
    for e, g in zip(expected, got, strict=False):
        assert g.status_code == 200, g.text
        g = g.json()
        for name in e["joints"]:
            for part in ("rotations", "translations"):
                a, b = e["joints"][name][part], g["joints"][name][part]
                if a is not None:
                    np.testing.assert_allclose(np.array(b, dtype=float), np.array(a, dtype=float), atol=1e-5)


def test_a_stack_the_engine_refuses_is_filled_window_by_window(server):
    """If the engine refuses a stack of waiting windows, each is filled alone: the error reaches its own request
    only, the others get the answer they would get alone."""
    from backend import grid
    from backend.errors import RequestError
    from backend.routes.fill import _fill_batch

    registry = server.app.state.registry
    good, bad = (grid.prepare(FillRequest.model_validate(fill_request("body", frames=30, data_seed=s)), registry)
                 for s in (1, 2))
    bad.known[:] = False  # nothing known: the engine refuses the window, and so the stack
    out = list(_fill_batch([good, bad]))
    assert isinstance(out[1], RequestError) and "at least one known cell" in str(out[1])
    assert out[0][0] == next(_fill_batch([good]))[0]


def test_openapi_contract(server):
    """The served schema is the contract: key paths and fields, and docs/openapi.json is up to date."""

    from backend.openapi import dumps

    with server.client(anonymous=True) as anonymous:
        spec = anonymous.get("/v1/openapi.json").json()
    paths = spec["paths"]
    assert {"/v1/health", "/v1/models", "/v1/fill", "/v1/sample", "/v1/jobs/{job_id}",
            "/v1/jobs/{job_id}/cancel"} <= set(paths)
    assert "post" in paths["/v1/fill"] and "422" in paths["/v1/fill"]["post"]["responses"]
    s = spec["components"]["schemas"]
    assert {"model", "fps", "frames", "joints", "rotation_format", "id"} <= set(s["FillRequest"]["properties"])
    assert {"order", "k", "temperature", "seed", "n", "stream"} <= set(s["SampleRequest"]["properties"])
    assert {"rotations", "translations", "offset", "targets", "rotation_format"} <= set(s["JointTrack"]["properties"])
    assert {"rotations", "translations", "known", "target", "uncertainty_deg"} <= set(s["JointResult"]["properties"])
    assert {"total_ms", "model_ms"} <= set(s["Timings"]["properties"])
    assert set(s["EulerFormat"]["properties"]["order"]["enum"]) == {"XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"}
    assert {"wxyz", "xyzw"} == set(s["QuaternionFormat"]["properties"]["layout"]["enum"])
    committed = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"
    assert committed.read_text() == dumps(), "docs/openapi.json is stale: run `make openapi`"


def test_every_answer_is_checked_against_its_response_model(server, client):
    """The session's test clients validate each answer with its route's pydantic model (backend_support's
    response hook): every route, its errors and each streamed line; an answer that strays from its model
    fails the test that received it."""
    import httpx
    import pydantic

    before = backend_support.CHECKED.copy()
    client.get("/v1/health")
    client.get("/v1/models")
    client.post("/v1/fill", json=fill_request("hand", frames=5, id="checked"))
    client.get("/v1/jobs/checked")
    client.post("/v1/jobs/checked/cancel")
    client.post("/v1/sample", json=fill_request("hand", frames=5, k=100))
    with client.stream("POST", "/v1/sample", json=fill_request("hand", frames=5, k=100, stream=True)) as r:
        lines = [line for line in r.iter_lines() if line]
    client.post("/v1/fill", json={"model": "hand"})
    with server.client(anonymous=True) as anonymous:
        anonymous.get("/v1/models")
    grew = backend_support.CHECKED - before
    assert {("/v1/health", 200), ("/v1/models", 200), ("/v1/fill", 200), ("/v1/jobs/{job_id}", 200),
            ("/v1/jobs/{job_id}/cancel", 200), ("/v1/fill", 422), ("/v1/models", 401)} <= set(grew)
    assert grew[("/v1/sample", 200)] == 1 + len(lines)  # the plain answer and each streamed event
    # an answer with a field its model does not have, or a missing one, is caught
    req = httpx.Request("GET", f"{server.url}/v1/health")
    for bad in ({"status": "ok", "api": "v1", "version": "1", "models": [], "extra": 1}, {"status": "ok"}):
        with pytest.raises(pydantic.ValidationError):
            backend_support.check_answer(server.app, httpx.Response(200, json=bad, request=req))


def test_busy_server_says_how_many_run_and_wait():
    """With every place taken (1 worker, 3 jobs at most), the next request gets 503 and a message that
    counts the running and the waiting jobs apart."""
    from backend.jobs import Jobs

    live, stop = backend_support.start_server(Jobs(workers=1, max_jobs=3))
    try:
        threads = []
        for i in range(3):
            def run(i=i):
                with live.client() as c:
                    c.post("/v1/sample", json=_slow_sample(f"busy{i}"))

            threads.append(threading.Thread(target=run))
            threads[-1].start()
        with live.client() as c:
            deadline = time.time() + 30
            while time.time() < deadline:
                states = [c.get(f"/v1/jobs/busy{i}").json().get("state") or "" for i in range(3)]
                if sorted(states) == ["queued", "queued", "running"]:
                    break
                time.sleep(0.02)
            assert sorted(states) == ["queued", "queued", "running"], states
            r = c.post("/v1/fill", json=fill_request("hand", frames=5))
            assert r.status_code == 503, r.text
            assert "1 running, 2 waiting" in r.json()["error"], r.json()
            for i in range(3):
                c.post(f"/v1/jobs/busy{i}/cancel")
        for th in threads:
            th.join(30)
    finally:
        stop()


@pytest.mark.slow
def test_the_documented_request_fills_without_a_jump_into_its_keys():
    """docs/backend.md's example request, sent to a real server with the shipped body: the filled Hips path
    arrives at the last key at the speed it moves between the filled frames (the body's joint_Root, which the
    example leaves out, is held at the origin, so the Hips' local translation cannot wander)."""
    import re

    import httpx
    from backend_support import TOKEN, start_server

    from backend.registry import Registry

    text = (Path(__file__).resolve().parents[1] / "docs" / "backend.md").read_text()
    body = json.loads(re.findall(r"```json\n(.*?)```", text, re.S)[0])
    live, stop = start_server(registry=Registry.load(["body"]))
    try:
        r = httpx.post(f"{live.url}/v1/fill", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    finally:
        stop()
    assert r.status_code == 200, r.text
    t = np.array(r.json()["joints"]["Hips"]["translations"], dtype=float)
    steps = np.linalg.norm(np.diff(t, axis=0), axis=1)
    inside = steps[1:-1]
    assert steps[-1] <= 1.5 * inside.max() and steps[0] <= 2.5 * inside.max(), steps

"""Bad requests get a 4xx naming the field (never a 500) and the server keeps serving; token, Origin, Host
and size checks."""

from __future__ import annotations

import copy
import json

import backend_support
import pytest
from backend_support import fill_request

server, client = backend_support.server, backend_support.client  # the session's live server

@pytest.fixture(autouse=True)
def still_serving(client):
    yield
    assert client.get("/v1/health").status_code == 200


def _set(req: dict, path: str, value) -> dict:
    """``_set(req, "joints.Hips.rotations.0", v)``; value ``...`` deletes the key."""
    req = copy.deepcopy(req)
    *parents, last = path.split(".")
    node = req
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    key = int(last) if isinstance(node, list) else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return req


BASE = fill_request("body", frames=8, keys=(0, 1, 7))
HIPS_ROT = "joints.Hips.rotations"

# (name, mutated request, expected status, text the field must contain)
BAD = [
    ("unknown model", _set(BASE, "model", "dragon"), 422, "model"),
    ("unknown joint", _set(BASE, "joints.Tail", {"rotations": None}), 422, "joints.Tail"),
    ("rotations one short", _set(BASE, HIPS_ROT, BASE["joints"]["Hips"]["rotations"][:-1]), 422, HIPS_ROT),
    ("quaternion of 3", _set(BASE, f"{HIPS_ROT}.1", [1.0, 0.0, 0.0]), 422, f"{HIPS_ROT}[1]"),
    ("quaternion of 5", _set(BASE, f"{HIPS_ROT}.1", [1.0, 0, 0, 0, 0]), 422, f"{HIPS_ROT}[1]"),
    ("non-unit quaternion", _set(BASE, f"{HIPS_ROT}.1", [2.0, 0.0, 0.0, 0.0]), 422, f"{HIPS_ROT}[1]"),
    ("zero quaternion", _set(_set(BASE, "normalize_quaternions", True), f"{HIPS_ROT}.0", [0.0, 0, 0, 0]), 422,
     f"{HIPS_ROT}[0]"),
    # the joints of one rotation format are converted in one call: a bad value still names its own joint and row
    ("non-unit quaternion, a later joint's last key", _set(BASE, "joints.Chest.rotations.7", [0.0, 2.0, 0, 0]), 422,
     "joints.Chest.rotations[7]"),
    ("non-unit quaternion, the last joint's first key", _set(BASE, "joints.Toes_R.rotations.0", [0.5, 0, 0, 0]), 422,
     "joints.Toes_R.rotations[0]"),
    ("string in rotation", _set(BASE, f"{HIPS_ROT}.0", ["a", 0, 0, 1]), 422, f"{HIPS_ROT}[0]"),
    ("rotation not a list", _set(BASE, f"{HIPS_ROT}.0", 1.0), 422, f"{HIPS_ROT}[0]"),
    ("duplicate frames", _set(BASE, "frames", [0, 1, 2, 3, 3, 5, 6, 7]), 422, "frames[4]"),
    ("unordered frames", _set(BASE, "frames", [0, 1, 2, 4, 3, 5, 6, 7]), 422, "frames[4]"),
    # one frame to Blender and the extension (keys within 0.001 of each other are one key): was filled as two
    ("frames a billionth apart", _set(BASE, "frames", [0, 1, 2, 3, 3 + 1e-9, 5, 6, 7]), 422, "frames[4]"),
    ("frames a thousandth apart", _set(BASE, "frames", [0, 1, 1.001, 3, 4, 5, 6, 7]), 422, "frames[2]"),
    ("no frames", _set(BASE, "frames", []), 422, "frames"),
    ("too many frames", _set(BASE, "frames", list(range(2049))), 422, "frames"),
    ("fps zero", _set(BASE, "fps", 0), 422, "fps"),
    ("window too long in time", _set(BASE, "frames", [0, 1, 2, 3, 4, 5, 6, 1e8]), 422, "frames"),
    ("fps negative", _set(BASE, "fps", -30), 422, "fps"),
    ("fps huge", _set(BASE, "fps", 1e9), 422, "fps"),
    ("fps missing", _set(BASE, "fps", ...), 422, "fps"),
    ("fps string", _set(BASE, "fps", "thirty"), 422, "fps"),
    ("target also known", _set(BASE, "joints.Spine.targets", [2, 1]), 422, "joints.Spine.targets[1]"),
    ("target not a frame", _set(BASE, "joints.Spine.targets", [2.5]), 422, "joints.Spine.targets[0]"),
    # a frame listed twice is a client's mistake (a frame meant and another sent), refused as repeated frames are
    ("target listed twice", _set(BASE, "joints.Spine.targets", [3, 4, 3]), 422, "joints.Spine.targets[2]"),
    ("target listed twice, once as a float", _set(BASE, "joints.Spine.targets", [5, 5.0]), 422,
     "joints.Spine.targets[1]"),
    ("no known cells", {**BASE, "joints": {"Spine": {"rotations": None}}}, 422, "joints"),
    ("no targets", {**BASE, "joints": {"Spine": {**BASE["joints"]["Spine"], "targets": []}}}, 422, "joints"),
    ("no joints", _set(BASE, "joints", {}), 422, "joints"),
    ("moving joint without translations", _set(BASE, "joints.Hips.translations", ...), 422,
     "joints.Hips.translations"),
    ("translation without rotation", _set(BASE, "joints.Hips.translations.3", [0, 0, 0]), 422,
     "joints.Hips.translations[3]"),
    ("rotation without translation", _set(BASE, "joints.Hips.translations.0", None), 422,
     "joints.Hips.translations[0]"),
    ("translation of 2", _set(BASE, "joints.Hips.translations.0", [0, 0]), 422, "joints.Hips.translations[0]"),
    ("translations on a fixed joint", _set(BASE, "joints.Spine.translations", [None] * 8), 422,
     "joints.Spine.translations"),
    ("offset on a moving joint", _set(BASE, "joints.Hips.offset", [0, 0, 0]), 422, "joints.Hips.offset"),
    ("offset of 2", _set(BASE, "joints.Spine.offset", [1, 2]), 422, "joints.Spine.offset"),
    ("bad Euler order", _set(BASE, "rotation_format", {"type": "euler", "order": "XXY"}), 422, "rotation_format"),
    ("unknown format", _set(BASE, "rotation_format", {"type": "matrix"}), 422, "rotation_format"),
    ("unknown quaternion layout", _set(BASE, "rotation_format", {"type": "quaternion", "layout": "wzyx"}), 422,
     "rotation_format"),
    ("Euler values as quaternion", _set(BASE, "joints.Spine.rotation_format", {"type": "euler"}), 422,
     "joints.Spine.rotations[0]"),
    ("axis-angle zero axis", _set(_set(BASE, "joints.Spine.rotation_format", {"type": "axis_angle"}),
                                  "joints.Spine.rotations", [[1.0, 0, 0, 0]] + [None] * 7), 422,
     "joints.Spine.rotations[0]"),
    ("extra field", _set(BASE, "colour", "red"), 422, "colour"),
    ("extra joint field", _set(BASE, "joints.Spine.euler", True), 422, "joints.Spine.euler"),
    ("bad id", _set(BASE, "id", "no spaces allowed"), 422, "id"),
    ("model not a string", _set(BASE, "model", 3), 422, "model"),
    ("joints a list", _set(BASE, "joints", [1, 2]), 422, "joints"),
    ("boolean in rotation", _set(BASE, f"{HIPS_ROT}.0", [True, 0, 0, 0]), 422, f"{HIPS_ROT}[0][0]"),
    ("boolean in translation", _set(BASE, "joints.Hips.translations.0", [0, False, 0]), 422,
     "joints.Hips.translations[0][1]"),
    ("boolean frame", _set(BASE, "frames.0", False), 422, "frames[0]"),
    ("boolean fps", _set(BASE, "fps", True), 422, "fps"),
    ("numeric string", _set(BASE, f"{HIPS_ROT}.0", ["1", 0, 0, 0]), 422, f"{HIPS_ROT}[0][0]"),
    ("normalize_quaternions a string", _set(BASE, "normalize_quaternions", "yes"), 422, "normalize_quaternions"),
    ("normalize_quaternions a number", _set(BASE, "normalize_quaternions", 1), 422, "normalize_quaternions"),
    # 8 frames 250 s apart: within the time span allowed, but 42,000 frames at a trained rate
    ("frames too far apart for a trained rate", _set(BASE, "fps", 0.004), 422, "frames"),
]


@pytest.mark.parametrize(("req", "status", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_fill_requests(client, req, status, field):
    r = client.post("/v1/fill", json=req)
    assert r.status_code == status, r.text
    body = r.json()
    assert field in body["field"] and field in body["error"], body


def test_a_target_listed_twice_is_named_with_both_places(client):
    r = client.post("/v1/fill", json=_set(BASE, "joints.Spine.targets", [3, 4, 3]))
    assert r.status_code == 422 and r.json()["error"] == ("joints.Spine.targets[2]: frame 3 is listed twice "
                                                          "(targets[0] and targets[2]): list each target once"), r.text


@pytest.mark.parametrize("path", ["/v1/fill", "/v1/sample"])
def test_frames_closer_than_a_thousandth_are_refused_naming_both(client, path):
    """Two frames closer than the extension's EPS_FRAME are one frame: refused naming both, never filled as two keys
    (a key at 3 and another at 3.000000001 were a 200)."""
    r = client.post(path, json=_set(BASE, "frames", [0, 1, 2, 3, 3.000000001, 5, 6, 7]))
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "frames[4]"
    assert r.json()["error"] == ("frames[4]: frame 3.000000001 is 1e-09 frames after frame 3: frames must be more "
                                 "than 0.001 apart (closer ones are one frame, as Blender's extension reads them); "
                                 "send it once")
    # subframes further apart are frames of their own
    assert client.post(path, json=_set(BASE, "frames", [0, 0.5, 2, 3, 3.0015, 5, 6, 7])).status_code == 200


def test_valid_base_request_passes(client):
    assert client.post("/v1/fill", json=BASE).status_code == 200


def test_integer_rotations_are_numbers(client):
    req = _set(_set(BASE, f"{HIPS_ROT}.0", [1, 0, 0, 0]), "fps", 30)
    r = client.post("/v1/fill", json=req)
    assert r.status_code == 200, r.text
    assert r.json()["joints"]["Hips"]["rotations"][0] == [1, 0, 0, 0]


def test_normalize_quaternions_accepts_scaled(client):
    req = _set(BASE, "normalize_quaternions", True)
    q = req["joints"]["Hips"]["rotations"][1]
    req["joints"]["Hips"]["rotations"][1] = [2 * v for v in q]
    r = client.post("/v1/fill", json=req)
    assert r.status_code == 200, r.text
    assert r.json()["joints"]["Hips"]["rotations"][1] == [2 * v for v in q]  # known cells come back as given


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(("where", "field"), [
    (f"{HIPS_ROT}.0.1", f"{HIPS_ROT}[0]"), ("joints.Hips.translations.0.2", "joints.Hips.translations[0]"),
    ("fps", "fps"), ("frames.2", "frames[2]"), ("joints.Spine.offset.0", "joints.Spine.offset[0]"),
])
def test_non_finite_values(client, token, where, field):
    req = _set(BASE, "joints.Spine.offset", [1.0, 2.0, 3.0]) if "offset" in where else BASE
    text = json.dumps(_set(req, where, 12345.678)).replace("12345.678", token)
    r = client.post("/v1/fill", content=text, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith(field), r.json()


BAD_SAMPLE = [
    ("n zero", {"n": 0}, 422, "n"),
    ("n too large", {"n": 17}, 422, "n"),
    ("k zero", {"k": 0}, 422, "k"),
    ("negative temperature", {"temperature": -1}, 422, "temperature"),
    ("unknown order", {"order": "backward"}, 422, "order"),
    ("negative seed", {"seed": -1}, 422, "seed"),
    ("boolean n", {"n": True}, 422, "n"),
    ("fractional k", {"k": 1.5}, 422, "k"),
    ("stream a string", {"stream": "on"}, 422, "stream"),
    # 6 frames 50 s apart: 6,000 frames at a trained rate, a fill's grid but more than a sample's 2,048
    ("frames too far apart to sample", {"fps": 0.02}, 422, "frames"),
]


@pytest.mark.parametrize(("extra", "status", "field"), [b[1:] for b in BAD_SAMPLE], ids=[b[0] for b in BAD_SAMPLE])
def test_bad_sample_requests(client, extra, status, field):
    req = fill_request("hand", frames=6, **{"k": 50, **extra})
    r = client.post("/v1/sample", json=req)
    assert r.status_code == status, r.text
    assert r.json()["field"].startswith(field)


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b"null", b'"text"', b"\xff\xfe", b"{}" * 3])
def test_malformed_bodies(client, content):
    r = client.post("/v1/fill", content=content, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text


def test_wrong_content_type(client):
    r = client.post("/v1/fill", content=json.dumps(BASE), headers={"content-type": "text/plain"})
    assert 400 <= r.status_code < 500


def test_unknown_job(client):
    assert client.get("/v1/jobs/nope").status_code == 404
    r = client.post("/v1/jobs/nope/cancel")
    assert r.status_code == 404 and r.json()["field"] == "job_id"


def test_without_the_token_nothing_sent_is_read(server):
    """The token is checked before the body is read: a client without it gets 401 whatever it sent (an
    unreadable body, a large one, a repeated key), so it can make the server parse nothing."""
    bodies = [(b"{not json", "application/json"), (b'{"model": "a", "model": "b"}', "application/json"),
              (b"[" + b'{"a": 1}, ' * 200_000 + b"1]", "application/json"), (json.dumps(BASE).encode(), "text/plain")]
    with server.client(anonymous=True) as c:
        for content, kind in bodies:
            r = c.post("/v1/fill", content=content, headers={"content-type": kind})
            assert r.status_code == 401 and "token" in r.json()["error"], r.text
    with server.client() as c:  # with it, the same bodies get the errors that say what is wrong with them
        assert c.post("/v1/fill", content=bodies[0][0], headers={"content-type": "application/json"}).status_code == 422


def test_token_required(server):
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": server.token},
                    {"X-Anyfill-Token": "nope"}):
        with server.client(anonymous=True, headers=headers) as c:
            r = c.post("/v1/fill", json=BASE)
            assert r.status_code == 401, headers
            assert "token" in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
            assert c.get("/v1/models").status_code == 401
    with server.client(anonymous=True, headers={"X-Anyfill-Token": server.token}) as c:
        ok = c.get("/v1/models")
    assert ok.status_code == 200


def test_origin_refused(client):
    for path in ("/v1/health", "/v1/models"):
        for origin in ("https://evil.example", "null", "http://127.0.0.1:8765"):
            r = client.get(path, headers={"Origin": origin})
            assert r.status_code == 403 and "Origin" in r.json()["error"]
    r = client.post("/v1/fill", json=BASE, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403


@pytest.mark.parametrize("host", ["attacker.example:8765", "127.evil.example", "127.0.0.1.nip.io:8765", "127.1",
                                  "127.0.0.1:", "127.0.0.1:80x", "localhost.evil.example", "[::ffff:127.0.0.1]:80",
                                  "::1", "[::1", "0.0.0.0:8765", ""])
def test_foreign_host_refused(client, host):
    """Only loopback IP literals and localhost pass the Host check (DNS rebinding): a name that merely
    starts with 127. does not."""
    for path in ("/v1/health", "/v1/models"):
        r = client.get(path, headers={"Host": host})
        assert r.status_code == 403, (host, r.text)
        assert "Host" in r.json()["error"] and repr(host) in r.json()["error"]
    assert client.post("/v1/fill", json=BASE, headers={"Host": host}).status_code == 403


@pytest.mark.parametrize("host", ["localhost", "LocalHost:8765", "127.0.0.1", "127.0.0.1:8765", "127.254.3.1:1",
                                  "[::1]", "[::1]:8765"])
def test_loopback_hosts_pass(client, host):
    assert client.get("/v1/models", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(("content", "says"), [
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b'{"model": "\xc3\x28"}', "not valid UTF-8"),
    (b"[" * 1100 + b"]" * 1100, "nested deeper than 1024"),
    (b"hello", "not valid JSON"),
    (b"{}{}", "not valid JSON"),
    (b'{"model": "\\udfff"}', "surrogate"),  # a lone UTF-16 surrogate escape is not text (was a 500)
    (b'{"seed": ' + b"1" * 5000 + b"}", "more than 4300 digits"),  # was a 400 naming nothing
    (b'{"model": ', "not valid JSON"),
    (b'{"model": "body", "model": "hand"}', "the key 'model' appears twice"),  # a parser keeps the last silently
    (b'{"model": "body", "fps": 30, "frames": [0, 1], "joints": {"Hips": {}, "Spine": {}, "Hips": {}}}',
     "the key 'Hips' appears twice"),
    (b'{"model": "body", "fps": NaN, "fps": 30}', "the key 'fps' appears twice"),
])
def test_unreadable_bodies_get_422_saying_why(client, content, says):
    r = client.post("/v1/fill", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "body" and says in r.json()["error"], r.json()


def test_deeply_nested_json_is_refused_by_what_is_wrong(client):
    """1,000 levels (within the parser's limit): refused by validation, naming where, not as a parse error."""
    r = client.post("/v1/fill", content=b"[" * 1000 + b"]" * 1000, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "body" and "dictionary" in r.json()["error"], r.text
    nested = b'{"model": "body", "fps": 30, "frames": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    r = client.post("/v1/fill", content=nested, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"].startswith("frames"), r.text


@pytest.mark.parametrize(("headers", "content", "says"), [
    ({"content-type": "text/plain"}, json.dumps(BASE).encode(), "Content-Type: application/json"),
    ({}, json.dumps(BASE).encode(), "no Content-Type"),
    ({"content-type": "application/json"}, b"", "no body"),
])
def test_bodies_that_are_not_json(client, headers, content, says):
    r = client.post("/v1/fill", content=content, headers=headers)
    assert r.status_code == 422 and r.json()["field"] == "body" and says in r.json()["error"], r.text


def test_body_size_bounded(client):
    big = b'{"model": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    r = client.post("/v1/fill", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413

    def chunks():  # no Content-Length: counted while read
        for _ in range(10):
            yield b" " * (1024 * 1024)

    r = client.post("/v1/fill", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413

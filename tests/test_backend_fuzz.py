"""Property-based fuzz of the API from its OpenAPI schema (hypothesis): request bodies drawn from the
published request schemas (a small JSON-Schema-to-strategy translation below), with real model and joint
names mixed in so that validation gets past the first field, and arbitrary JSON. Bounded; never a 5xx."""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")

from backend_support import live_server, schema_of  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DROP = {"discriminator", "title", "description", "examples"}


def _inline(node, components: dict):
    """Resolve ``#/components/schemas/X`` references and drop annotations hypothesis-jsonschema rejects."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(components[node["$ref"].rsplit("/", 1)[1]], components)
        return {k: _inline(v, components) for k, v in node.items() if k not in DROP}
    if isinstance(node, list):
        return [_inline(v, components) for v in node]
    return node


JSON = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=5),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                    max_leaves=12)


def from_schema(n: dict) -> st.SearchStrategy:
    """Values valid for a (reference-free) JSON schema of the kinds pydantic emits; lists and dicts kept
    small (the limits themselves are tested elsewhere)."""
    if "const" in n:
        return st.just(n["const"])
    if "enum" in n:
        return st.sampled_from(n["enum"])
    for key in ("anyOf", "oneOf"):
        if key in n:
            return st.one_of([from_schema(x) for x in n[key]])
    t = n.get("type")
    if t == "null":
        return st.none()
    if t == "boolean":
        return st.booleans()
    if t == "integer":
        return st.integers(n.get("minimum", -(2**40)), n.get("maximum", 2**40))
    if t == "number":
        lo, hi = n.get("minimum", n.get("exclusiveMinimum")), n.get("maximum", n.get("exclusiveMaximum"))
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False,
                         exclude_min="exclusiveMinimum" in n, exclude_max="exclusiveMaximum" in n)
    if t == "string" and "pattern" in n:
        return st.from_regex(n["pattern"], fullmatch=True)
    if t == "string":
        return st.text(min_size=n.get("minLength", 0), max_size=min(n.get("maxLength", 8), 8))
    if t == "array":
        lo = n.get("minItems", 0)
        return st.lists(from_schema(n.get("items", {})), min_size=lo, max_size=max(lo, min(n.get("maxItems", 6), 6)))
    if t == "object":
        props = n.get("properties", {})
        required = set(n.get("required", []))
        fixed = st.fixed_dictionaries({k: from_schema(v) for k, v in props.items() if k in required},
                                      optional={k: from_schema(v) for k, v in props.items() if k not in required})
        extra = n.get("additionalProperties")
        if isinstance(extra, dict):
            lo = n.get("minProperties", 0)
            return st.dictionaries(st.text(min_size=1, max_size=12), from_schema(extra), min_size=lo,
                                   max_size=max(lo, 3))
        return fixed
    return JSON


@pytest.fixture(scope="module")
def api():
    server = live_server()
    with server.client() as c:
        spec = c.get("/v1/openapi.json").json()
        yield c, spec["components"]["schemas"]


HAND = schema_of("hand").joints


def _realistic(body):
    """Point a schema-valid body at a real model and real joint names, and keep sampling cheap."""
    if isinstance(body, dict):
        body = dict(body, model="hand")
        if isinstance(body.get("frames"), list) and body["frames"]:
            body["frames"] = sorted(set(body["frames"]))
        if isinstance(body.get("joints"), dict):
            body["joints"] = {HAND[i % len(HAND)]: v for i, v in enumerate(body["joints"].values())}
        if "k" in body:
            body.update(k=4096, n=1, stream=False)
    return body


@pytest.mark.slow  # 4 to 6 s each
@pytest.mark.parametrize("path,name", [("/v1/fill", "FillRequest"), ("/v1/sample", "SampleRequest")])
def test_fuzz_request_schemas(api, path, name):
    client, components = api
    strategy = from_schema(_inline(components[name], components))

    @settings(max_examples=80, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(strategy, strategy.map(_realistic), JSON))
    def check(body):
        r = client.post(path, json=body)
        assert r.status_code < 500, (body, r.text)
        assert r.status_code == 200 or r.json()["error"]

    check()
    assert client.get("/v1/health").status_code == 200

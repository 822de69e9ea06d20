"""What the routers share: the app state as dependencies, the error answers each route documents, and
:class:`JSONRoute`, which reads request bodies so that every body the API cannot read gets the documented
422 with a message saying what is wrong (invalid UTF-8, malformed or too deeply nested JSON, an object that
repeats a key, no body, a body that is not JSON)."""

from __future__ import annotations

import contextlib
import email.message
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from backend.auth import check_token, require_token
from backend.errors import RequestError
from backend.jobs import Jobs
from backend.registry import Registry
from backend.schemas import ErrorResponse

ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorResponse} for s in (401, 403, 404, 409, 413, 422, 503)}
MAX_JSON_DEPTH = 1024  # orjson's own limit: deeper nesting is refused as malformed JSON


def registry(request: Request) -> Registry:
    return request.app.state.registry


def jobs(request: Request) -> Jobs:
    return request.app.state.jobs


def json_answer(content: dict[str, Any]) -> Response:
    """An answer built to its route's response model, written as JSON by orjson. FastAPI would validate the dict
    against the model first: for a fill, every one of its thousands of numbers, which took an eighth of a busy
    server's time; the answers are built by one encoder and the tests validate each kind against its model."""
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def parse_json(body: bytes) -> Any:
    """A request body as JSON; :class:`json.JSONDecodeError` (which FastAPI answers as a 422 ``json_invalid``)
    with a message that says what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise json.JSONDecodeError(f"not valid UTF-8 (byte 0x{body[e.start]:02x} at offset {e.start})", "",
                                   e.start) from None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if "depth" in e.msg:
            raise json.JSONDecodeError(f"nested deeper than {MAX_JSON_DEPTH} levels", text, e.pos) from None
        error = e
    else:
        if body.count(b'"') > 2:  # an object with two keys or more: none may repeat
            with contextlib.suppress(RecursionError):  # deeper than the standard library reads: validation refuses it
                _load_unique(text)
        return value
    try:  # NaN and Infinity, which orjson refuses: parsed, so that validation names the field that holds them
        value = _load_unique(text)
    except RepeatedKey:
        raise
    except (json.JSONDecodeError, RecursionError):
        raise json.JSONDecodeError(error.msg, text, error.pos) from None
    except ValueError:  # an integer of more digits than Python converts
        raise json.JSONDecodeError(f"a number has more than {sys.get_int_max_str_digits()} digits", text,
                                   error.pos) from None
    try:  # a lone UTF-16 surrogate escape ("\\udfff"), which orjson refuses and json accepts, is not text
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise json.JSONDecodeError(error.msg, text, error.pos) from None
    return value


class RepeatedKey(json.JSONDecodeError):
    """A JSON object repeats a key. A parser keeps the last of them: a joint sent twice, or a setting, would be
    taken from one and silently drop the other."""


def _load_unique(text: str) -> Any:
    """``text`` parsed by the standard library, refusing (:class:`RepeatedKey`) an object that repeats a key
    (about 0.3 ms for a 65 x 22 body window, beside orjson's 0.05 for the parse itself)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            seen: set[str] = set()
            key = next(k for k, _ in pairs if k in seen or seen.add(k))
            raise RepeatedKey(f"the key {key!r} appears twice in one object; send each key once", text,
                              max(text.find(json.dumps(key)), 0))
        return out

    return json.loads(text, object_pairs_hook=unique)


LARGE_BODY = 256 * 1024  # bytes: a body this large is parsed on a worker thread, so the event loop goes on


class _JSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = parse_json(body) if len(body) < LARGE_BODY else await run_in_threadpool(parse_json, body)
        return self._json


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    m = email.message.Message()
    m["content-type"] = content_type
    sub = m.get_content_subtype()
    return m.get_content_maintype() == "application" and (sub == "json" or sub.endswith("+json"))


class JSONRoute(APIRoute):
    """A route whose JSON body is read by :func:`parse_json`; a route that takes a body refuses an empty
    one and one whose ``Content-Type`` is not JSON (422, field ``body``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None
        needs_token = any(d.dependency is require_token for d in self.dependencies)

        async def route_handler(request: Request) -> Response:
            request = _JSONRequest(request.scope, request.receive)
            if takes_body and needs_token:  # before the body is read: nothing sent without the token is parsed
                check_token(request)
            if takes_body:
                given = request.headers.get("content-type")
                if not _is_json(given):
                    got = f"got {given!r}" if given else "the request has no Content-Type"
                    raise RequestError("body", f"send JSON with 'Content-Type: application/json' ({got})")
                if not await request.body():
                    raise RequestError("body", "the request has no body: send a JSON object")
            return await handler(request)

        return route_handler

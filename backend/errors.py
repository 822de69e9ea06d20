"""Errors the API answers with: every bad request gets a 4xx whose message names the field, never a 500.

:class:`RequestError` is raised by validation (``field`` is a dotted path such as
``joints.Hips.rotations[3]``); the handlers installed by :func:`install` turn it, pydantic's validation
errors and anything unexpected into JSON ``{"error", "field", "detail"}`` answers.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("anyfill.backend")


class RequestError(Exception):
    """A request the server understood but cannot serve; ``status`` is a 4xx (or 503 when busy)."""

    def __init__(self, field: str | None, message: str, status: int = 422):
        super().__init__(f"{field}: {message}" if field else message)
        self.field, self.message, self.status = field, message, status


def field_path(loc) -> str:
    """``('body', 'joints', 'Hips', 'rotations', 3)`` -> ``joints.Hips.rotations[3]``."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def error_body(message: str, field: str | None = None, detail: list | None = None) -> dict:
    return {"error": message, "field": field, "detail": detail}


def _jsonable(errors: list[dict]) -> list[dict]:
    keep = ("type", "loc", "msg")
    return [{k: (list(e[k]) if k == "loc" else e[k]) for k in keep if k in e} for e in errors]


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    if first.get("type") == "json_invalid":  # loc is ("body", offset): the field is the body itself
        why = (first.get("ctx") or {}).get("error") or "malformed"
        pos = first["loc"][1] if len(first.get("loc", ())) > 1 else None
        where = f" (at offset {pos})" if isinstance(pos, int) and "offset" not in why else ""
        return JSONResponse(status_code=422, content=error_body(f"body: not valid JSON: {why}{where}", "body",
                                                                _jsonable(errors)))
    field = field_path(first.get("loc", ()))
    msg = first.get("msg", "invalid")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return JSONResponse(status_code=422, content=error_body(f"{field}: {msg}{more}", field, _jsonable(errors)))


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content=error_body(str(exc), exc.field))


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(status_code=exc.status_code, content=error_body(str(exc.detail)),
                        headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return JSONResponse(status_code=500, content=error_body(f"internal error: {type(exc).__name__}: {exc}"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)

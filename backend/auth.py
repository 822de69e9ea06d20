"""Security for a server on a desktop: a per-install token, no browser pages, bounded bodies.

* The token is created on first start in the user's config folder (``$XDG_CONFIG_HOME/anyfill/token``,
  else ``~/.config/anyfill/token``) with owner-only permissions (folder 0700, file 0600); clients read it
  from there and send ``Authorization: Bearer <token>`` on every request except ``GET /v1/health``
  (and the OpenAPI schema, which is public).
* A request with an ``Origin`` header comes from a web page and is refused (403), so a site open in a
  browser cannot drive the server; when bound to loopback, a ``Host`` other than a loopback name is
  refused too (DNS rebinding).
* Bodies over the limit are refused (413) before they are parsed.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from pathlib import Path

TOKEN_ENV = "ANYFILL_TOKEN_FILE"
OPEN_PATHS = frozenset({"/v1/health", "/v1/openapi.json"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "anyfill"


def token_path() -> Path:
    """Where the token lives (``$ANYFILL_TOKEN_FILE`` overrides, for tests and unusual set-ups)."""
    return Path(os.environ[TOKEN_ENV]) if os.environ.get(TOKEN_ENV) else config_dir() / "token"


def ensure_token(path: Path | None = None) -> str:
    """The install's token, created (owner-only) if it does not exist yet."""
    path = path or token_path()
    if path.is_file():
        token = path.read_text().strip()
        if len(token) >= 16:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
            return token
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    return token


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _host_name(value: str) -> str:
    if value.startswith("["):
        return value[: value.find("]") + 1]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware: Origin, Host, token and body-size checks before the application sees a request."""

    def __init__(self, app, token: str, max_body: int, loopback_only: bool = True):
        self.app, self.token, self.max_body, self.loopback_only = app, token.encode(), max_body, loopback_only

    async def _refuse(self, send, status: int, message: str, extra: list | None = None) -> None:
        body = json.dumps({"error": message, "field": None, "detail": None}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
        await send({"type": "http.response.body", "body": body})

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        auth = headers.get(b"authorization", b"")
        given = auth[7:].strip() if auth[:7].lower() == b"bearer " else headers.get(b"x-anyfill-token", b"")
        return bool(given) and hmac.compare_digest(given, self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if b"origin" in headers:
            return await self._refuse(send, 403, "requests from web pages (with an Origin header) are refused")
        host = _host_name(headers.get(b"host", b"").decode("latin-1"))
        if self.loopback_only and not is_loopback(host):
            return await self._refuse(send, 403, f"Host {host!r} is not a loopback address")
        if scope["path"] not in OPEN_PATHS and not self._authorised(headers):
            return await self._refuse(send, 401, "missing or wrong token: send 'Authorization: Bearer <token>' "
                                      f"with the token from {token_path()}",
                                      [(b"www-authenticate", b"Bearer")])
        try:
            length = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            return await self._refuse(send, 400, "bad Content-Length header")
        if length > self.max_body:
            return await self._refuse(send, 413, f"request body of {length} bytes exceeds {self.max_body}")
        # read the body here (bounded), then replay it: a chunked body cannot sneak past the limit
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await self._refuse(send, 413, f"request body exceeds {self.max_body} bytes")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

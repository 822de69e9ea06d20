"""Security for a server on a desktop: a per-install token, no browser pages, bounded bodies.

* The token is created on first start in the user's config folder (``$XDG_CONFIG_HOME/anyfill/token``,
  else ``~/.config/anyfill/token``) with owner-only permissions (folder 0700, file 0600). A file there that holds
  no usable token (too short, spaces inside, not text, unreadable) stops the start with a message saying how to fix
  it: it is never replaced, which would lock out every client configured with it. Clients read it
  from there and send ``Authorization: Bearer <token>`` on every request except ``GET /v1/health``
  (and the OpenAPI schema, which is public). :func:`require_token` is the FastAPI security dependency
  that checks it, so the OpenAPI contract shows the scheme.
* :class:`LocalOnly` (ASGI middleware, before anything else): a request with an ``Origin`` header comes
  from a web page and is refused (403), so a site open in a browser cannot drive the server; when bound
  to loopback, a ``Host`` that is not a loopback address or ``localhost`` is refused too (DNS
  rebinding); bodies over the limit are refused (413) before they are parsed.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

TOKEN_ENV = "ANYFILL_TOKEN_FILE"
log = logging.getLogger("anyfill.backend")
_PORT = re.compile(r":[0-9]{1,5}")


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "anyfill"


def token_path() -> Path:
    """Where the token lives (``$ANYFILL_TOKEN_FILE`` overrides, for tests and unusual set-ups)."""
    return Path(os.environ[TOKEN_ENV]) if os.environ.get(TOKEN_ENV) else config_dir() / "token"


MIN_TOKEN_CHARS = 16  # shorter is guessable by the other users of the machine, who can reach a loopback port
MAX_TOKEN_CHARS = 4096  # sent in a header with every request: a file this large is not a token
_TOKEN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what every client can send in a header unchanged


class TokenFileError(OSError):
    """The token file exists but holds no usable token (too short, whitespace or control characters inside, not
    text, unreadable, not a file). The server refuses to start rather than replace it: a client configured with
    what the file holds would stop working without a word, and whatever the user wrote there would be lost."""


def ensure_token(path: Path | None = None) -> str:
    """The install's token, created (owner-only) if the file does not exist yet (or holds nothing but
    whitespace: no client can hold an empty token, so nothing is lost; logged). A file that holds something that
    is not a usable token is never replaced: :class:`TokenFileError` names the file, what is wrong and the fix."""
    path = path or token_path()
    text = _read_token_file(path)
    if text is not None and text.strip():
        token = _check_token_text(text.strip(), path)
        if path.stat().st_mode & 0o077:
            try:
                path.chmod(0o600)
            except OSError as e:  # another user's file: its token is not this user's secret
                raise TokenFileError(f"the token file {path} can be read by other users and cannot be made "
                                     f"owner-only ({e.strerror or e}): run `chmod 600 {path}` as its owner") from None
        return token
    if text is not None:
        log.warning("anyfill: the token file %s was empty: wrote a new token there", path)
    return _write_new_token(path)


def _read_token_file(path: Path) -> str | None:
    """The token file's text, None when there is none. Refused (:class:`TokenFileError`): a path that is not a
    regular file (a directory; a FIFO, whose read would block the start; a link to nothing), one that cannot be
    read, or bytes that are not text."""
    fix = f"fix or remove it (a new token is then written there), or set {TOKEN_ENV} to another file"
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise TokenFileError(f"the token file {path} is a symbolic link to {os.readlink(path)}, which does not "
                                 f"exist: {fix}") from None
        return None
    except OSError as e:
        raise TokenFileError(f"cannot read the token file {path}: {e.strerror or e}; {fix}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, a device or a socket)"
        raise TokenFileError(f"the token file {path} is {kind}: {fix}")
    if st.st_size > MAX_TOKEN_CHARS + 2:  # a line end or two after the longest token
        raise TokenFileError(f"the token file {path} holds {st.st_size} bytes: a token is at most {MAX_TOKEN_CHARS} "
                             f"characters; {fix}")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise TokenFileError(f"the token file {path} is not text (not UTF-8): {fix}") from None
    except OSError as e:
        raise TokenFileError(f"cannot read the token file {path}: {e.strerror or e}; {fix}") from None


def _check_token_text(token: str, path: Path) -> str:
    """``token`` (the file's text, stripped) if a client can send it and it is long enough to resist guessing;
    otherwise :class:`TokenFileError` saying what is wrong and how to fix it."""
    fix = (f"write a token of at least {MIN_TOKEN_CHARS} visible ASCII characters (letters, digits, punctuation; "
           f"no spaces) there, e.g. `python -c \"import secrets; print(secrets.token_urlsafe(32))\" > {path}`, or "
           "remove the file to have a new one written (clients then need the new token)")
    bad = next((i for i, c in enumerate(token) if not _TOKEN.fullmatch(c)), None)
    if bad is not None:
        what = "whitespace" if token[bad].isspace() else f"the character {token[bad]!r}"
        raise TokenFileError(f"the token file {path} holds {what} inside the token (at character {bad + 1}): a "
                             f"client cannot send that in a header; {fix}")
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenFileError(f"the token file {path} holds a token of {len(token)} characters; at least "
                             f"{MIN_TOKEN_CHARS} are needed (a short token can be guessed); {fix}")
    return token


def _write_new_token(path: Path) -> str:
    """A new random token written to ``path`` (folder 0700, file 0600) through a temporary file, so a reader never
    sees half a token and a failure leaves nothing beside it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.replace(tmp, path)
    except OSError:  # (a directory where the token should be): no fresh token left lying beside it
        tmp.unlink(missing_ok=True)
        raise
    return token


def is_loopback(host: str) -> bool:
    """A loopback address (``127.0.0.0/8`` or ``::1``, as IP literals) or ``localhost``; anything else,
    ``127.evil.example`` included, is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host).is_loopback
    except ValueError:
        return False


def loopback_host_header(value: str) -> bool:
    """A ``Host`` header naming a loopback address or ``localhost``, with an optional ``:port``:
    ``127.0.0.1:8765``, ``localhost``, ``[::1]:8765``. The port, when given, is 1 to 5 digits."""
    if value.startswith("["):
        end = value.find("]")
        host, rest = value[: end + 1], value[end + 1 :]
        if end < 0:
            return False
    else:
        host, sep, port = value.partition(":")
        rest = sep + port
    return (not rest or _PORT.fullmatch(rest) is not None) and is_loopback(host)


# --- the token, as a FastAPI security dependency ----------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="the token from the token file (see docs/backend.md)")
_token_header = APIKeyHeader(name="X-Anyfill-Token", auto_error=False,
                             description="the same token, for clients that cannot send Authorization")


async def require_token(request: Request,
                        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
                        header: Annotated[str | None, Security(_token_header)]) -> None:
    """401 unless the request carries the server's token (``request.app.state.token``)."""
    _check(request, bearer.credentials if bearer is not None else header)


def check_token(request: Request) -> None:
    """:func:`require_token` from the headers alone, for a route to call before it reads the body: a client
    without the token gets its 401 before the server parses anything it sent."""
    scheme, credentials = get_authorization_scheme_param(request.headers.get("authorization"))  # as HTTPBearer reads it
    given = credentials if scheme.lower() == "bearer" and credentials else None
    _check(request, given or request.headers.get(_token_header.model.name))


def _check(request: Request, given: str | None) -> None:
    token = request.app.state.token
    if not (given and token and hmac.compare_digest(given.encode(), token.encode())):
        raise HTTPException(401, f"missing or wrong token: send 'Authorization: Bearer <token>' with the token "
                            f"from {token_path()}", headers={"WWW-Authenticate": "Bearer"})


# --- Origin, Host and body size, before the application sees a request -----------------------------------


class LocalOnly:
    """ASGI middleware: refuses requests with an ``Origin`` header, a ``Host`` that is not loopback (when
    ``loopback_only``), and bodies over ``max_body`` bytes (by ``Content-Length`` and as read, so a chunked
    body cannot get past it); the body is read here and replayed to the application."""

    def __init__(self, app, max_body: int, loopback_only: bool = True):
        self.app, self.max_body, self.loopback_only = app, max_body, loopback_only

    async def _refuse(self, send, status: int, message: str) -> None:
        body = json.dumps({"error": message, "field": None, "detail": None}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers: dict[bytes, list[bytes]] = {}
        for k, v in scope.get("headers") or []:
            headers.setdefault(k.lower(), []).append(v)
        if b"origin" in headers:
            return await self._refuse(send, 403, "requests from web pages (with an Origin header) are refused")
        hosts = [h.decode("latin-1") for h in headers.get(b"host", [])]
        if self.loopback_only and not (len(hosts) == 1 and loopback_host_header(hosts[0])):
            shown = hosts[0] if len(hosts) == 1 else ", ".join(hosts) or "(none)"
            return await self._refuse(send, 403, f"Host {shown!r} is not a loopback address (127.x.x.x, [::1]) "
                                      "or localhost")
        try:
            lengths = {int(v) for v in headers.get(b"content-length", [])}
            if len(lengths) > 1 or any(n < 0 for n in lengths):
                raise ValueError
        except ValueError:
            return await self._refuse(send, 400, "bad Content-Length header")
        if lengths and lengths.pop() > self.max_body:
            return await self._refuse(send, 413, f"request body exceeds {self.max_body} bytes")
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

"""HTTP client of the local anyfill backend (``urllib`` only), its token file, and the optional backend process.

The backend's OpenAPI schema (``docs/openapi.json``) is the contract: ``GET /v1/health``, ``GET /v1/models``,
``POST /v1/fill``, ``POST /v1/sample`` (NDJSON events with ``stream: true``), ``POST /v1/jobs/{id}/cancel``.
Every request except health carries ``Authorization: Bearer <token>``; the token is read from the file the
backend writes (``$ANYFILL_TOKEN_FILE``, else ``$XDG_CONFIG_HOME/anyfill/token``, else
``~/.config/anyfill/token``) unless the preferences hold one.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

API = "/v1"
DEFAULT_URL = "http://127.0.0.1:8765"  # where `anyfill serve` listens unless told otherwise


class BackendError(Exception):
    """A failed request, with a message that says what to do."""

    def __init__(self, message: str, status: int | None = None, field: str | None = None):
        super().__init__(message)
        self.status, self.field = status, field


class Cancelled(Exception):
    pass


def token_path() -> Path:
    if os.environ.get("ANYFILL_TOKEN_FILE"):
        return Path(os.environ["ANYFILL_TOKEN_FILE"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "anyfill" / "token"


def read_token() -> str:
    """The backend's token from its file ('' when there is none yet: the backend writes it on first start); a
    BackendError that says what to do when the path holds something that is not a readable text file."""
    path = token_path()
    fix = ("paste the token in the extension's preferences, or remove the file and restart the backend (it writes a "
           "new token there, which every other client then needs too)")
    try:
        return path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return ""
    except IsADirectoryError:
        raise BackendError(f"The token file {path} is a directory, not the backend's token file: point "
                           "ANYFILL_TOKEN_FILE at the file the backend writes, or paste the token in the extension's "
                           "preferences") from None
    except UnicodeDecodeError:
        raise BackendError(f"The token file {path} is unreadable (not text): {fix}") from None
    except OSError as e:
        raise BackendError(f"The token file {path} is unreadable ({e.strerror or e}): {fix}") from None


def token_status() -> str:
    """The token file as the preferences show it; never raises."""
    try:
        path = token_path()
        found = "found" if read_token() else "not there yet (the backend writes it on first start)"
        return f"Token file: {path} ({found})"
    except BackendError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - drawn in the preferences: a message, never a traceback
        return f"Token file: cannot be read ({type(e).__name__}: {e})"


def new_job_id() -> str:
    return "blender-" + uuid.uuid4().hex[:16]


def check_url(url: str) -> str:
    """The backend URL without its trailing slash; a BackendError that says what is wrong unless it is an
    http(s) URL with a host (and a number for its port)."""
    from urllib.parse import urlparse

    fix = f"set it in the extension's preferences (e.g. {DEFAULT_URL})"
    try:
        parts = urlparse(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise BackendError(f"Backend URL {url!r} is not a valid http(s) URL: {fix}")
    return url.rstrip("/")


class Client:
    def __init__(self, url: str, token: str = "", timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.token = token or read_token()
        self.timeout = timeout

    # --- plumbing ---
    def _open(self, method: str, path: str, body: dict | None = None, timeout: float | None = None):
        check_url(self.url)
        data = None if body is None else json.dumps(body, allow_nan=False).encode()
        req = urllib.request.Request(self.url + API + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            raise self._http_error(e) from None
        except ValueError:  # a URL urllib cannot use after all (http.client.InvalidURL)
            raise BackendError(f"Backend URL {self.url!r} is not a valid http(s) URL: set it in the extension's "
                               f"preferences (e.g. {DEFAULT_URL})") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise BackendError(f"The Anyfill backend is not reachable at {self.url} ({reason}). Start it with "
                               "'anyfill serve' or the panel's Start Backend button, or fix the URL in the "
                               "extension's preferences.") from None

    def _http_error(self, e: urllib.error.HTTPError) -> BackendError:
        try:
            payload = json.loads(e.read().decode() or "{}")
        except (ValueError, OSError):
            payload = {}
        message = payload.get("error") or payload.get("detail") or e.reason
        field = payload.get("field")
        if e.code == 401:
            path = token_path()
            if path.is_dir():
                return BackendError(f"The backend refused the token (HTTP 401). The token file {path} is a "
                                    "directory: paste the token in the preferences, or point ANYFILL_TOKEN_FILE at "
                                    "the file the backend writes.", 401)
            return BackendError(f"The backend refused the token (HTTP 401). Leave the token empty in the "
                                f"preferences to read it from {path}, or copy it from there.", 401)
        if e.code == 403:
            return BackendError(f"The backend refused the request (HTTP 403): {message}", 403)
        where = f" [{field}]" if field else ""
        return BackendError(f"The backend refused the request (HTTP {e.code}){where}: {message}", e.code, field)

    def _json(self, method: str, path: str, body: dict | None = None, timeout: float | None = None) -> dict:
        with self._open(method, path, body, timeout) as r:
            try:
                answer = json.loads(r.read().decode())
            except ValueError as err:
                raise BackendError(f"The backend at {self.url} answered something that is not JSON") from err
        if not isinstance(answer, dict):
            raise BackendError(f"The backend at {self.url} answered {path} with something that is not a JSON object")
        return answer

    # --- endpoints ---
    def health(self) -> dict:
        return self._json("GET", "/health", timeout=5.0)

    def models(self) -> list[dict]:
        """The models the backend serves, each checked for what the extension reads of it (name, skeleton,
        joints with their names)."""
        models = self._json("GET", "/models", timeout=10.0).get("models")
        if not isinstance(models, list):
            raise BackendError(f"The backend at {self.url} answered /v1/models without a 'models' list; is the URL "
                               "an Anyfill backend?")
        for m in models:
            ok = isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("skeleton"), str) \
                and isinstance(m.get("joints"), list) and all(isinstance(j, dict) and isinstance(j.get("name"), str)
                                                              for j in m["joints"])
            if not ok:
                raise BackendError(f"The backend at {self.url} lists a model without a name, skeleton or joints")
        if not models:
            raise BackendError(f"The backend at {self.url} serves no model: start it with at least one "
                               "('anyfill serve' serves the shipped hand and body)")
        return models

    def fill(self, body: dict) -> dict:
        return self._json("POST", "/fill", body)

    def sample(self, body: dict, progress: Callable[[int, int], None] | None = None,
               cancel: threading.Event | None = None) -> dict:
        """Any-order sampling; with ``progress`` the answer is streamed (NDJSON) and progress reported."""
        body = dict(body, stream=True)
        with self._open("POST", "/sample", body) as r:
            for raw in r:
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                line = raw.decode().strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, dict):
                    raise BackendError(f"The backend at {self.url} streamed something that is not a JSON object")
                kind = event.get("event")
                if kind == "progress" and progress is not None:
                    progress(int(event.get("done") or 0), int(event.get("total") or 0))
                elif kind == "result":
                    if not isinstance(event.get("result"), dict):
                        raise BackendError("The backend's sampling result is not a JSON object")
                    return event["result"]
                elif kind == "cancelled":
                    raise Cancelled()
                elif kind == "error":
                    raise BackendError(f"The backend failed (HTTP {event.get('status')}): {event.get('error')}",
                                       event.get("status"))
        raise BackendError("The backend closed the stream without an answer")

    def cancel(self, job_id: str) -> None:
        with contextlib.suppress(BackendError):  # finished or unknown: nothing left to cancel
            self._json("POST", f"/jobs/{job_id}/cancel", {}, timeout=5.0)


# --- cached model list (per backend URL) -------------------------------------------------------------------

_models: dict[str, list[dict]] = {}


def cached_models(url: str) -> list[dict] | None:
    return _models.get(url.rstrip("/"))


def refresh_models(client: Client) -> list[dict]:
    models = client.models()
    _models[client.url] = models
    return models


def model_info(client: Client, name: str) -> dict:
    models = cached_models(client.url) or refresh_models(client)
    for m in models:
        if m["name"] == name:
            return m
    models = refresh_models(client)
    for m in models:
        if m["name"] == name:
            return m
    raise BackendError(f"The backend has no model {name!r}; it serves: {', '.join(m['name'] for m in models)}")


# --- worker thread -----------------------------------------------------------------------------------------


class Worker:
    """Runs ``fn(progress, cancel_event)`` in a daemon thread; the main thread polls ``done``."""

    def __init__(self, fn: Callable[[Callable[[int, int], None], threading.Event], object]):
        self._fn = fn
        self.cancel_event = threading.Event()
        self.result = None
        self.error: BaseException | None = None
        self.progress = (0, 0)
        self._thread = threading.Thread(target=self._run, daemon=True, name="anyfill-request")

    def _run(self) -> None:
        try:
            self.result = self._fn(self._progress, self.cancel_event)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.error = e

    def _progress(self, done: int, total: int) -> None:
        self.progress = (done, total)

    def start(self) -> Worker:
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


# --- the backend process (optional) --------------------------------------------------------------------------

_process: subprocess.Popen | None = None
_atexit_registered: list[bool] = []


def start_backend(python: str, port: int, log_path: str | None = None) -> subprocess.Popen:
    """Start ``anyfill serve`` with ``python`` (an interpreter with anyfill installed) on 127.0.0.1."""
    global _process
    if _process is not None and _process.poll() is None:
        return _process
    if not python or not Path(python).exists():
        raise BackendError(f"No Python executable at {python!r}: set one with anyfill installed in the "
                           "extension's preferences")
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the process
    _process = subprocess.Popen([python, "-m", "anyfill.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if not _atexit_registered:
        atexit.register(stop_backend)  # Blender quits: the backend it started goes too
        _atexit_registered.append(True)
    return _process


def backend_process() -> subprocess.Popen | None:
    return _process if _process is not None and _process.poll() is None else None


def stop_backend(timeout: float = 5.0) -> None:
    global _process
    p, _process = _process, None
    if p is None or p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()

"""The FastAPI application (:func:`create_app`) and its uvicorn runner (:func:`serve`, ``anyfill serve``).

Endpoints (all JSON, under ``/v1``; see ``docs/backend.md``): ``GET health``, ``GET models``,
``POST fill``, ``POST sample`` (optionally streamed as NDJSON), ``GET jobs/{id}`` and
``POST jobs/{id}/cancel``; the OpenAPI schema is ``GET /v1/openapi.json``. Each area is an ``APIRouter``
in :mod:`.routes`; the routes find the models and the job table on ``app.state`` through dependencies,
the token is a security dependency (:func:`.auth.require_token`), and :class:`.auth.LocalOnly` checks
Origin, Host and body size before anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from anyfill import __version__
from backend import errors, options
from backend.auth import LocalOnly, ensure_token, is_loopback, token_path
from backend.commands import DEFAULT_HOST, DEFAULT_PORT
from backend.jobs import MAX_JOBS, Jobs
from backend.registry import Registry
from backend.routes import fill, health
from backend.routes import jobs as job_routes
from backend.schemas import MAX_BODY_BYTES, ModelList
from training.inbetween.checkpoint import CheckpointError

log = logging.getLogger("anyfill.backend")


def create_app(registry: Registry, token: str, jobs: Jobs | None = None, loopback_only: bool = True,
               max_body: int = MAX_BODY_BYTES) -> FastAPI:
    """The application; ``jobs`` defaults to a pool of 2 workers, shut down with the app's lifespan. Every
    route but health and the schema needs ``token`` (an empty token admits nobody)."""
    jobs = jobs or Jobs()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        jobs.shutdown()

    app = FastAPI(title="anyfill", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/v1/openapi.json",
                  description="Local fill server: conditional any-order motion in-betweening. Send "
                  "'Authorization: Bearer <token>' (the token file in the user's config folder) on every "
                  "request except health and this schema.")
    app.state.registry, app.state.jobs, app.state.token = registry, jobs, token
    app.state.model_list = ModelList(models=[health.model_info(lm) for lm in registry])
    for area in (health, fill, job_routes):
        app.include_router(area.router)
    errors.install(app)
    app.add_middleware(LocalOnly, max_body=max_body, loopback_only=loopback_only)
    return app


class _Server(uvicorn.Server):
    """uvicorn's server with our own SIGINT/SIGTERM handling: both stop it gracefully and exit 0 (uvicorn
    re-raises the signal after shutting down, which would end the process with a traceback or -15).
    ``on_stop`` runs as the shutdown begins, before uvicorn waits for open requests: it cancels the jobs,
    so their requests answer at once (503) instead of running on through the grace period."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None] | None = None):
        super().__init__(config)
        self.on_stop = on_stop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.on_stop is not None:
            self.on_stop()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self):
        def stop(sig, frame):
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True
            log.info("anyfill: %s received, shutting down", signal.Signals(sig).name)

        old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def warm_up(app: FastAPI, token: str) -> dict[str, float]:
    """One ``POST /v1/fill`` and one short ``POST /v1/sample`` per model through the application itself (in-process,
    no socket) before the server listens: validation, the job pool, the engine, the answer's curves and its
    serialisation all run once, so the first client's request pays no first-call costs (torch's kernels, the traced
    copies of a window's pass and of a sampling step's, the feature, rotation and pydantic code's first runs).
    Returns the milliseconds each model's two took."""
    import asyncio
    import json
    import time

    async def post(path: str, body: bytes) -> tuple[int, bytes]:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "root_path": "", "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0),
                 "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                             (b"authorization", f"Bearer {token}".encode()),
                             (b"content-length", str(len(body)).encode())]}
        given, status, answer = False, [0], []

        async def receive() -> dict:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never leaves
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))

        await app(scope, receive, send)
        return status[0], b"".join(answer)

    def window(lm, n: int, **settings) -> bytes:  # n frames keyed at rest at both ends and the middle
        keys = (0, n // 2, n - 1)
        joints = {}
        for j, name in enumerate(lm.schema.joints):
            track: dict = {"rotations": [[1.0, 0.0, 0.0, 0.0] if f in keys else None for f in range(n)]}
            if j in lm.schema.moving:
                track["translations"] = [lm.rest_offsets[j].tolist() if f in keys else None for f in range(n)]
            joints[name] = track
        return json.dumps({"model": lm.name, "fps": lm.fps_range[1], "frames": list(range(n)),
                           "rotation_format": {"type": "quaternion", "layout": "wxyz"}, "joints": joints,
                           **settings}).encode()

    took = {}
    for lm in app.state.registry:
        t0 = time.perf_counter()
        # a whole window's fill; then variations of five frames, a frame a step: two steps
        for path, body in (("/v1/fill", window(lm, lm.length)),
                           ("/v1/sample", window(lm, 5, k=lm.schema.n_joints))):
            status, answer = asyncio.run(post(path, body))
            if status != 200:  # the model's card or weights: the start stops, naming the file
                raise CheckpointError(f"{lm.path}: the warm-up {path.rsplit('/', 1)[1]} of model {lm.name} answered "
                                      f"{status}: {answer.decode(errors='replace')[:300]}")
        took[lm.name] = (time.perf_counter() - t0) * 1e3
    return took


def bind(host: str, port: int) -> socket.socket:
    """The server's listening socket. Made as a TCP socket by name (``IPPROTO_TCP``, not the default protocol 0):
    asyncio turns Nagle's algorithm off only on connections of such a socket, and with it on, every small answer on a
    kept-alive connection (its headers and its body written apart) waited for the client's delayed ACK, 40 ms."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, models: list[str] | None = None,
          workers: int = 2, threads: int | None = None, log_level: str = "info", warm: bool = True) -> int:
    """``anyfill serve``: load the models, warm each up with a fill and a sample (``warm``), create the token if needed,
    listen until Ctrl-C / SIGTERM."""
    import torch

    logging.basicConfig(level=log_level.upper(), format="%(message)s", stream=sys.stderr)
    registry = Registry.load(models)
    if threads:
        torch.set_num_threads(threads)
    token = ensure_token()
    loopback = is_loopback(host)
    if not loopback:
        log.warning("anyfill: WARNING: listening on %s, not loopback: other machines can reach this server "
                    "(the token still guards it; never expose it to the internet)", host)
    sock = bind(host, port)
    actual = sock.getsockname()[1]
    jobs = Jobs(workers=workers)
    app = create_app(registry, token, jobs, loopback_only=loopback)
    shown = f"[{host}]" if ":" in host else host
    for lm in registry:
        log.info("anyfill: model %s (%s, %s) from %s", lm.name, lm.schema.name, lm.model.cfg.variant, lm.path)
    if warm:
        took = warm_up(app, token)
        log.info("anyfill: warmed up %s", ", ".join(f"{name} ({ms:.0f} ms)" for name, ms in took.items()))
    log.info("anyfill: listening on http://%s:%d (token in %s); Ctrl-C to stop", shown, actual, token_path())
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", access_log=False, timeout_graceful_shutdown=5)
    server = _Server(config, on_stop=jobs.close)
    server.run(sockets=[sock])
    log.info("anyfill: stopped")
    return 0


def _bad_option(args: argparse.Namespace, max_jobs: int) -> str | None:
    """The first of ``anyfill serve``'s options that cannot work (:mod:`backend.options`), checked before any model
    loads (``--threads -1`` ended in a traceback from torch, ``--host ""`` listened on every interface)."""
    return options.first(options.host(args.host), options.port(args.port), options.workers(args.workers, max_jobs),
                         options.threads(args.threads, "torch's default, one per core"), options.models(args.model))


def main(args: argparse.Namespace) -> int:
    """``anyfill serve`` (its arguments: :mod:`backend.commands`)."""
    problem = _bad_option(args, MAX_JOBS)
    if problem:
        print(f"anyfill serve: error: {problem}", file=sys.stderr)
        return 2
    try:
        return serve(args.host, args.port, args.model, args.workers, args.threads or None, args.log_level,
                     warm=not args.no_warm_up)
    except OSError as e:
        print(f"anyfill serve: error: {e}", file=sys.stderr)
        return 2

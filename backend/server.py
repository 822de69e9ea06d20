"""The FastAPI application (:func:`create_app`) and its uvicorn runner (:func:`serve`, ``anyfill serve``).

Endpoints (all JSON, under ``/v1``; see ``docs/backend.md``): ``GET health``, ``GET models``,
``POST fill``, ``POST sample`` (optionally streamed as NDJSON), ``GET jobs/{id}`` and
``POST jobs/{id}/cancel``; the OpenAPI schema is ``GET /v1/openapi.json``. Validation runs on a helper
thread, the fill engine on the job pool (:mod:`.jobs`), so the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from anyfill import __version__
from backend import errors, grid
from backend.auth import Guard, ensure_token, is_loopback, token_path
from backend.convert import QUAT_TOLERANCE
from backend.errors import RequestError
from backend.jobs import Job, Jobs
from backend.registry import LoadedModel, Registry
from backend.schemas import (
    MAX_BODY_BYTES,
    CancelResponse,
    ErrorResponse,
    FillRequest,
    FillResponse,
    Health,
    JobStatus,
    JointInfo,
    Limits,
    ModelInfo,
    ModelList,
    RotationConventions,
    SampleEvent,
    SampleRequest,
    SampleResponse,
)
from training.inbetween import fill as engine

log = logging.getLogger("anyfill.backend")
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765
_ERRORS = {s: {"model": ErrorResponse} for s in (401, 403, 404, 409, 413, 422, 503)}


def model_info(lm: LoadedModel) -> dict:
    s = lm.schema
    joints = [JointInfo(name=n, index=j, parent=s.joints[p] if p >= 0 else None, parent_index=p,
                        moving=j in s.moving, rest_offset=lm.rest_offsets[j].tolist())
              for j, (n, p) in enumerate(zip(s.joints, s.parents, strict=True))]
    return ModelInfo(
        name=lm.name, skeleton=s.name, kind=lm.card.get("kind", "motion-anyorder"), variant=lm.model.cfg.variant,
        joints=joints, root=s.joints[s.root], up_axis="xyz"[s.up], units=s.units, window_frames=lm.length,
        fps_range=list(lm.fps_range), rotations=RotationConventions(quaternion_tolerance=QUAT_TOLERANCE),
        limits=Limits(max_sample_frames=lm.length), data=lm.card.get("data"), licence=lm.card.get("licence"),
        metrics=lm.card.get("metrics") or {},
    ).model_dump()


def _timings(t0: float, job: Job, prepare_ms: float, model_ms: float, encode_ms: float) -> dict:
    queue = ((job.started or t0) - job.created) * 1e3
    return {"total_ms": (time.perf_counter() - t0) * 1e3, "queue_ms": queue, "prepare_ms": prepare_ms,
            "model_ms": model_ms, "encode_ms": encode_ms}


def _engine_call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ValueError as e:  # input the engine refuses that validation did not catch
        raise RequestError(None, str(e)) from None


def _fill_work(win: grid.Window, job: Job) -> tuple[dict, float, float]:
    t = time.perf_counter()
    res = _engine_call(engine.fill, win.lm.model, win.rotations, win.translations, win.known, win.times,
                       cancel=job.cancelled)
    t_model = time.perf_counter()
    if job.cancelled():
        raise engine.Cancelled()
    joints = grid.encode(win, res)
    return joints, (t_model - t) * 1e3, (time.perf_counter() - t_model) * 1e3


def _sample_work(win: grid.Window, req: SampleRequest, job: Job) -> tuple[list, float, float]:
    t = time.perf_counter()
    results = _engine_call(engine.sample, win.lm.model, win.rotations, win.translations, win.known, win.times,
                           order=req.order, k=req.k, temperature=req.temperature, seed=req.seed, n=req.n,
                           progress=job.progress, cancel=job.cancelled)
    t_model = time.perf_counter()
    variations = []
    for r in results:
        one = engine.FillResult(r.rotations[None], r.translations[None], r.entropy[None], r.spread_deg[None])
        variations.append({"joints": grid.encode(win, one)})
    return variations, (t_model - t) * 1e3, (time.perf_counter() - t_model) * 1e3


async def _wait(fut: asyncio.Future, job: Job, jobs: Jobs, request: Request):
    """The job's result; a client that goes away cancels it."""
    while True:
        done, _ = await asyncio.wait({fut}, timeout=0.05)
        if done:
            break
        if await request.is_disconnected():
            jobs.cancel(job.id)
            log.info("client left: cancelled job %s", job.id)
            break
    try:
        return await fut
    except engine.Cancelled:
        raise RequestError(None, f"job {job.id} was cancelled", 409) from None


def create_app(registry: Registry, token: str, jobs: Jobs | None = None, loopback_only: bool = True,
               max_body: int = MAX_BODY_BYTES) -> FastAPI:
    """The application; ``jobs`` defaults to a pool of 2 workers. Shut down with the app's lifespan."""
    jobs = jobs or Jobs()
    infos = [model_info(lm) for lm in registry]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        jobs.shutdown()

    app = FastAPI(title="anyfill", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/v1/openapi.json",
                  description="Local fill server: conditional any-order motion in-betweening. Send "
                  "'Authorization: Bearer <token>' (the token file in the user's config folder) on every "
                  "request except health and this schema.")
    app.state.registry, app.state.jobs = registry, jobs
    errors.install(app)

    @app.get("/v1/health", response_model=Health, tags=["server"])
    async def health() -> dict:
        """Liveness, version and loaded models; needs no token."""
        return {"status": "ok", "api": "v1", "version": __version__, "models": registry.names()}

    @app.get("/v1/models", response_model=ModelList, responses=_ERRORS, tags=["server"])
    async def models() -> dict:
        """Each model's skeleton (joints, parents, rest offsets, moving joints), conventions and limits."""
        return {"models": infos}

    @app.post("/v1/fill", response_model=FillResponse, responses=_ERRORS, tags=["fill"])
    async def fill(req: FillRequest, request: Request):
        """Deterministic fill: each target cell gets the mean of its distribution and its uncertainty."""
        t0 = time.perf_counter()
        win = await run_in_threadpool(grid.prepare, req, registry)
        prepare_ms = (time.perf_counter() - t0) * 1e3
        job = jobs.create("fill", req.id)
        joints, model_ms, encode_ms = await _wait(jobs.run(job, lambda j: _fill_work(win, j)), job, jobs, request)
        # a 65 x 22 answer is about 190 kB of JSON: orjson writes it in a tenth of the stdlib's 5 ms
        return ORJSONResponse({"id": job.id, "model": req.model, "frames": req.frames, "joints": joints,
                             "timings": _timings(t0, job, prepare_ms, model_ms, encode_ms)})

    @app.post("/v1/sample", response_model=SampleResponse, responses={
        **_ERRORS, 200: {"content": {"application/x-ndjson": {"schema": SampleEvent.model_json_schema(
            ref_template="#/components/schemas/{model}")}}}}, tags=["fill"])
    async def sample(req: SampleRequest, request: Request):
        """Any-order sampling of ``n`` variations. With ``stream: true`` the answer is NDJSON events
        (started, progress..., result | error | cancelled); otherwise poll ``GET /v1/jobs/{id}``."""
        t0 = time.perf_counter()
        lm = registry.get(req.model)
        win = await run_in_threadpool(grid.prepare, req, registry, lm.length if lm else None)
        prepare_ms = (time.perf_counter() - t0) * 1e3
        job = jobs.create("sample", req.id)

        def answer(variations, model_ms, encode_ms) -> dict:
            return {"id": job.id, "model": req.model, "frames": req.frames, "order": req.order, "k": req.k,
                    "temperature": req.temperature, "seed": req.seed, "variations": variations,
                    "timings": _timings(t0, job, prepare_ms, model_ms, encode_ms)}

        if not req.stream:
            fut = jobs.run(job, lambda j: _sample_work(win, req, j))
            return ORJSONResponse(answer(*await _wait(fut, job, jobs, request)))

        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job.listeners.append(lambda j: loop.call_soon_threadsafe(events.put_nowait, (j.done, j.total)))
        fut = jobs.run(job, lambda j: _sample_work(win, req, j))

        def line(event: str, **kw) -> bytes:
            return (json.dumps({"event": event, "id": job.id, **kw}) + "\n").encode()

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield line("started", done=0, total=0)
                while not fut.done():
                    getter = asyncio.ensure_future(events.get())
                    done, _ = await asyncio.wait({fut, getter}, return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        d, t = getter.result()
                        yield line("progress", done=d, total=t)
                    else:
                        getter.cancel()
                while not events.empty():  # progress posted just before the job ended: the last step included
                    d, t = events.get_nowait()
                    yield line("progress", done=d, total=t)
                try:
                    yield line("result", result=answer(*fut.result()))
                except engine.Cancelled:
                    yield line("cancelled")
                except RequestError as e:
                    yield line("error", error=str(e), status=e.status)
                except Exception as e:  # noqa: BLE001 - reported in the stream, the status line is already sent
                    log.exception("sample job %s failed", job.id)
                    yield line("error", error=f"internal error: {type(e).__name__}: {e}", status=500)
            finally:
                if not fut.done():  # the client went away
                    jobs.cancel(job.id)

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    @app.get("/v1/jobs/{job_id}", response_model=JobStatus, responses=_ERRORS, tags=["jobs"])
    async def job_status(job_id: str) -> dict:
        """A running or recently finished job: state and progress (``done`` of ``total`` steps)."""
        job = jobs.get(job_id)
        if job is None:
            raise RequestError("job_id", f"no job {job_id!r}", 404)
        return job.status()

    @app.post("/v1/jobs/{job_id}/cancel", response_model=CancelResponse, responses=_ERRORS, tags=["jobs"])
    async def cancel(job_id: str) -> dict:
        """Cancel a queued or running job; its own request then answers 409 (or a ``cancelled`` event)."""
        job = jobs.get(job_id)
        if job is None:
            raise RequestError("job_id", f"no job {job_id!r}", 404)
        active = job.state in ("queued", "running")
        jobs.cancel(job_id)
        return {"id": job_id, "cancelled": active, "state": "cancelling" if active else job.state}

    return Guard(app, token, max_body, loopback_only) if token else app


def fastapi_app(app) -> FastAPI:
    """The FastAPI application inside :func:`create_app`'s guard."""
    return app.app if isinstance(app, Guard) else app


class _Server(uvicorn.Server):
    """uvicorn's server with our own SIGINT/SIGTERM handling: both stop it gracefully and exit 0 (uvicorn
    re-raises the signal after shutting down, which would end the process with a traceback or -15)."""

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


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
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
          workers: int = 2, threads: int | None = None, log_level: str = "info") -> int:
    """``anyfill serve``: load the models, create the token if needed, listen until Ctrl-C / SIGTERM."""
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
    app = create_app(registry, token, Jobs(workers=workers), loopback_only=loopback)
    shown = f"[{host}]" if ":" in host else host
    for lm in registry:
        log.info("anyfill: model %s (%s, %s) from %s", lm.name, lm.schema.name, lm.model.cfg.variant, lm.path)
    log.info("anyfill: listening on http://%s:%d (token in %s); Ctrl-C to stop", shown, actual, token_path())
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", access_log=False, timeout_graceful_shutdown=5)
    server = _Server(config)
    server.run(sockets=[sock])
    log.info("anyfill: stopped")
    return 0


def main(argv: list[str]) -> int:
    """``anyfill serve [--host 127.0.0.1] [--port 8765] [--model NAME_OR_PATH ...]``."""
    import argparse

    p = argparse.ArgumentParser(prog="anyfill serve", description="Serve the fill models on a local HTTP port.")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1; others warn)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free port)")
    p.add_argument("--model", action="append", metavar="NAME_OR_PATH",
                   help="model to serve, repeatable: a shipped name, a .safetensors path, or NAME=PATH "
                   "(default: the shipped hand and body models)")
    p.add_argument("--workers", type=int, default=2, help="requests run at once")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535 or args.workers < 1:
        p.error("--port must be 0..65535 and --workers at least 1")
    try:
        return serve(args.host, args.port, args.model, args.workers, args.threads or None, args.log_level)
    except OSError as e:
        print(f"anyfill serve: error: {e}", file=sys.stderr)
        return 2

"""``POST /v1/fill`` and ``POST /v1/sample``: validation on a helper thread, the fill engine on the job pool
(:mod:`..jobs`), so the event loop only moves bytes. Answers are built to their response models and written
by orjson (:func:`.common.json_answer`; the tests hold every kind of answer to its model); a streamed sample's
NDJSON lines are validated :class:`SampleEvent` s."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from backend import grid
from backend.auth import require_token
from backend.errors import RequestError
from backend.jobs import Job, Jobs
from backend.registry import Registry
from backend.routes import common
from backend.schemas import FillRequest, FillResponse, SampleEvent, SampleRequest, SampleResponse
from training.inbetween import fill as engine
from training.inbetween import sampling

log = logging.getLogger("anyfill.backend")
router = APIRouter(prefix="/v1", tags=["fill"], responses=common.ERRORS, dependencies=[Depends(require_token)],
                   route_class=common.JSONRoute)
Models = Annotated[Registry, Depends(common.registry)]
JobTable = Annotated[Jobs, Depends(common.jobs)]


def _timings(t0: float, job: Job, prepare_ms: float, model_ms: float, encode_ms: float) -> dict:
    queue = ((job.started or t0) - job.created) * 1e3
    return {"total_ms": (time.perf_counter() - t0) * 1e3, "queue_ms": queue, "prepare_ms": prepare_ms,
            "model_ms": model_ms, "encode_ms": encode_ms}


def _engine_call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ValueError as e:  # input the engine refuses that validation did not catch
        raise RequestError(getattr(e, "field", None), str(e)) from None  # a frame-rate error names `frames`


def _fill_work(win: grid.Window, job: Job | None = None) -> tuple[dict, dict | None, float, float]:
    t = time.perf_counter()
    res = _engine_call(engine.fill_at_rate, win.lm.model, win.rotations, win.translations, win.known, win.times,
                       win.lm.fps_range, cancel=None if job is None else job.cancelled,
                       progress=None if job is None else job.progress, fps=win.fps)
    model_ms = (time.perf_counter() - t) * 1e3
    if job is not None and job.cancelled():
        raise engine.Cancelled()
    return _answer(win, res, model_ms)


def _answer(win: grid.Window, res: engine.FillResult, model_ms: float) -> tuple[dict, dict | None, float, float]:
    t = time.perf_counter()
    joints = grid.encode(win, grid.fold_above_root(win, res))
    return joints, _resampled(res), model_ms, (time.perf_counter() - t) * 1e3


def _fill_batch(wins: list[grid.Window]) -> Iterator:
    """One-window fills of one model and length (:func:`engine.one_call`) that waited together: one engine call
    for all, each answer encoded on its own and given as soon as it is (its request answered, its place among the
    server's jobs free, while the others are encoded); the outcome per window, its answer or its error. If the call
    refuses the stack, each window is filled alone, so an error reaches only the request that caused it."""
    if len(wins) == 1:
        yield _outcome(_fill_work, wins[0])
        return
    lm = wins[0].lm
    t = time.perf_counter()
    try:  # each window fills at its own frames (:func:`engine.one_call`), whatever the others' rates
        res = engine.fill(lm.model, *(np.concatenate([getattr(w, a) for w in wins])
                                      for a in ("rotations", "translations", "known", "times")))
    except ValueError:
        yield from (_outcome(_fill_work, w) for w in wins)
        return
    model_ms = (time.perf_counter() - t) * 1e3
    for i, w in enumerate(wins):
        yield _outcome(_answer, w, replace(res, rotations=res.rotations[i : i + 1],
                                           translations=res.translations[i : i + 1], entropy=res.entropy[i : i + 1],
                                           spread_deg=res.spread_deg[i : i + 1]), model_ms)


def _outcome(fn, *args):
    """``fn(*args)``, or the exception it raised (one window's error, for its own request)."""
    try:
        return fn(*args)
    except Exception as e:
        return e


def _resampled(res: engine.FillResult) -> dict | None:
    return None if res.resampled is None else {"window_fps": res.resampled[0], "filled_fps": res.resampled[1]}


def _sample_work(win: grid.Window, req: SampleRequest, job: Job) -> tuple[list, dict | None, float, float]:
    t = time.perf_counter()
    results = _engine_call(sampling.sample_at_rate, win.lm.model, win.rotations, win.translations, win.known,
                           win.times, win.lm.fps_range, fps=win.fps, order=req.order, k=req.k,
                           temperature=req.temperature, seed=req.seed, n=req.n, progress=job.progress,
                           cancel=job.cancelled)
    t_model = time.perf_counter()
    variations = []
    for r in results:
        one = engine.FillResult(r.rotations[None], r.translations[None], r.entropy[None], r.spread_deg[None])
        variations.append({"joints": grid.encode(win, grid.fold_above_root(win, one))})
    return variations, _resampled(results[0]), (t_model - t) * 1e3, (time.perf_counter() - t_model) * 1e3


def _cancelled(job: Job, jobs: Jobs) -> RequestError:
    if jobs.closing:
        return RequestError(None, f"server is shutting down: job {job.id} was cancelled", 503)
    return RequestError(None, f"job {job.id} was cancelled", 409)


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
        raise _cancelled(job, jobs) from None


@router.post("/fill", response_model=FillResponse)
async def fill(req: FillRequest, request: Request, registry: Models, jobs: JobTable) -> Response:
    """Deterministic fill: each target cell gets the mean of its distribution and its uncertainty."""
    t0 = time.perf_counter()
    win = await run_in_threadpool(grid.prepare, req, registry)
    prepare_ms = (time.perf_counter() - t0) * 1e3
    job = jobs.create("fill", req.id)
    if engine.one_call(win.lm.model, win.times, win.lm.fps_range, win.fps):  # filled with others of its kind waiting
        fut = jobs.run_batched(job, (win.lm.name, win.times.shape[1]), win, _fill_batch)
    else:  # a long or resampled window: alone, with progress and cancellation between its model calls
        fut = jobs.run(job, lambda j: _fill_work(win, j))
    joints, resampled, model_ms, encode_ms = await _wait(fut, job, jobs, request)
    return common.json_answer({"id": job.id, "model": req.model, "frames": req.frames, "joints": joints,
                               "resampled": resampled, "timings": _timings(t0, job, prepare_ms, model_ms, encode_ms)})


_NDJSON = {200: {"content": {"application/x-ndjson": {"schema": SampleEvent.model_json_schema(
    ref_template="#/components/schemas/{model}")}}}}


@router.post("/sample", response_model=SampleResponse, responses=_NDJSON)
async def sample(req: SampleRequest, request: Request, registry: Models, jobs: JobTable):
    """Any-order sampling of ``n`` variations. With ``stream: true`` the answer is NDJSON events
    (started, progress..., result | error | cancelled); otherwise poll ``GET /v1/jobs/{id}``."""
    t0 = time.perf_counter()
    win = await run_in_threadpool(grid.prepare, req, registry)
    prepare_ms = (time.perf_counter() - t0) * 1e3
    job = jobs.create("sample", req.id)

    def answer(variations, resampled, model_ms, encode_ms) -> dict:
        return {"id": job.id, "model": req.model, "frames": req.frames, "order": req.order, "k": req.k,
                "temperature": req.temperature, "seed": req.seed, "variations": variations, "resampled": resampled,
                "timings": _timings(t0, job, prepare_ms, model_ms, encode_ms)}

    if not req.stream:
        fut = jobs.run(job, lambda j: _sample_work(win, req, j))
        return common.json_answer(answer(*await _wait(fut, job, jobs, request)))

    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    job.listeners.append(lambda j: loop.call_soon_threadsafe(events.put_nowait, (j.done, j.total)))
    fut = jobs.run(job, lambda j: _sample_work(win, req, j))

    def line(event: str, **kw) -> bytes:
        # validated like every other answer; fields not given are left out of the line
        return SampleEvent.model_validate({"event": event, "id": job.id, **kw}).model_dump_json(
            exclude_unset=True).encode() + b"\n"

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
                if jobs.closing:
                    yield line("cancelled", error="server is shutting down", status=503)
                else:
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

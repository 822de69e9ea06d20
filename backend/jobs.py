"""Running requests: each fill or sample is a job with an id, run on a small pool of worker threads (torch
inference releases the GIL; the event loop stays free), with progress, cancellation by id, and a
bound on how many may be queued at once.

Jobs share nothing mutable but their own :class:`Job` (the models are read-only), so concurrent clients
cannot see each other's data. A job's progress (``done`` of ``total``: sampling steps, or the frames a long
fill has committed) shows in ``GET /v1/jobs/{id}`` while it runs. A cancelled job stops at its next step
(sampling checks between steps, a long fill between model calls) and its answer is dropped; a client that
disconnects cancels its job the same way.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from backend.errors import RequestError
from training.inbetween.fill import Cancelled

KEEP_FINISHED = 256  # finished jobs remembered for polling and idempotent cancels


@dataclass
class Job:
    id: str
    kind: str  # fill | sample
    state: str = "queued"  # queued | running | done | failed | cancelled
    done: int = 0
    total: int = 0
    created: float = field(default_factory=time.perf_counter)
    started: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    listeners: list[Callable[[Job], None]] = field(default_factory=list)

    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        for fn in list(self.listeners):
            fn(self)

    def status(self) -> dict:
        return {"id": self.id, "kind": self.kind, "state": self.state, "done": self.done, "total": self.total}


class Jobs:
    """A worker pool plus the table of jobs by id."""

    def __init__(self, workers: int = 2, max_jobs: int = 32):
        self.max_jobs = max_jobs
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="anyfill-job")
        self._lock = threading.Lock()
        self._active: dict[str, Job] = {}
        self._finished: OrderedDict[str, Job] = OrderedDict()
        self.closing = False  # set by :meth:`close`: every job is cancelled, new ones are refused (503)

    def create(self, kind: str, job_id: str | None = None) -> Job:
        with self._lock:
            if self.closing:
                raise RequestError(None, "server is shutting down", 503)
            if len(self._active) >= self.max_jobs:
                running = sum(j.state == "running" for j in self._active.values())
                raise RequestError(None, f"server busy: {running} running, {len(self._active) - running} waiting "
                                   f"(at most {self.max_jobs} at once); retry later", 503)
            if job_id is None:
                job_id = uuid.uuid4().hex
            elif job_id in self._active:
                raise RequestError("id", f"a job with id {job_id!r} is already running", 409)
            self._finished.pop(job_id, None)
            job = Job(job_id, kind)
            self._active[job_id] = job
            return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._active.get(job_id) or self._finished.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        job = self.get(job_id)
        if job is not None and job.state in ("queued", "running"):
            job.cancel_event.set()
        return job

    def _finish(self, job: Job, state: str) -> None:
        with self._lock:
            job.state = state
            self._active.pop(job.id, None)
            self._finished[job.id] = job
            while len(self._finished) > KEEP_FINISHED:
                self._finished.popitem(last=False)

    def run(self, job: Job, fn: Callable[[Job], Any]) -> asyncio.Future:
        """Run ``fn(job)`` on a worker; the returned future raises :class:`Cancelled` if the job was
        cancelled (before it started, while sampling, or before its answer was delivered)."""

        def work():
            if job.cancelled():
                self._finish(job, "cancelled")
                raise Cancelled()
            job.state, job.started = "running", time.perf_counter()
            try:
                out = fn(job)
                if job.cancelled():
                    raise Cancelled()
            except Cancelled:
                self._finish(job, "cancelled")
                raise
            except BaseException:
                self._finish(job, "failed")
                raise
            self._finish(job, "done")
            return out

        try:
            fut = asyncio.wrap_future(self._pool.submit(work))
        except RuntimeError:  # the pool is shutting down
            self._finish(job, "cancelled")
            raise RequestError(None, "server is shutting down", 503) from None
        # a request that stopped waiting (its client left) never reads the outcome: read it here, so asyncio
        # logs no "Future exception was never retrieved"
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        return fut

    def forget(self, job: Job) -> None:
        """Drop a job that never reached a worker (e.g. its request was invalid)."""
        self._finish(job, "failed")

    def close(self) -> None:
        """Refuse new jobs and cancel every queued and running one at once (sampling stops at its next
        step); their requests answer 503 "server is shutting down". Called when a stop is asked for, before
        the server waits for its connections to end."""
        with self._lock:
            self.closing = True
            for job in self._active.values():
                job.cancel_event.set()

    def shutdown(self) -> None:
        """:meth:`close`, then wait for the workers."""
        self.close()
        self._pool.shutdown(wait=True, cancel_futures=True)

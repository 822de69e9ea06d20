"""Running requests: each fill or sample is a job with an id, run on a small pool of worker threads (torch
inference releases the GIL; the event loop stays free), with progress, cancellation by id, and a
bound on how many may be queued at once.

Jobs share nothing mutable but their own :class:`Job` (the models are read-only), so concurrent clients
cannot see each other's data. A job's progress (``done`` of ``total``: sampling steps, or the frames a long
fill has committed) shows in ``GET /v1/jobs/{id}`` while it runs. A cancelled job stops at its next step
(sampling checks between steps, a long fill between model calls) and its answer is dropped; a client that
disconnects cancels its job the same way.

Jobs that can run as one batch (one-window fills of one model and length) wait under a key
(:meth:`Jobs.run_batched`): the worker that takes the key up runs all that waited meanwhile in one call, so
concurrent clients share the model's fixed cost per call instead of queueing behind each other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from backend.errors import RequestError
from training.inbetween.fill import Cancelled

KEEP_FINISHED = 256  # finished jobs remembered for polling and idempotent cancels
MAX_BATCH = 16  # jobs one batched call runs at most (more wait for the next call)
_NONE = object()  # a batch call that ran out of outcomes
MAX_JOBS = 32  # jobs held at once, running and waiting; one more is refused (503 "server busy")


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


@dataclass
class _Waiting:
    """A job waiting for a worker (:meth:`Jobs.run`) or under a batch key (:meth:`Jobs.run_batched`), and the
    future its request awaits."""

    job: Job
    item: Any  # None for a job of :meth:`Jobs.run`
    future: concurrent.futures.Future


class Jobs:
    """A worker pool plus the table of jobs by id."""

    def __init__(self, workers: int = 2, max_jobs: int = MAX_JOBS, max_batch: int = MAX_BATCH):
        self.max_jobs, self.max_batch = max_jobs, max_batch
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="anyfill-job")
        self._lock = threading.Lock()
        self._active: dict[str, Job] = {}
        self._finished: OrderedDict[str, Job] = OrderedDict()
        self._waiting: dict[Hashable, list[_Waiting]] = {}  # batchable jobs by key, until a worker takes them
        self._calling: set[Hashable] = set()  # keys with a call scheduled or running
        self._queued: dict[str, _Waiting] = {}  # jobs of :meth:`run` no worker has taken yet, by id
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
        """Ask a job to stop; one still waiting for a worker or a batch call (:meth:`run`, :meth:`run_batched`)
        ends at once, freeing its place among the jobs the server holds."""
        job = self.get(job_id)
        if job is not None and job.state in ("queued", "running"):
            job.cancel_event.set()
            with self._lock:
                waiting = [w for queue in self._waiting.values() for w in queue if w.job is job]
                for queue in self._waiting.values():
                    queue[:] = [w for w in queue if w.job is not job]
                queued = self._queued.pop(job.id, None)
                if queued is not None:
                    waiting.append(queued)
            for w in waiting:
                self._deliver(w, Cancelled())
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
        cancelled (while it waited for a worker, at once; while sampling, at its next step; or before its answer
        was delivered)."""
        queued = _Waiting(job, None, concurrent.futures.Future())

        def work():
            with self._lock:
                mine = self._queued.pop(job.id, None) is queued
            if not mine:  # cancelled while it waited: ended already
                return
            if job.cancelled():
                self._deliver(queued, Cancelled())
                return
            job.state, job.started = "running", time.perf_counter()
            try:
                out = fn(job)
                if job.cancelled():
                    raise Cancelled()
            except BaseException as e:  # the request's outcome, whatever it is (its handler maps it)
                out = e
            self._deliver(queued, out)

        with self._lock:
            self._queued[job.id] = queued
        try:
            self._pool.submit(work)
        except RuntimeError:  # the pool is shutting down
            with self._lock:
                self._queued.pop(job.id, None)
            self._finish(job, "cancelled")
            raise RequestError(None, "server is shutting down", 503) from None
        fut = asyncio.wrap_future(queued.future)
        # a request that stopped waiting (its client left) never reads the outcome: read it here, so asyncio
        # logs no "Future exception was never retrieved"
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        return fut

    def run_batched(self, job: Job, key: Hashable, item: Any,
                    run_batch: Callable[[list[Any]], Iterable[Any]]) -> asyncio.Future:
        """Run ``item`` in one call of ``run_batch(items)`` with the other jobs waiting under ``key`` (at most
        :attr:`max_batch`), on a worker; ``run_batch`` gives one outcome per item, in order, its result or the
        exception that item raises (a generator: each job ends as its outcome comes). One call per key runs at a
        time: the jobs that arrive meanwhile wait for the next, which takes them all (two calls of one model side by
        side would only share its two cores). The returned future is as :meth:`run`'s."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._waiting.setdefault(key, []).append(_Waiting(job, item, fut))
            start = key not in self._calling
            self._calling.add(key)
        if start:
            self._schedule(key, run_batch)
        afut = asyncio.wrap_future(fut)
        afut.add_done_callback(lambda f: f.cancelled() or f.exception())  # as in :meth:`run`
        return afut

    def _schedule(self, key: Hashable, run_batch: Callable[[list[Any]], Iterable[Any]]) -> None:
        try:
            self._pool.submit(self._run_waiting, key, run_batch)
        except RuntimeError:  # the pool is shutting down: nothing will run what waits
            self._cancel_waiting(key)

    def _run_waiting(self, key: Hashable, run_batch: Callable[[list[Any]], Iterable[Any]]) -> None:
        try:
            self._run_batch(key, run_batch)
        finally:
            with self._lock:  # the jobs that arrived meanwhile: the next call
                again = bool(self._waiting.get(key))
                if not again:
                    self._calling.discard(key)
            if again:
                self._schedule(key, run_batch)

    def _run_batch(self, key: Hashable, run_batch: Callable[[list[Any]], Iterable[Any]]) -> None:
        with self._lock:
            queue = self._waiting.pop(key, [])
            taken, rest = queue[: self.max_batch], queue[self.max_batch :]
            if rest:
                self._waiting[key] = rest
        live = []
        for w in taken:
            if w.job.cancelled():
                self._deliver(w, Cancelled())
            else:
                w.job.state, w.job.started = "running", time.perf_counter()
                live.append(w)
        if not live:
            return
        self._deliver_each(live, run_batch)

    def _deliver_each(self, live: list[_Waiting], run_batch: Callable[[list[Any]], Iterable[Any]]) -> None:
        """Each job of a batch ends as soon as ``run_batch`` yields its outcome: its answer leaves and its place among
        the server's jobs is free while the rest are encoded (all 16 of a batch were held, counted as running, until
        the last was done). If the call fails, or yields too few, the jobs without an outcome fail with it."""
        done = 0
        try:
            outcomes = iter(run_batch([w.item for w in live]))
            for w in live:
                out = next(outcomes, _NONE)
                if out is _NONE:
                    raise RuntimeError(f"a batch of {len(live)} jobs gave {done} outcomes")
                self._deliver(w, Cancelled() if w.job.cancelled() and not isinstance(out, BaseException) else out)
                done += 1
        except BaseException as e:  # the call itself failed: every job of it without an outcome did
            for w in live[done:]:
                self._deliver(w, e)

    def _deliver(self, w: _Waiting, outcome: Any) -> None:
        """End a job with its outcome (a result, or the exception it raised); never raises. Its future may be done
        already, or be cancelled while this runs (its awaiting task was cancelled, from the event loop's thread): the
        job still ends, and a batch's other jobs get theirs (a cancel between a look at the future and its setting
        raised here, and left the rest of the batch counted as running for good: a server busy with nothing)."""
        if isinstance(outcome, BaseException):
            self._finish(w.job, "cancelled" if isinstance(outcome, Cancelled) else "failed")
        else:
            self._finish(w.job, "done")
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if isinstance(outcome, BaseException):
                w.future.set_exception(outcome)
            else:
                w.future.set_result(outcome)

    def _cancel_waiting(self, key: Hashable | None = None) -> None:
        """Cancel the jobs waiting under ``key`` (None: every key, and every job waiting for a worker) that no
        worker will take."""
        with self._lock:
            keys = list(self._waiting) if key is None else [key]
            gone = [w for k in keys for w in self._waiting.pop(k, [])]
            self._calling.difference_update(keys)
            if key is None:
                gone += self._queued.values()
                self._queued.clear()
        for w in gone:
            self._deliver(w, Cancelled())

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
            queued = list(self._queued.values())
            self._queued.clear()
        for w in queued:  # no worker has them yet: they end now
            self._deliver(w, Cancelled())

    def shutdown(self) -> None:
        """:meth:`close`, then wait for the workers."""
        self.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._cancel_waiting()  # jobs the pool dropped before a worker took them

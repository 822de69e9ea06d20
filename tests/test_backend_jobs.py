"""The server's job pool on its own: batched jobs (one call for the jobs that waited together), their outcomes,
cancellation and shutdown. The HTTP side of the same is in test_backend_api.py."""

from __future__ import annotations

import asyncio
import threading

import pytest

from backend.jobs import Jobs
from training.inbetween.fill import Cancelled


class Recorder:
    """A batch function that records each call's items, answers item * 10, raises for negative items, and holds
    its first call until released (so that others queue behind it)."""

    def __init__(self):
        self.calls: list[list[int]] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, items: list[int]) -> list:
        self.calls.append(list(items))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(10)
        return [ValueError(f"bad item {i}") if i < 0 else i * 10 for i in items]


async def _outcomes(futures):
    return await asyncio.gather(*futures, return_exceptions=True)


def test_jobs_that_wait_during_a_call_run_together_in_the_next():
    async def main():
        jobs, fn = Jobs(workers=2, max_batch=4), Recorder()
        first = jobs.run_batched(jobs.create("fill"), "k", 1, fn)
        await asyncio.to_thread(fn.entered.wait, 10)
        later = [jobs.run_batched(jobs.create("fill"), "k", i, fn) for i in (2, -3, 4, 5, 6, 7)]
        cancelled = jobs.create("fill")
        later.append(jobs.run_batched(cancelled, "k", 8, fn))
        jobs.cancel(cancelled.id)
        other = jobs.run_batched(jobs.create("fill"), "other key", 9, fn)  # another key runs beside
        fn.release.set()
        got = await _outcomes([first, *later, other])
        jobs.shutdown()
        return jobs, fn, got, cancelled

    jobs, fn, got, cancelled = asyncio.run(main())
    assert got[0] == 10 and got[1] == 20 and isinstance(got[2], ValueError) and "bad item -3" in str(got[2])
    assert got[3:7] == [40, 50, 60, 70] and isinstance(got[7], Cancelled) and got[8] == 90
    assert fn.calls[0] == [1] and [9] in fn.calls
    # one call of the key at a time, at most max_batch items a call, in arrival order; the cancelled job never ran
    waited = [c for c in fn.calls[1:] if c != [9]]
    assert waited == [[2, -3, 4, 5], [6, 7]]
    assert jobs.get(cancelled.id).state == "cancelled"
    states = [j.state for j in (jobs.get(i) for i in list(jobs._finished))]
    assert states.count("failed") == 1 and states.count("done") == 7


def test_a_batch_call_that_fails_fails_each_of_its_jobs():
    def broken(items):
        raise RuntimeError("the model is gone")

    async def main():
        jobs = Jobs(workers=1)
        got = await _outcomes([jobs.run_batched(jobs.create("fill"), "k", i, broken) for i in range(3)])
        jobs.shutdown()
        return got

    assert all(isinstance(g, RuntimeError) and "gone" in str(g) for g in asyncio.run(main()))


def test_shutdown_cancels_the_jobs_still_waiting():
    async def main():
        jobs, fn = Jobs(workers=1), Recorder()
        running = jobs.run_batched(jobs.create("fill"), "k", 1, fn)
        await asyncio.to_thread(fn.entered.wait, 10)
        waiting = jobs.run_batched(jobs.create("fill"), "k", 2, fn)
        jobs.close()  # a stop was asked for: every job is cancelled
        fn.release.set()
        await asyncio.to_thread(jobs.shutdown)
        return await _outcomes([running, waiting]), fn

    (running, waiting), fn = asyncio.run(main())
    assert isinstance(running, Cancelled) and isinstance(waiting, Cancelled)
    assert fn.calls == [[1]]  # the waiting job never reached a call


@pytest.mark.parametrize("max_batch", [1, 3])
def test_many_waiting_jobs_are_all_answered(max_batch):
    async def main():
        jobs = Jobs(workers=2, max_batch=max_batch, max_jobs=64)
        got = await _outcomes([jobs.run_batched(jobs.create("fill"), i % 2, i, lambda xs: [x + 1 for x in xs])
                               for i in range(40)])
        jobs.shutdown()
        return got

    assert asyncio.run(main()) == list(range(1, 41))


def test_a_waiting_job_whose_request_went_away_leaves_the_rest_of_its_batch_answered():
    """The awaiting side of a waiting job cancelled (its request task cancelled): the other jobs of its batch
    still get their answers and every job ends (was: the batch stopped at it, the rest 'running' for good)."""

    async def main():
        jobs, fn = Jobs(workers=1), Recorder()
        first = jobs.run_batched(jobs.create("fill"), "k", 1, fn)  # holds the one worker
        await asyncio.to_thread(fn.entered.wait, 10)
        ids = [jobs.create("fill") for _ in range(3)]
        waiting = [jobs.run_batched(job, "k", i, fn) for i, job in zip((2, 3, 4), ids, strict=True)]
        waiting[0].cancel()
        fn.release.set()
        got = await asyncio.wait_for(_outcomes([first, *waiting[1:]]), 10)
        jobs.shutdown()
        return got, [jobs.get(j.id).state for j in ids]

    got, states = asyncio.run(main())
    assert got == [10, 30, 40] and states == ["done", "done", "done"]


def test_cancelling_a_waiting_job_ends_it_at_once():
    """A job cancelled while it waits for a batch call ends then (its place among the server's jobs freed), not
    when a worker next takes its key."""

    async def main():
        jobs, fn = Jobs(workers=1, max_jobs=3), Recorder()
        first = jobs.run_batched(jobs.create("fill"), "k", 1, fn)
        await asyncio.to_thread(fn.entered.wait, 10)
        job = jobs.create("fill")
        waiting = jobs.run_batched(job, "k", 2, fn)
        jobs.cancel(job.id)
        got = await asyncio.wait_for(asyncio.gather(waiting, return_exceptions=True), 5)
        state = jobs.get(job.id).state
        jobs.create("fill"), jobs.create("fill")  # its place is free again (3 at most: the first and these two)
        fn.release.set()
        await first
        jobs.shutdown()
        return got[0], state, fn.calls

    got, state, calls = asyncio.run(main())
    assert isinstance(got, Cancelled) and state == "cancelled" and calls == [[1]]


def test_a_job_cancelled_while_it_waits_for_a_worker_ends_at_once():
    """A job of ``run`` (sampling, a long fill) cancelled before a worker takes it ends then, with its place among
    the server's jobs freed, and never runs; the worker's own job's result and another's error still arrive."""

    async def main():
        jobs, gate, ran = Jobs(workers=1, max_jobs=3), threading.Event(), []

        def busy(job):
            assert gate.wait(10)
            return "busy done"

        def never(job):
            ran.append(job.id)
            return "should not run"

        def fails(job):
            raise ValueError("bad window")

        first = jobs.run(jobs.create("sample"), busy)
        queued = jobs.create("sample")
        waiting = jobs.run(queued, never)
        failing = jobs.run(jobs.create("fill"), fails)
        assert jobs.get(queued.id).state == "queued"
        jobs.cancel(queued.id)
        got = await asyncio.wait_for(asyncio.gather(waiting, return_exceptions=True), 5)
        state = jobs.get(queued.id).state
        extra = jobs.create("fill")  # its place is free again (3 at most: first, failing and this one)
        gate.set()
        rest = await asyncio.wait_for(asyncio.gather(first, failing, return_exceptions=True), 10)
        jobs.forget(extra)
        jobs.shutdown()
        return got[0], state, rest, ran

    got, state, (first, failing), ran = asyncio.run(main())
    assert isinstance(got, Cancelled) and state == "cancelled" and ran == []
    assert first == "busy done" and isinstance(failing, ValueError) and "bad window" in str(failing)


def test_closing_ends_the_jobs_waiting_for_a_worker():
    """On a stop the jobs no worker has taken end at once (their requests answer 503), not when the running one
    lets its worker go; the running one ends cancelled too, its answer dropped."""

    async def main():
        jobs, started, gate = Jobs(workers=1), threading.Event(), threading.Event()

        def busy(job):
            started.set()
            assert gate.wait(10)
            return "finished"

        running = jobs.run(jobs.create("sample"), busy)
        await asyncio.to_thread(started.wait, 10)
        queued = [jobs.run(jobs.create("sample"), busy) for _ in range(2)]
        jobs.close()
        got = await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), 5)
        gate.set()
        last = await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), 10)
        jobs.shutdown()
        return got + last, [j.state for j in jobs._finished.values()]

    got, states = asyncio.run(main())
    assert all(isinstance(g, Cancelled) for g in got) and states == ["cancelled"] * 3


def test_each_job_of_a_batch_ends_as_soon_as_its_answer_is_ready():
    """A batch gives its outcomes one by one (the route encodes each answer after the one engine call): the first
    job's answer is delivered and its place among the server's jobs freed while the others are still being encoded.
    (All of a batch were held, counted as running, until the last answer was done: with every place taken by one
    batch, a client got 503 "server busy" although half its jobs had their answers.)"""

    async def scenario():
        jobs, gate, release = Jobs(workers=1, max_jobs=3), threading.Event(), threading.Event()
        holder = jobs.run(jobs.create("sample"), lambda job: release.wait(10))  # the one worker: both fills wait

        def one_by_one(items):
            assert items == [1, 2]  # one batch
            yield items[0] * 10
            assert gate.wait(10)  # the second answer is still being encoded
            yield items[1] * 10

        first, second = jobs.create("fill"), jobs.create("fill")
        futures = [jobs.run_batched(job, "k", i, one_by_one) for job, i in ((first, 1), (second, 2))]
        release.set()
        await asyncio.wait_for(holder, 5)
        got_first = await asyncio.wait_for(futures[0], 5)
        state = jobs.get(first.id).state
        free = [jobs.create("fill"), jobs.create("fill")]  # 3 at most: the second and these (no 503)
        gate.set()
        got_second = await asyncio.wait_for(futures[1], 5)
        for job in free:
            jobs.forget(job)
        jobs.shutdown()
        return got_first, state, got_second

    assert asyncio.run(scenario()) == (10, "done", 20)


def test_a_batch_job_whose_request_leaves_as_its_answer_is_delivered_leaves_the_rest_answered():
    """The awaiting side of a job may cancel its future (from the event loop's thread) just after the worker looked
    at it and before the worker sets it: that raised in the worker, and the jobs after it in the batch never ended,
    counted as running for good (a server that answers 503 "busy" with nothing to do) and their clients never
    answered."""
    import concurrent.futures

    from backend.jobs import _Waiting

    class CancelledJustAfterTheLook(concurrent.futures.Future):
        def done(self) -> bool:
            was = super().done()
            self.cancel()
            return was

    jobs = Jobs(workers=1, max_jobs=3)
    waiting = [_Waiting(jobs.create("fill"), i, future)
               for i, future in enumerate((concurrent.futures.Future(), CancelledJustAfterTheLook(),
                                           concurrent.futures.Future()))]
    jobs._waiting["k"] = waiting
    jobs._run_batch("k", lambda items: [i * 10 for i in items])
    assert [w.job.state for w in waiting] == ["done"] * 3 and not jobs._active
    assert waiting[0].future.result(0) == 0 and waiting[2].future.result(0) == 20
    for _ in range(3):
        jobs.create("fill")  # every place free
    jobs.shutdown()

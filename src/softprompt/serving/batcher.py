"""Dynamic batching: requests that arrive together share one engine call.

:class:`Batcher` holds a bounded asyncio queue of jobs. Its worker takes the first waiting job,
then keeps collecting for up to ``max_wait_ms`` or until ``max_batch_size`` rows are gathered,
groups the jobs by key (e.g. ``"classify"``, or ``("generate", max_new_tokens)``), runs one call
per key in a thread (:func:`asyncio.to_thread`, so the event loop keeps accepting requests), and
resolves each job's future with its own rows' results.

A full queue refuses a job at once (:class:`QueueFullError`); a job once accepted is always
answered: with its results, or with the exception its own rows raise (a failing batch is retried
job by job, so one bad request does not fail its neighbours), also when the batcher stops.

Work and waiting are bounded: a batch holds at most ``max_batch_size`` rows and ``max_batch_tokens``
tokens (a job's ``cost``; a single job over the budget runs alone); a job given a ``timeout`` is
answered with :class:`DeadlineExceededError` when it runs out; and a job whose caller stopped
waiting (timed out, or its task was cancelled because the client went away) is dropped from the
queue without being computed. The batcher also learns the seconds per token of its recent
batches, and refuses at once (:class:`QueueFullError`) a job that the work already accepted
would keep waiting past :data:`ADMIT_SHARE` of its ``timeout``: a request is refused in a
millisecond rather than answered 504 after the whole deadline. Until it has timed a batch, it
accepts at most one batch of tokens (``max_batch_tokens``) of such jobs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

from ..errors import SoftPromptError

log = logging.getLogger(__name__)

ADMIT_SHARE = 0.8
"""A job is admitted if the estimated wait for the work ahead is at most this share of its timeout."""

Runner = Callable[[Hashable, list[Any]], list[Any]]
"""``run(key, items) -> results``, one result per item, in order; called in a worker thread."""


class QueueFullError(SoftPromptError, RuntimeError):
    """The request queue is full: try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceededError(SoftPromptError, TimeoutError):
    """A job was not answered within its deadline (it is dropped if it had not started)."""


@dataclass
class _Job:
    key: Hashable
    items: list[Any]
    future: asyncio.Future
    cost: int = 0
    deadline: float | None = None  # time.perf_counter() by which it must be answered
    gave_up: str | None = None  # why the caller stopped waiting ("deadline", "client_gone"): drop it unless running
    queued_at: float = field(default_factory=time.perf_counter)

    def dropped(self, now: float) -> str | None:
        """Why this job should not run any more (``"client_gone"``, ``"deadline"``), else None."""
        if self.gave_up is not None:
            return self.gave_up
        if self.future.done():
            return "client_gone"
        if self.deadline is not None and now >= self.deadline:
            return "deadline"
        return None


class Batcher:
    """Collect jobs across requests into batches of at most ``max_batch_size`` rows.

    ``on_batch(rows)`` is called after each engine call with its number of rows, and
    ``on_drop(reason)`` for each queued job dropped unrun (``"deadline"`` or ``"client_gone"``),
    both for metrics. ``max_batch_tokens`` bounds the summed ``cost`` of the jobs in one batch
    (None: no bound).
    """

    def __init__(self, run: Runner, max_batch_size: int = 32, max_wait_ms: float = 5.0, max_queue: int = 256,
                 on_batch: Callable[[int], None] | None = None, max_batch_tokens: int | None = None,
                 on_drop: Callable[[str], None] | None = None):
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0 or (max_batch_tokens is not None and max_batch_tokens < 1):
            raise ValueError("max_batch_size, max_queue and max_batch_tokens must be at least 1, max_wait_ms at least 0")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.on_drop = on_drop
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self._held: _Job | None = None  # a job that did not fit the last batch: it goes first next time
        self._busy = False
        self._closing = False
        self._pending_tokens = 0  # cost of the accepted jobs not yet answered
        self._seconds_per_token: float | None = None  # moving average over recent batches

    @property
    def depth(self) -> int:
        """Jobs waiting (not yet in a running batch)."""
        return (self._queue.qsize() if self._queue else 0) + (self._held is not None)

    @property
    def backlog_s(self) -> float:
        """Estimated seconds to finish the work accepted so far (0 before the first batch)."""
        return self._pending_tokens * (self._seconds_per_token or 0.0)

    @property
    def closing(self) -> bool:
        """Whether :meth:`stop` has begun (new jobs are refused)."""
        return self._closing

    @property
    def accepting(self) -> bool:
        """Whether a job submitted now would be queued (running, not stopping, queue not full)."""
        return self._worker is not None and not self._closing and self.depth < self.max_queue

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._closing = False
        self._worker = asyncio.create_task(self._loop())

    async def stop(self, timeout: float | None = None) -> None:
        """Answer every job already accepted, then stop the worker. After ``timeout`` seconds the
        jobs still queued are answered with :class:`QueueFullError` and the worker is cancelled
        (a batch already running in its thread finishes there unread)."""
        if self._worker is None:
            return
        self._closing = True
        give_up = None if timeout is None else time.perf_counter() + timeout
        while (self.depth or self._busy) and (give_up is None or time.perf_counter() < give_up):
            await asyncio.sleep(0.005)
        leftover = ([self._held] if self._held else []) + [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        self._held = None
        for job in leftover:
            _resolve(job, exc=QueueFullError("the server stopped before this request ran; retry on another instance", 5))
        self._worker.cancel()
        try:
            await self._worker
        except asyncio.CancelledError:
            pass
        self._worker = None

    async def submit(self, key: Hashable, items: Sequence[Any], cost: int = 0, timeout: float | None = None) -> list[Any]:
        """Queue ``items`` under ``key`` and wait for their results.

        ``cost`` counts against ``max_batch_tokens``; ``timeout`` (seconds) is the job's deadline.
        Raises :class:`QueueFullError` at once if the queue is full, :class:`DeadlineExceededError`
        when ``timeout`` runs out. Cancelling the caller drops the job if it has not started; a
        running batch is never cancelled.
        """
        if self._closing:
            raise QueueFullError("the server is shutting down; retry on another instance", retry_after=5)
        if self._queue is None or self._worker is None:
            raise RuntimeError("the batcher is not running; call start() first")
        if timeout is not None and self._pending_tokens:
            if self._seconds_per_token is None:  # not timed yet: at most one batch of work
                if self.max_batch_tokens is not None and self._pending_tokens + cost > self.max_batch_tokens:
                    raise QueueFullError("the server is busy with its first batch; retry shortly")
            elif (eta := (self._pending_tokens + cost) * self._seconds_per_token) > ADMIT_SHARE * timeout:
                raise QueueFullError(f"the server is busy: the work ahead would take about {eta:.0f} s, too close to the "
                                     f"{timeout:g} s deadline; retry later",
                                     retry_after=max(1, min(60, math.ceil(eta - ADMIT_SHARE * timeout))))
        now = time.perf_counter()
        job = _Job(key, list(items), asyncio.get_running_loop().create_future(), cost,
                   None if timeout is None else now + timeout)
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFullError(f"the request queue is full ({self.max_queue} requests waiting); retry shortly") from None
        self._pending_tokens += cost
        job.future.add_done_callback(lambda _: self._release(cost))
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)  # shield: never cancel a batch
        except asyncio.TimeoutError:
            job.gave_up = "deadline"
            raise DeadlineExceededError(
                f"not answered within the {timeout:g} s deadline (the server is busy); retry later, or send fewer "
                f"or shorter inputs") from None
        except asyncio.CancelledError:
            job.gave_up = "client_gone"
            raise

    def _release(self, cost: int) -> None:
        self._pending_tokens -= cost

    def _take(self, job: _Job) -> bool:
        """Whether ``job`` should still run; a job to drop is answered here and counted."""
        reason = job.dropped(time.perf_counter())
        if reason is None:
            return True
        _resolve(job, exc=DeadlineExceededError("dropped unrun: its deadline passed in the queue")
                 if reason == "deadline" else asyncio.CancelledError())
        if self.on_drop is not None:
            self.on_drop(reason)
        return False

    async def _first(self) -> _Job:
        while True:
            job = self._held or await self._queue.get()
            self._held = None
            if self._take(job):
                return job

    async def _collect(self) -> list[_Job]:
        first = await self._first()
        self._busy = True  # from here until the batch is answered
        jobs, rows, tokens = [first], len(first.items), first.cost
        budget = self.max_batch_tokens
        deadline = time.perf_counter() + self.max_wait
        while rows < self.max_batch_size and (budget is None or tokens < budget):
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
            if not self._take(job):
                continue
            if rows + len(job.items) > self.max_batch_size or (budget is not None and tokens + job.cost > budget):
                self._held = job
                break
            jobs.append(job)
            rows += len(job.items)
            tokens += job.cost
        return jobs

    async def _loop(self) -> None:
        while True:
            jobs = await self._collect()
            try:
                groups: dict[Hashable, list[_Job]] = {}
                for job in jobs:
                    groups.setdefault(job.key, []).append(job)
                for key, group in groups.items():
                    await self._run_group(key, group)
            finally:
                self._busy = False

    async def _run_group(self, key: Hashable, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if self._take(job)]  # a group waits for the one before it
        if not jobs:
            return
        items = [x for job in jobs for x in job.items]
        start = time.perf_counter()
        try:
            results = await asyncio.to_thread(self.run, key, items)
            if len(results) != len(items):
                raise RuntimeError(f"the engine returned {len(results)} results for {len(items)} items")
        except Exception as exc:  # noqa: BLE001 - every accepted job gets an answer
            if len(jobs) > 1:  # find the job at fault; the others still get their answers
                for job in jobs:
                    await self._run_group(key, [job])
                return
            _resolve(jobs[0], exc=exc)
            return
        tokens = sum(job.cost for job in jobs)
        if tokens:
            rate = (time.perf_counter() - start) / tokens
            old = self._seconds_per_token
            self._seconds_per_token = rate if old is None else 0.7 * old + 0.3 * rate
        if self.on_batch is not None:
            self.on_batch(len(items))
        first = 0
        for job in jobs:
            _resolve(job, results[first: first + len(job.items)])
            first += len(job.items)


def _resolve(job: _Job, results: list[Any] | None = None, exc: BaseException | None = None) -> None:
    if job.future.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        job.future.cancel()
    elif exc is not None:
        job.future.set_exception(exc)
        if job.gave_up is not None:
            job.future.exception()  # nobody awaits it: mark it retrieved so asyncio does not log it
    else:
        job.future.set_result(results)

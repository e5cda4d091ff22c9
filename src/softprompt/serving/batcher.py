"""Dynamic batching: requests that arrive together share one engine call.

:class:`Batcher` holds a bounded asyncio queue of jobs. Its worker takes the first waiting job,
then keeps collecting for up to ``max_wait_ms`` or until ``max_batch_size`` rows are gathered,
groups the jobs by key (e.g. ``"classify"``, or ``("generate", max_new_tokens)``), runs one call
per key in a thread (:func:`asyncio.to_thread`, so the event loop keeps accepting requests), and
resolves each job's future with its own rows' results.

A full queue refuses a job at once (:class:`QueueFullError`); a job once accepted is always
answered: with its results, or with the exception its own rows raise (a failing batch is retried
job by job, so one bad request does not fail its neighbours), also when the batcher stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

from ..errors import SoftPromptError

log = logging.getLogger(__name__)

Runner = Callable[[Hashable, list[Any]], list[Any]]
"""``run(key, items) -> results``, one result per item, in order; called in a worker thread."""


class QueueFullError(SoftPromptError, RuntimeError):
    """The request queue is full: try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Job:
    key: Hashable
    items: list[Any]
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """Collect jobs across requests into batches of at most ``max_batch_size`` rows.

    ``on_batch(rows)`` is called after each engine call with its number of rows (for metrics).
    """

    def __init__(self, run: Runner, max_batch_size: int = 32, max_wait_ms: float = 5.0, max_queue: int = 256,
                 on_batch: Callable[[int], None] | None = None):
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and max_queue must be at least 1, max_wait_ms at least 0")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self._held: _Job | None = None  # a job that did not fit the last batch: it goes first next time
        self._busy = False
        self._closing = False

    @property
    def depth(self) -> int:
        """Jobs waiting (not yet in a running batch)."""
        return (self._queue.qsize() if self._queue else 0) + (self._held is not None)

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._closing = False
        self._worker = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Answer every job already accepted, then stop the worker."""
        if self._worker is None:
            return
        self._closing = True
        while self.depth or self._busy:
            await asyncio.sleep(0.005)
        self._worker.cancel()
        try:
            await self._worker
        except asyncio.CancelledError:
            pass
        self._worker = None

    async def submit(self, key: Hashable, items: Sequence[Any]) -> list[Any]:
        """Queue ``items`` under ``key`` and wait for their results; :class:`QueueFullError` if full."""
        if self._closing:
            raise QueueFullError("the server is shutting down; retry on another instance", retry_after=5)
        if self._queue is None or self._worker is None:
            raise RuntimeError("the batcher is not running; call start() first")
        job = _Job(key, list(items), asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFullError(f"the request queue is full ({self.max_queue} requests waiting); retry shortly") from None
        return await asyncio.shield(job.future)  # a client going away must not cancel a batch

    async def _collect(self) -> list[_Job]:
        first = self._held or await self._queue.get()
        self._held = None
        self._busy = True  # from here until the batch is answered
        jobs, rows = [first], len(first.items)
        deadline = time.perf_counter() + self.max_wait
        while rows < self.max_batch_size:
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
            if rows + len(job.items) > self.max_batch_size:
                self._held = job
                break
            jobs.append(job)
            rows += len(job.items)
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
        items = [x for job in jobs for x in job.items]
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
        if self.on_batch is not None:
            self.on_batch(len(items))
        start = 0
        for job in jobs:
            _resolve(job, results[start: start + len(job.items)])
            start += len(job.items)


def _resolve(job: _Job, results: list[Any] | None = None, exc: BaseException | None = None) -> None:
    if job.future.done():
        return
    if exc is not None:
        job.future.set_exception(exc)
    else:
        job.future.set_result(results)

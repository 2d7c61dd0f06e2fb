"""Admission, queueing and workers of the System-2 service (docs/systems.md, "Under load").

A replica runs `workers` System-2 jobs at once (one per device, or several on one device), each
item of a call (a /v1/batch item, or the one video of /v1/segment) being one job. Calls are
admitted before their body is read: at most `workers + queue_size` at a time, and none whose
expected wait (the jobs ahead of it times the recent mean job time, over the workers) exceeds the
queue timeout. A refused call gets 429 with Retry-After at once, so no client waits out a timeout
to learn the service is busy, and memory stays bounded by the admitted calls' bodies. Queueing
and work have separate timeouts: a job still waiting after `queue_timeout_s` gets 503 (the
estimate was wrong), one running longer than `work_timeout_s` gets 504 and is told to stop at its
next frame. The figures go to Prometheus (`/metrics`): queue depth, jobs running, admitted calls,
queue / work / call latency histograms, masks produced, refusals by reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# job and call durations of System 2: a 64 px test clip takes 0.1 s, a 90 s 720p clip minutes
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640, 1280)
_FIRST_GUESS_S = 5.0  # mean job time assumed until one has finished


class Busy(Exception):  # noqa: N818 (a state: the HTTP layer answers 429 or 503)
    """No room for a call or a job: answer `status` with Retry-After `retry_after_s`."""

    def __init__(self, status: int, retry_after_s: int, detail: str):
        super().__init__(detail)
        self.status, self.retry_after_s, self.detail = status, retry_after_s, detail


class WorkTimeout(Exception):  # noqa: N818
    pass


class Cancelled(Exception):  # noqa: N818
    """Raised inside a job whose caller has gone (timed out, or another batch item failed)."""


@dataclass
class _Job:
    item: object
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.monotonic)
    started: asyncio.Future = None  # type: ignore[assignment]
    done: asyncio.Future = None  # type: ignore[assignment]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.started, self.done = self.loop.create_future(), self.loop.create_future()
        # a job whose caller has gone still settles: mark its outcome as seen, not as lost
        self.done.add_done_callback(lambda f: f.cancelled() or f.exception())


class Metrics:
    """The service's Prometheus collectors, in a registry of their own (one per app)."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        p = "omnir1_system2_"
        self.queue_depth = Gauge(p + "queue_depth", "jobs waiting for a worker", registry=r)
        self.running = Gauge(p + "jobs_running", "jobs being processed", registry=r)
        self.admitted = Gauge(p + "calls_admitted", "calls admitted and not answered", registry=r)
        self.workers = Gauge(p + "workers", "jobs this replica runs at once", registry=r)
        self.queue_s = Histogram(
            p + "queue_seconds", "wait of a job for a worker", buckets=_BUCKETS, registry=r
        )
        self.work_s = Histogram(
            p + "work_seconds", "processing time of a job", buckets=_BUCKETS, registry=r
        )
        self.call_s = Histogram(
            p + "call_seconds",
            "time from admission to answer of a POST",
            ["endpoint", "code"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.masks = Counter(p + "masks", "masks produced (requests x frames)", registry=r)
        self.refused = Counter(
            p + "refused", "calls and jobs refused or cut short", ["reason"], registry=r
        )


class Scheduler:
    """Admission control and a pool of worker threads, each bound to one set of models.

    `run(models, item, cancelled)` does one job in a worker thread; it should check `cancelled`
    (a threading.Event) now and then and raise Cancelled when set."""

    def __init__(
        self,
        run: Callable[[object, object, threading.Event], object],
        worker_models: Sequence[object],
        *,
        queue_size: int,
        queue_timeout_s: float,
        work_timeout_s: float,
        metrics: Metrics | None = None,
    ):
        if not worker_models:
            raise ValueError("at least one worker is needed")
        self.run = run
        self.workers = len(worker_models)
        self.capacity = self.workers + queue_size
        self.queue_timeout_s, self.work_timeout_s = queue_timeout_s, work_timeout_s
        self.metrics = metrics or Metrics()
        self.metrics.workers.set(self.workers)
        self._lock = threading.Lock()
        self._admitted = self._waiting = self._running = 0
        self._mean_s: float | None = None  # recent mean job time (exponentially weighted)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, args=(m,), name=f"system2-worker-{i}", daemon=True)
            for i, m in enumerate(worker_models)
        ]
        for t in self._threads:
            t.start()

    # -- admission (before a call's body is read) --------------------------------------------

    def expected_wait_s(self, extra_jobs: int = 1) -> float:
        """Seconds until the last of `extra_jobs` more jobs would start, from the jobs ahead."""
        ahead = self._waiting + self._running + extra_jobs
        rounds = math.ceil((ahead - self.workers) / self.workers) if ahead > self.workers else 0
        return rounds * (self._mean_s or _FIRST_GUESS_S)

    def admit(self) -> None:
        """Count a call in, or raise Busy(429) when it would not be served in time."""
        with self._lock:
            wait = self.expected_wait_s()
            if self._admitted >= self.capacity or wait > self.queue_timeout_s:
                self.metrics.refused.labels("busy").inc()
                retry = max(1, math.ceil(wait - self.queue_timeout_s), self._retry_after())
                raise Busy(429, retry, "System 2 is busy; retry later")
            self._admitted += 1
            self.metrics.admitted.set(self._admitted)

    def release(self) -> None:
        with self._lock:
            self._admitted -= 1
            self.metrics.admitted.set(self._admitted)

    def _retry_after(self) -> int:
        """About when a worker frees: one mean job time over the workers, at least 1 s."""
        return max(1, math.ceil((self._mean_s or _FIRST_GUESS_S) / self.workers))

    # -- jobs ---------------------------------------------------------------------------------

    async def run_items(self, items: Sequence[object]) -> list:
        """Every item as a job, all queued at once (they run concurrently on free workers);
        the results in order. The first failure cancels the others and is raised."""
        loop = asyncio.get_running_loop()
        jobs = [_Job(item, loop) for item in items]
        with self._lock:
            self._waiting += len(jobs)
            self.metrics.queue_depth.set(self._waiting)
        for job in jobs:
            self._jobs.put(job)
        waits = [asyncio.ensure_future(self._wait(job)) for job in jobs]
        try:
            return list(await asyncio.gather(*waits))
        finally:  # after a failure (or the caller's cancellation) nothing more runs for it
            for job, wait in zip(jobs, waits, strict=True):
                job.cancelled.set()  # no-ops for what has finished
                wait.cancel()

    async def _wait(self, job: _Job):
        try:
            await asyncio.wait_for(asyncio.shield(job.started), self.queue_timeout_s)
        except TimeoutError:
            job.cancelled.set()
            self.metrics.refused.labels("queue_timeout").inc()
            raise Busy(
                503,
                self._retry_after(),
                f"System 2 is busy: no worker free within {self.queue_timeout_s:g} s",
            ) from None
        try:
            return await asyncio.wait_for(asyncio.shield(job.done), self.work_timeout_s)
        except TimeoutError:
            job.cancelled.set()  # the worker stops at its next frame
            self.metrics.refused.labels("work_timeout").inc()
            raise WorkTimeout(f"System 2 took longer than {self.work_timeout_s:g} s") from None

    def _work(self, models) -> None:
        while (job := self._jobs.get()) is not None:
            with self._lock:
                self._waiting -= 1
                self.metrics.queue_depth.set(self._waiting)
                if job.cancelled.is_set():  # its caller has gone: never started
                    continue
                self._running += 1
                self.metrics.running.set(self._running)
            self.metrics.queue_s.observe(time.monotonic() - job.enqueued)
            _settle(job.loop, job.started, True, None)
            start = time.monotonic()
            result, error = None, None
            try:
                result = self.run(models, job.item, job.cancelled)
            except BaseException as exc:  # delivered to the caller, whatever it is
                error = exc
            took = time.monotonic() - start
            with self._lock:
                self._running -= 1
                self.metrics.running.set(self._running)
                if error is None:
                    self._mean_s = took if self._mean_s is None else 0.8 * self._mean_s + 0.2 * took
            self.metrics.work_s.observe(took)
            _settle(job.loop, job.done, result, error)

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)


def _settle(loop, future: asyncio.Future, result, error) -> None:
    def settle():
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the caller's event loop closed: nobody waits
        loop.call_soon_threadsafe(settle)

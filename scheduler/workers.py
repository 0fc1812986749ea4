"""Timed jobs on a bounded pool of threads: a job between two of its steps holds no thread.

The loops use it (``scheduler.service.loops``): a loop's pass is a step, its pause the time until the
next. A timer thread keeps when each job is next due; due jobs, earliest first, go to at most ``limit``
worker threads, started when every worker is busy and ended after ``idle`` seconds without work. So the
threads in use follow the passes going, not the organisations configured: 1,000 loops in their pause
hold none. A job due while every worker is busy waits its turn, in the order the jobs became due.

A step that goes on waiting for something else than this host (a YARN application, followed through
the ResourceManager) calls ``release_worker()``: its thread stops counting against ``limit`` for the rest
of that step (another may start), and ends with it. Such runs are bounded by the cluster, not here.

Why a pool of threads and not asyncio: every step is blocking code (git, SQLAlchemy on SQLite or
PostgreSQL, uv, a child's pipes, the ResourceManager's REST); under asyncio each would still run on a
thread, and the code would be written twice over.
"""

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from typing import Protocol

log = logging.getLogger(__name__)


class Job(Protocol):
    name: str

    def step(self) -> float | None:
        """One step; the seconds until the next, None when the job has ended."""
        ...


class _Worker(threading.local):
    pool: "Workers | None" = None
    released = False


_current = _Worker()


def release_worker() -> None:
    """The calling step now waits on something else than this host: its thread no longer counts against
    its pool's limit (no-op outside a pool's worker, or when already released)."""
    pool = _current.pool
    if pool is not None and not _current.released:
        _current.released = True
        pool._released()


class Workers:
    def __init__(self, limit: int, idle: float = 60.0) -> None:
        self.limit, self.idle = max(1, limit), idle
        self._lock = threading.Lock()
        self._timer = threading.Condition(self._lock)  # the timer thread waits here
        self._work = threading.Condition(self._lock)  # idle workers wait here
        self._due: list[tuple[float, int, Job]] = []  # heap; an entry is valid while _when agrees
        self._when: dict[Job, tuple[float, int]] = {}  # jobs waiting for their time
        self._ready: deque[Job] = deque()  # due, waiting for a worker
        self._running: set[Job] = set()
        self._woken: set[Job] = set()  # woken during a step: the next one at once
        self._seq = itertools.count()
        self._counted = 0  # workers counting against the limit (busy or idle)
        self._idle = 0
        self._released_busy = 0  # workers whose step released them
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def threads(self) -> int:
        """Worker threads alive now (the timer thread not counted)."""
        with self._lock:
            return self._counted + self._released_busy

    def add(self, job: Job, delay: float = 0.0) -> None:
        """``job``'s first step in ``delay`` seconds."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._keep_time, name="workers-timer", daemon=True)
                self._thread.start()
            self._schedule(job, delay)

    def wake(self, job: Job) -> None:
        """``job``'s next step now, or right after the one going."""
        with self._lock:
            if job in self._running:
                self._woken.add(job)
            elif job in self._when:
                self._schedule(job, 0.0)

    def resize(self, limit: int) -> None:
        with self._lock:
            self.limit = max(1, limit)
            self._start_workers()

    def close(self) -> None:
        """No more steps: the timer and idle workers end (a step going ends on its own)."""
        with self._lock:
            self._closed = True
            self._timer.notify_all()
            self._work.notify_all()

    # -- under the lock -------------------------------------------------------------------------------

    def _schedule(self, job: Job, delay: float) -> None:
        key = (time.monotonic() + max(0.0, delay), next(self._seq))
        self._when[job] = key
        heapq.heappush(self._due, (*key, job))
        self._timer.notify()

    def _start_workers(self) -> None:
        while len(self._ready) > self._idle and self._counted < self.limit and not self._closed:
            self._counted += 1
            self._idle += 1  # counted idle until it takes a job, so that one start covers one job
            threading.Thread(target=self._serve, name="loop-worker", daemon=True).start()

    def _released(self) -> None:
        with self._lock:
            self._counted -= 1
            self._released_busy += 1
            self._start_workers()

    # -- threads ------------------------------------------------------------------------------------

    def _keep_time(self) -> None:
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                while self._due and self._due[0][0] <= now:
                    when, seq, job = heapq.heappop(self._due)
                    if self._when.get(job) == (when, seq):
                        del self._when[job]
                        self._ready.append(job)
                if self._ready:
                    self._work.notify(len(self._ready))
                    self._start_workers()
                self._timer.wait(self._due[0][0] - now if self._due else None)

    def _serve(self) -> None:
        _current.pool, _current.released = self, False
        while True:
            with self._lock:
                while not self._ready and not self._closed:
                    if not self._work.wait(self.idle) and not self._ready:
                        break
                if not self._ready or self._closed:
                    self._idle -= 1
                    self._counted -= 1
                    return
                self._idle -= 1
                job = self._ready.popleft()
                self._running.add(job)
            try:
                after = job.step()
            except Exception:  # a job's own bug: logged, and it steps again after a minute
                log.exception("%s: step failed", job.name)
                after = 60.0
            with self._lock:
                self._running.discard(job)
                if after is not None:
                    self._schedule(job, 0.0 if job in self._woken else after)
                self._woken.discard(job)
                if _current.released:  # a worker started in its place counts now: this one ends
                    self._released_busy -= 1
                    return
                self._idle += 1

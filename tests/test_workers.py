"""Timed jobs on a bounded pool (``scheduler.workers``): jobs in their pause hold no thread, the limit
holds, due jobs are taken in the order they became due, a wake-up ends a pause, and a released step
lets another start."""

import threading
import time

from scheduler.workers import Workers, release_worker
from tests.helpers.backends import wait_for


class Counting:
    """A job stepping ``steps`` times, ``pause`` apart; each step records (name, thread) and may block."""

    def __init__(
        self, name: str, steps: int, pause: float, record: list, block: threading.Event | None = None
    ) -> None:
        self.name, self.steps, self.pause, self.record, self.block = name, steps, pause, record, block
        self.done = 0

    def step(self) -> float | None:
        self.record.append((self.name, threading.get_ident(), time.monotonic()))
        if self.block is not None:
            self.block.wait(30)
        self.done += 1
        return self.pause if self.done < self.steps else None


def test_many_jobs_in_their_pause_hold_no_thread_and_the_limit_holds() -> None:
    record: list = []
    pool = Workers(4, idle=0.2)
    jobs = [Counting(f"j{i}", 3, 0.05, record) for i in range(300)]
    peak = 0
    for job in jobs:
        pool.add(job)
    deadline = time.monotonic() + 30
    while any(job.done < 3 for job in jobs):
        peak = max(peak, pool.threads)
        assert time.monotonic() < deadline, "not every job took its three steps"
        time.sleep(0.001)  # sampling the thread count, not a synchronisation: the loop ends on the condition
    assert len(record) == 900
    assert 1 <= peak <= 4
    wait_for(lambda: pool.threads == 0, 10, "the idle workers to end")
    pool.close()


def test_due_jobs_are_taken_in_the_order_they_became_due() -> None:
    record: list = []
    gate = threading.Event()
    pool = Workers(1)
    first = Counting("first", 1, 0, record, block=gate)
    pool.add(first)
    wait_for(lambda: record, 10, "the first step")
    for name, delay in (("c", 0.03), ("a", 0.0), ("b", 0.015)):
        pool.add(Counting(name, 1, 0, record), delay)
    time.sleep(0.1)  # the input: all three due while the only worker is busy
    gate.set()
    wait_for(lambda: len(record) == 4, 10, "every job's step")
    assert [name for name, _, _ in record] == ["first", "a", "b", "c"]
    pool.close()


def test_a_wake_up_ends_the_pause_and_one_during_a_step_brings_the_next_at_once() -> None:
    record: list = []
    pool = Workers(2)
    job = Counting("long-pause", 3, 3600, record)
    pool.add(job)
    wait_for(lambda: len(record) == 1, 10, "the first step")
    pool.wake(job)
    wait_for(lambda: len(record) == 2, 10, "the step the wake-up brought")
    gate = threading.Event()
    blocked = Counting("blocked", 2, 3600, record, block=gate)
    pool.add(blocked)
    wait_for(lambda: any(name == "blocked" for name, _, _ in record), 10, "the blocked step")
    pool.wake(blocked)  # during its step: the next follows at once instead of in an hour
    gate.set()
    wait_for(lambda: blocked.done == 2, 10, "the step after the wake-up during a step")
    pool.close()


def test_a_released_step_lets_another_start_and_its_thread_ends_with_it() -> None:
    record: list = []
    gate = threading.Event()

    class Following(Counting):
        def step(self) -> float | None:
            release_worker()  # e.g. a YARN application followed: bounded by the cluster, not here
            return super().step()

    pool = Workers(1, idle=0.2)
    following = Following("following", 1, 0, record, block=gate)
    pool.add(following)
    wait_for(lambda: record, 10, "the following step")
    seen: list[int] = []

    class Other(Counting):
        def step(self) -> float | None:
            seen.append(pool.threads)
            return super().step()

    other = Other("other", 2, 0, record)
    pool.add(other)
    wait_for(lambda: other.done == 2, 10, "the other job, while the released step goes on")
    assert seen == [2, 2] and following.done == 0  # the released thread and the one started for other
    gate.set()
    wait_for(lambda: following.done == 1 and pool.threads == 0, 10, "the released thread to end")
    pool.close()

"""The capacity allocator: slots per kind, fair order across organisations, reserved metadata slots,
memory, cancellation and the waiting reasons. Real threads; waits are on conditions with deadlines."""

import threading
from collections.abc import Callable

import pytest

from scheduler.capacity import (
    LOCAL,
    MEMORY,
    SUBMISSIONS,
    Capacity,
    CapacityError,
    Demand,
    Grant,
    Limits,
    memory_mib,
)
from tests.helpers.backends import wait_for

LOCAL_RUN = Demand(local=True)


class Waiter(threading.Thread):
    """One run waiting for its slot in a thread of its own, like a loop."""

    def __init__(
        self,
        capacity: Capacity,
        codops: str,
        demand: Demand,
        due: float,
        *,
        metadata: bool = False,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(daemon=True)
        self.capacity, self.codops, self.demand, self.due = capacity, codops, demand, due
        self.metadata, self.cancelled = metadata, cancelled
        self.grant: Grant | None = None
        self.error: Exception | None = None
        self.reasons: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.grant = self.capacity.acquire(
                self.codops,
                self.demand,
                self.due,
                metadata=self.metadata,
                cancelled=self.cancelled,
                waiting=self.reasons.append,
            )
        except Exception as exc:
            self.error = exc
        self.done.set()


def queued(capacity: Capacity, kind: str, count: int) -> None:
    wait_for(lambda: capacity.snapshot()[kind][2] == count, 5, f"{count} waiting for {kind}")


def test_memory_sizes() -> None:
    assert memory_mib("4g") == 4096
    assert memory_mib("512m") == memory_mib("512MiB") == memory_mib(512) == 512
    assert memory_mib("1t") == 1024 * 1024
    for bad in ("4x", "", "-1g", "1k"):
        with pytest.raises(ValueError):
            memory_mib(bad)


def test_slots_are_never_exceeded_and_a_release_serves_the_next() -> None:
    capacity = Capacity(Limits(local_runs=2))
    first = capacity.acquire("a", LOCAL_RUN, 1.0)
    second = capacity.acquire("b", LOCAL_RUN, 2.0)
    assert first is not None and second is not None
    third = Waiter(capacity, "c", LOCAL_RUN, 3.0)
    third.start()
    queued(capacity, LOCAL, 1)
    assert capacity.snapshot()[LOCAL] == (2, 2, 1)
    assert not third.done.is_set()
    assert third.reasons == ["waiting for a local slot (2/2 in use)"]
    first.release()
    first.release()  # giving back twice gives back once
    assert third.done.wait(5) and third.grant is not None
    assert third.grant.waited_seconds > 0
    assert capacity.snapshot()[LOCAL] == (2, 2, 0)


def test_an_organisation_just_served_goes_behind_those_already_waiting() -> None:
    """Org a's second run was due before b's and c's, but a was served after they started waiting: it
    goes last; none is served twice while another waits."""
    capacity = Capacity(Limits(local_runs=1))
    held = capacity.acquire("a", LOCAL_RUN, 10.0)
    assert held is not None
    b, c = Waiter(capacity, "b", LOCAL_RUN, 11.0), Waiter(capacity, "c", LOCAL_RUN, 12.0)
    b.start()
    queued(capacity, LOCAL, 1)
    c.start()
    queued(capacity, LOCAL, 2)
    again = Waiter(capacity, "a", LOCAL_RUN, 5.0)  # due long ago (its loop was busy running)
    again.start()
    queued(capacity, LOCAL, 3)
    assert again.reasons[-1] == "waiting for a local slot (1/1 in use, 2 ahead)"
    order = []
    for _ in range(3):
        held.release()
        served = wait_for(
            lambda: next((w for w in (b, c, again) if w.done.is_set() and w not in order), None), 5, "a grant"
        )
        order.append(served)
        assert served.grant is not None
        held = served.grant
    assert [w.codops for w in order] == ["b", "c", "a"]


def test_first_come_first_served_by_due_time() -> None:
    capacity = Capacity(Limits(local_runs=1))
    held = capacity.acquire("x", LOCAL_RUN, 0.0)
    assert held is not None
    late, early = Waiter(capacity, "late", LOCAL_RUN, 20.0), Waiter(capacity, "early", LOCAL_RUN, 10.0)
    late.start()
    queued(capacity, LOCAL, 1)
    early.start()
    queued(capacity, LOCAL, 2)
    held.release()
    assert early.done.wait(5) and not late.done.wait(0.3)


def test_kinds_queue_apart_and_yarn_submissions_give_their_slot_back() -> None:
    capacity = Capacity(Limits(local_runs=1, submissions=1))
    local = capacity.acquire("a", LOCAL_RUN, 1.0)
    assert local is not None
    waiting_local = Waiter(capacity, "b", LOCAL_RUN, 2.0)
    waiting_local.start()
    queued(capacity, LOCAL, 1)
    yarn = capacity.acquire("c", Demand(submission=True), 3.0)  # not held up by the local queue
    assert yarn is not None
    other = Waiter(capacity, "d", Demand(submission=True), 4.0)
    other.start()
    queued(capacity, SUBMISSIONS, 1)
    assert other.reasons == ["waiting for a spark-submit slot (1/1 in use)"]
    yarn.release_submission()  # spark-submit exited; the application goes on on YARN
    assert other.done.wait(5) and other.grant is not None
    assert not waiting_local.done.is_set()


def test_metadata_runs_take_their_reserved_slot_while_the_host_is_full() -> None:
    capacity = Capacity(Limits(local_runs=1, metadata_local_runs=1))
    assert capacity.acquire("a", LOCAL_RUN, 1.0) is not None
    meta = capacity.acquire("a", LOCAL_RUN, 2.0, metadata=True)
    assert meta is not None  # at once, although every shared slot is taken
    second_meta = Waiter(capacity, "b", LOCAL_RUN, 3.0, metadata=True)  # reserved taken: shared queue
    second_meta.start()
    queued(capacity, LOCAL, 1)
    assert second_meta.reasons == ["waiting for a local slot (1/1 in use)"]
    meta.release()
    assert second_meta.done.wait(5) and second_meta.grant is not None
    assert second_meta.grant.held == {"metadata_local": 1}


def test_memory_is_promised_in_order_and_a_too_large_demand_is_refused() -> None:
    capacity = Capacity(Limits(local_runs=10, memory_mib=4096))
    big = capacity.acquire("a", Demand(local=True, memory_mib=3072), 1.0)
    assert big is not None
    wants = Waiter(capacity, "b", Demand(local=True, memory_mib=2048), 2.0)
    wants.start()
    queued(capacity, MEMORY, 1)
    assert wants.reasons == ["waiting for memory (2 GiB; 3072 of 4096 MiB promised)"]
    small = Waiter(capacity, "c", Demand(local=True, memory_mib=512), 3.0)
    small.start()  # it would fit, but b was first: no overtaking within a kind
    queued(capacity, MEMORY, 2)
    assert not small.done.wait(0.3)
    big.release()
    assert wants.done.wait(5) and small.done.wait(5)
    with pytest.raises(CapacityError, match="asks for 8 GiB of memory; the host promises 4 GiB"):
        capacity.acquire("d", Demand(local=True, memory_mib=8192), 4.0)


def test_a_cancelled_wait_leaves_the_queue_and_a_resize_applies() -> None:
    capacity = Capacity(Limits(local_runs=1))
    held = capacity.acquire("a", LOCAL_RUN, 1.0)
    assert held is not None
    stop = threading.Event()
    waiter = Waiter(capacity, "b", LOCAL_RUN, 2.0, cancelled=stop.is_set)
    waiter.start()
    queued(capacity, LOCAL, 1)
    stop.set()
    assert waiter.done.wait(5) and waiter.grant is None
    assert capacity.snapshot()[LOCAL] == (1, 1, 0)
    later = Waiter(capacity, "c", LOCAL_RUN, 3.0)
    later.start()
    queued(capacity, LOCAL, 1)
    capacity.resize(Limits(local_runs=2))  # a reload adds a slot: the waiter gets it
    assert later.done.wait(5) and later.grant is not None

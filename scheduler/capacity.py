"""The shared host's capacity: slots that runs wait for before they start, granted fairly.

Every organisation's loop runs on one host. A run asks for what it holds while it goes (``Demand``): a
*local* slot for a process that lives on this host for the whole run (a python task, a Spark driver in
local or client mode), a *submission* slot for a ``spark-submit`` JVM, and MiB of the *memory* promised
to local runs. It waits until all of it fits (``Capacity.acquire``), and gives it back when it ends.

Fairness: waiters are served first come, first served by the time their run became due, but a waiter's
place is never earlier than its organisation's previous grant. An organisation just served goes behind
every run that was already waiting then, so no loop takes two slots in a row while another waits. Each
kind is its own queue (a run waiting for a local slot does not hold up a YARN submission); within a kind
an earlier waiter that does not fit yet (a large memory demand) is not overtaken. The metadata loop has
``metadata_local_runs`` reserved local slots and takes shared ones only when its own are all taken.
"""

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from scheduler.errors import PeachError

LOCAL, METADATA_LOCAL, SUBMISSIONS, MEMORY = "local", "metadata_local", "submissions", "memory_mib"
KINDS = (LOCAL, METADATA_LOCAL, SUBMISSIONS, MEMORY)
_WORDS = {LOCAL: "a local slot", METADATA_LOCAL: "a metadata slot", SUBMISSIONS: "a spark-submit slot"}
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_MIB_PER_UNIT = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}


class CapacityError(PeachError, ValueError):
    """A run asks for more than the host can ever give it."""


def memory_mib(value: str | int) -> int:
    """A memory size in MiB: ``4g``, ``512m``, ``2GiB``; a bare number is MiB (as Spark reads it)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a memory size like 512m or 4g")
    if isinstance(value, int):
        number, unit = value, ""
    else:
        match = _SIZE.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"{value!r} is not a memory size like 512m or 4g")
        number, unit = int(match.group(1)), match.group(2).lower()
    mib = int(number * _MIB_PER_UNIT[unit])
    if mib < 1:
        raise ValueError(f"{value!r} is less than 1 MiB")
    return mib


def describe_mib(mib: int) -> str:
    """``4 GiB``, ``1.5 GiB``, ``512 MiB``."""
    return f"{mib / 1024:g} GiB" if mib >= 1024 else f"{mib} MiB"


@dataclass(frozen=True)
class Demand:
    """What a run holds while it goes: a local process, a spark-submit process, promised memory (MiB)."""

    local: bool = False
    submission: bool = False
    memory_mib: int = 0

    def __bool__(self) -> bool:
        return self.local or self.submission or self.memory_mib > 0


@dataclass(frozen=True)
class Limits:
    """The host's slots (``capacity:`` in the operator configuration); ``memory_mib`` None: not counted."""

    local_runs: int = 1
    submissions: int = 4
    memory_mib: int | None = None
    metadata_local_runs: int = 0


@dataclass
class Grant:
    """What one run holds. ``release`` gives it all back (once); ``release_submission`` the submission
    slot alone, when the run's spark-submit has exited but the run goes on (on YARN)."""

    codops: str
    held: dict[str, int]
    waited_seconds: float
    _capacity: "Capacity" = field(repr=False)

    def release_submission(self) -> None:
        self._capacity._give_back(self, SUBMISSIONS)

    def release(self) -> None:
        self._capacity._give_back(self, None)


@dataclass
class _Waiter:
    key: float  # when the run became due, never before its organisation's previous grant
    seq: int
    codops: str
    metadata: bool
    demand: Demand
    grant: Grant | None = None


REASON_EVERY = 5.0  # seconds: how often a waiting run's changing reason is told at most


class Capacity:
    """The host's slots and the queue of runs waiting for them; safe to use from every loop thread."""

    def __init__(
        self,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        poll: float = 1.0,
    ) -> None:
        self._limits, self._clock, self._monotonic, self._poll = limits, clock, monotonic, poll
        self._cond = threading.Condition()
        self._in_use = dict.fromkeys(KINDS, 0)
        self._waiting: list[_Waiter] = []
        self._last_grant: dict[str, float] = {}
        self._seq = 0

    @property
    def limits(self) -> Limits:
        return self._limits

    def resize(self, limits: Limits) -> None:
        """New limits (a configuration reload): runs that hold more than they allow keep what they hold;
        new grants wait until the use is under the new limits."""
        with self._cond:
            self._limits = limits
            self._dispatch()

    def acquire(
        self,
        codops: str,
        demand: Demand,
        due: float,
        *,
        metadata: bool = False,
        cancelled: Callable[[], bool] = lambda: False,
        waiting: Callable[[str], None] = lambda reason: None,
    ) -> Grant | None:
        """Wait until ``demand`` fits and it is this run's turn; its grant, or None once ``cancelled()``.

        ``due`` is when the run became due (Unix time). ``waiting`` is told why the run waits, again
        when that changes but at most every ``REASON_EVERY`` seconds (each grant changes the "N ahead" of
        every waiter: told each time, a hundred waiters would write a hundred reasons per run), never
        while a lock is held, and not at all for a run that does not wait.
        Raises ``CapacityError`` for a demand no free host could meet (more memory than promised in all).
        """
        started = self._monotonic()
        with self._cond:
            self._check(demand)
            self._seq += 1
            key = max(due, self._last_grant.get(codops, float("-inf")))
            waiter = _Waiter(key, self._seq, codops, metadata, demand)
            self._waiting.append(waiter)
            self._waiting.sort(key=lambda w: (w.key, w.seq))
            self._dispatch()
        told: str | None = None
        told_at = float("-inf")
        while True:
            with self._cond:
                if waiter.grant is None and not cancelled():
                    try:
                        self._check(demand)  # the limits may have shrunk meanwhile
                    except CapacityError:
                        self._waiting.remove(waiter)
                        self._dispatch()
                        raise
                if waiter.grant is not None:
                    waiter.grant.waited_seconds = self._monotonic() - started
                    return waiter.grant
                if cancelled():
                    self._waiting.remove(waiter)
                    self._dispatch()
                    return None
                reason = self._reason(waiter)
            now = self._monotonic()
            if reason != told and now - told_at >= REASON_EVERY:
                waiting(reason)
                told, told_at = reason, now
            with self._cond:
                if waiter.grant is None:
                    self._cond.wait(self._poll)

    def snapshot(self) -> dict[str, tuple[int | None, int, int]]:
        """Per kind: (slots, in use, runs waiting for it); slots None where not counted (memory)."""
        with self._cond:
            waiting = {kind: sum(kind in self._needs(w) for w in self._waiting) for kind in KINDS}
            return {kind: (self._limit(kind), self._in_use[kind], waiting[kind]) for kind in KINDS}

    # -- under the lock -------------------------------------------------------------------------------

    def _check(self, demand: Demand) -> None:
        total = self._limits.memory_mib
        if total is not None and demand.memory_mib > total:
            raise CapacityError(
                f"the run asks for {describe_mib(demand.memory_mib)} of memory; the host promises "
                f"{describe_mib(total)} to local runs in all (capacity.memory)"
            )

    def _needs(self, waiter: _Waiter) -> dict[str, int]:
        demand, needs = waiter.demand, {}
        if demand.local:
            reserved = waiter.metadata and self._in_use[METADATA_LOCAL] < self._limits.metadata_local_runs
            needs[METADATA_LOCAL if reserved else LOCAL] = 1
        if demand.submission:
            needs[SUBMISSIONS] = 1
        if demand.memory_mib and self._limits.memory_mib is not None:
            needs[MEMORY] = demand.memory_mib
        return needs

    def _limit(self, kind: str) -> int | None:
        limits = self._limits
        return {
            LOCAL: limits.local_runs,
            METADATA_LOCAL: limits.metadata_local_runs,
            SUBMISSIONS: limits.submissions,
            MEMORY: limits.memory_mib,
        }[kind]

    def _short(self, kind: str, amount: int) -> bool:
        limit = self._limit(kind)
        return limit is not None and self._in_use[kind] + amount > limit

    def _dispatch(self) -> None:
        """Grant every waiter that fits, in order, none overtaking an earlier one of the same kind."""
        blocked: set[str] = set()
        for waiter in list(self._waiting):
            needs = self._needs(waiter)
            if blocked & needs.keys() or any(self._short(kind, n) for kind, n in needs.items()):
                blocked |= needs.keys()
                continue
            for kind, amount in needs.items():
                self._in_use[kind] += amount
            self._waiting.remove(waiter)
            self._last_grant[waiter.codops] = self._clock()
            waiter.grant = Grant(waiter.codops, needs, 0.0, self)
        self._cond.notify_all()

    def _reason(self, waiter: _Waiter) -> str:
        needs = self._needs(waiter)
        ahead = self._waiting[: self._waiting.index(waiter)]
        for kind, amount in needs.items():
            before = sum(kind in self._needs(w) for w in ahead)
            if not self._short(kind, amount) and not before:
                continue
            queue = f", {before} ahead" if before else ""
            if kind == MEMORY:
                return (
                    f"waiting for memory ({describe_mib(amount)}; {self._in_use[MEMORY]} of "
                    f"{self._limits.memory_mib} MiB promised{queue})"
                )
            return f"waiting for {_WORDS[kind]} ({self._in_use[kind]}/{self._limit(kind)} in use{queue})"
        return "waiting for capacity"

    def _give_back(self, grant: Grant, kind: str | None) -> None:
        with self._cond:
            for name in [kind] if kind is not None else list(grant.held):
                amount = grant.held.pop(name, 0)
                self._in_use[name] -= amount
            self._dispatch()

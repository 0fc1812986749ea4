"""The lifecycle every executor shares: prepare, start, wait with a deadline, kill, logs, final outcome,
and recovery after a scheduler restart.

An ``Executor`` turns a ``RunRequest`` into an ``Execution`` (``prepare``: code, environment; may raise a
``PeachError`` such as ``EnvironmentBuildError`` before anything runs). The caller then drives it::

    execution = executor.prepare(RunRequest(run_id, task, timeout=3600))
    execution.start()                       # the run's own timeout starts counting here
    while (outcome := execution.wait(until=clock() + 5)) is None:
        ...                                 # still running: check for shutdown, a kill request, ...
    record(outcome)                         # or execution.kill("operator request") at any time

``wait`` enforces the run's ``Deadline`` itself (the run ends ``TIMED_OUT``): the check lives here, once,
for every kind of execution; a subclass only says how to wait for its run to end by itself (``_poll``)
and how to end it (``_end``). ``until`` only bounds how long the caller is willing to block. Times are
on the executor's injected monotonic clock.

What identifies a run outside the scheduler is its ``handle``, an opaque string (``pid:1234``,
``yarn:application_1_0001``; later a pod name) that the store records as soon as it is known and that
may change while the run goes on (spark-submit's pid, then its YARN application). ``manifest()`` says
what the run's manifest records that only the executor knows. ``progress`` holds the latest progress the
run reported, if any (read it from any thread).

Recovery (dagster's ``RunLauncher.resume_run``, prefect's ``kill_infrastructure``): after a restart, the
service hands each executor the runs of its kind still recorded RUNNING (``RunningRun``, no store record:
executors never see the store) and ``recover`` answers, for each, whether it re-attached it (an
``Execution`` already going, driven by the same supervision as any run) or closed it (an ``Outcome``).
"""

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from executors.masking import Masker
from executors.progress import Progress
from scheduler.capacity import Demand
from scheduler.errors import ExecutionError
from scheduler.spec.definitions import Task
from scheduler.spec.taskspec import ExecutorKind
from scheduler.status import RunStatus

PID_HANDLE = "pid:"


def pid_handle(pid: int) -> str:
    return f"{PID_HANDLE}{pid}"


@dataclass(frozen=True)
class RunRequest:
    """One run to execute. ``timeout`` is the run's effective limit in seconds, chosen once by the runs
    layer (``scheduler.limits.LoopLimits.for_run``: the task's own or its loop's); None for no limit.
    The run's ``Deadline`` is its start plus this."""

    run_id: str
    task: Task
    timeout: float | None = None
    version: str = ""
    extra_env: Mapping[str, str] = field(default_factory=dict)
    memory_mib: int | None = None  # the cap of a local run's memory (a cgroup, where the host allows it)


@dataclass(frozen=True)
class Outcome:
    """The final word on a run.

    ``summary`` says how it ended in words (``exit code 3``, ``killed by SIGKILL after timeout 300 s``);
    ``error`` is the most telling line of the output for a failed run (the exception line of a traceback).
    ``handle`` is the run's last handle (its YARN application, say). ``started_at``/``finished_at`` are
    wall-clock (epoch seconds).
    """

    status: RunStatus
    summary: str
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    handle: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    log_bytes: int = 0
    log_dropped: int = 0
    peak_memory_bytes: int | None = None  # the most memory the run's local processes held (cgroup)

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class Deadline:
    """When a run must end, on its execution's monotonic clock: the one deadline check of every execution.

    ``after(timeout)`` is a fresh run's (counting from ``start``); ``at_wall(epoch)`` is a re-attached run's,
    whose deadline the store kept as wall-clock time. ``words`` is how a timeout is said in the outcome.
    """

    def __init__(self, clock: Callable[[], float], at: float | None = None, words: str = "") -> None:
        self.clock, self.at, self.words = clock, at, words

    @classmethod
    def after(cls, timeout: float | None, clock: Callable[[], float] = time.monotonic) -> "Deadline":
        if timeout is None:
            return cls(clock)
        return cls(clock, clock() + timeout, f"timeout {timeout:g} s")

    @classmethod
    def at_wall(
        cls, epoch: float | None, clock: Callable[[], float], wall: Callable[[], float] = time.time
    ) -> "Deadline":
        if epoch is None:
            return cls(clock)
        return cls(clock, clock() + (epoch - wall()), "deadline passed")

    def passed(self) -> bool:
        return self.at is not None and self.clock() >= self.at

    def left(self) -> float | None:
        return None if self.at is None else self.at - self.clock()

    def earliest(self, *times: float | None) -> float | None:
        """The earliest of the deadline and ``times`` (None ignored); None when all are None."""
        known = [t for t in (self.at, *times) if t is not None]
        return min(known) if known else None


@dataclass(frozen=True)
class ExecutionManifest:
    """What a run's manifest records that only its executor knows (``scheduler.runs.manifests``).

    ``runner``: the script the command line runs (its text is kept); ``python``: the interpreter of the
    environment to freeze (for YARN, the local build that was packed); ``spark``: the spark-submit
    settings read back from the real command line, secrets redacted.
    """

    runner: Path | None = None
    python: Path | None = None
    spark: dict[str, Any] | None = None


class Execution(ABC):
    """One run in progress. Not thread-safe: one supervisor drives it (``kill`` may come from any thread)."""

    def __init__(
        self,
        run_id: str,
        key: str,
        log_path: Path,
        deadline: Deadline | None = None,
        manifest: ExecutionManifest | None = None,
    ) -> None:
        self.run_id = run_id
        self.key = key  # ``codops/task``, for log lines about the run
        self.log_path = log_path
        self.deadline = deadline or Deadline.after(None)
        self.handle: str | None = None
        self.outcome: Outcome | None = None
        self.progress: Progress | None = None  # the latest the run reported (executors.progress)
        # where the task writes files kept with the run (None: not collected, ``artifacts_note`` says why)
        self.artifacts_dir: Path | None = None
        self.artifacts_note: str | None = None
        self.started = False
        # the run's spark-submit has exited while the run goes on elsewhere (on YARN): its submission
        # slot is given back then; a local run's submission lasts as long as the run
        self.submitted = False
        self.masker = Masker(())  # the run's secret values: masked in what it reports and how it ended
        self._manifest = manifest or ExecutionManifest()

    def manifest(self) -> ExecutionManifest:
        return self._manifest

    def reported(self, progress: Progress) -> None:
        """The run reported ``progress`` (from whichever thread reads its output)."""
        if progress.message and self.masker:
            progress = replace(progress, message=self.masker.text(progress.message))
        self.progress = progress

    @abstractmethod
    def start(self) -> None:
        """Start the run; raises ``ExecutionError`` (and leaves nothing behind) if it cannot start."""

    def wait(self, until: float | None = None) -> Outcome | None:
        """Block until the run ends (its outcome) or until ``until`` passes (None: still running).

        The run's deadline is enforced here: when it passes the run is killed and ends TIMED_OUT.
        """
        self._check_started()
        clock = self.deadline.clock
        while self.outcome is None:
            if self.deadline.passed():
                return self._masked(self._end(RunStatus.TIMED_OUT, self.deadline.words))
            bound = self.deadline.earliest(until)
            if self._poll(None if bound is None else max(0.0, bound - clock())):
                return self._masked(self._end(None, ""))
            if until is not None and clock() >= until and not self.deadline.passed():
                return None
        return self._masked(self.outcome)

    def kill(self, reason: str) -> Outcome:
        """End the run now (status KILLED unless it had already ended) and return its outcome."""
        self._check_started()
        return self._masked(self._end(RunStatus.KILLED, reason))

    def _masked(self, outcome: Outcome) -> Outcome:
        """``outcome`` with the run's secret values masked in its words (YARN diagnostics may quote them)."""
        if self.masker:
            error = None if outcome.error is None else self.masker.text(outcome.error)
            outcome = replace(outcome, summary=self.masker.text(outcome.summary), error=error)
            self.outcome = outcome
        return outcome

    @abstractmethod
    def _poll(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: as long as it takes) for the run to end by itself; True
        when it has. May return False early (a remote run is asked every so often)."""

    @abstractmethod
    def _end(self, status: RunStatus | None, why: str) -> Outcome:
        """Close the run once: stop it first if ``status`` is given (TIMED_OUT, KILLED, unless it ended by
        itself meanwhile); None means it ended by itself. Sets and returns ``outcome``."""

    def _check_started(self) -> None:
        if not self.started:
            raise ExecutionError(f"run {self.run_id} was not started")

    def read_log(self, limit: int | None = None) -> bytes:
        """The run's log as stored so far (the last ``limit`` bytes if given); readable while running."""
        try:
            with self.log_path.open("rb") as log:
                if limit is not None:
                    size = log.seek(0, 2)
                    log.seek(max(0, size - limit))
                return log.read()
        except FileNotFoundError:
            return b""


@dataclass(frozen=True)
class RunningRun:
    """A run the store holds RUNNING at a restart, as an executor sees it: no store record.

    ``deadline`` is wall-clock (epoch seconds), None for no limit; ``log_path`` is where its log is (None:
    the previous process had not recorded one yet).
    """

    run_id: str
    codops: str
    task: str
    executor: ExecutorKind
    handle: str | None = None
    deadline: float | None = None
    log_path: Path | None = None

    @property
    def key(self) -> str:
        return f"{self.codops}/{self.task}"


@dataclass
class Recovery:
    """What an executor made of the running runs it was handed: each one re-attached or closed.

    ``reattached`` executions are already going (``started``): their supervisor only waits for them.
    ``closed`` outcomes are final (LOST, say): the service records them and notes them in the run's log.
    """

    reattached: dict[str, Execution] = field(default_factory=dict)
    closed: dict[str, Outcome] = field(default_factory=dict)

    def close(self, run_id: str, status: RunStatus, summary: str) -> None:
        self.closed[run_id] = Outcome(status, summary)

    def merge(self, other: "Recovery") -> "Recovery":
        self.reattached.update(other.reattached)
        self.closed.update(other.closed)
        return self


class Executor(ABC):
    """Makes executions of one kind (``python``, ``spark``, ...) and recovers them after a restart."""

    kind: ExecutorKind

    @property
    def name(self) -> str:
        return self.kind.value

    def demand(self, task: Task) -> Demand:
        """What a run of ``task`` holds on the scheduler host while it goes (``scheduler.capacity``)."""
        return Demand(local=True)

    @abstractmethod
    def prepare(self, request: RunRequest) -> Execution:
        """Everything the run needs short of starting it (code, environment); may raise ``PeachError``."""

    def waiting(self, task: Task) -> str | None:
        """Why a run of ``task`` cannot start now, in words (its environment's build failed and is backing
        off: ``environment failing: ..., next try at ...``), or None. Asked before a run is recorded, so
        that waiting is not a run; cheap (no build, no network)."""
        return None

    @abstractmethod
    def recover(self, running: Sequence[RunningRun]) -> Recovery:
        """After a restart: every run in ``running`` (all of this executor's kind) re-attached or closed.

        Must not raise for one run's sake (an outside system that does not answer closes what it can and
        leaves nothing half-done); every run handed in is in the answer exactly once.
        """

"""The lifecycle every executor shares: prepare, start, wait with a deadline, kill, logs, final outcome.

An ``Executor`` turns a ``RunRequest`` into an ``Execution`` (``prepare``: code, environment; may raise a
``PeachError`` such as ``EnvironmentBuildError`` before anything runs). The caller then drives it::

    execution = executor.prepare(RunRequest(run_id, task, timeout=3600))
    execution.start()                       # the run's own timeout starts counting here
    while (outcome := execution.wait(until=clock() + 5)) is None:
        ...                                 # still running: check for shutdown, a kill request, ...
    record(outcome)                         # or execution.kill("operator request") at any time

``wait`` enforces the run's timeout itself (the run ends ``TIMED_OUT``); ``until`` only bounds how long
the caller is willing to block. Times are on the executor's injected monotonic clock. An executor with a
remote side (spark on YARN) also fills ``application_id`` as soon as it is known, and its ``kill`` goes
through the cluster too; the interface stays the same. ``progress`` holds the latest progress the run
reported, if any (read it from any thread).
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from executors.progress import Progress
from scheduler.spec.definitions import Task
from scheduler.status import RunStatus


@dataclass(frozen=True)
class RunRequest:
    """One run to execute. ``timeout`` in seconds (the task's or the loop's limit), None for no limit."""

    run_id: str
    task: Task
    timeout: float | None = None
    version: str = ""
    extra_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """The final word on a run.

    ``summary`` says how it ended in words (``exit code 3``, ``killed by SIGKILL after timeout 300 s``);
    ``error`` is the most telling line of the output for a failed run (the exception line of a traceback).
    ``started_at``/``finished_at`` are wall-clock (epoch seconds).
    """

    status: RunStatus
    summary: str
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    application_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    log_bytes: int = 0
    log_dropped: int = 0

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class Execution(ABC):
    """One run in progress. Not thread-safe: one supervisor drives it."""

    def __init__(self, request: RunRequest, log_path: Path) -> None:
        self.request = request
        self.log_path = log_path
        self.pid: int | None = None
        self.application_id: str | None = None
        self.outcome: Outcome | None = None
        self.progress: Progress | None = None  # the latest the run reported (executors.progress)
        # where the task writes files kept with the run (None: not collected, ``artifacts_note`` says why)
        self.artifacts_dir: Path | None = None
        self.artifacts_note: str | None = None

    @property
    def run_id(self) -> str:
        return self.request.run_id

    @property
    def key(self) -> str:
        """``codops/task``, for log lines about the run."""
        return self.request.task.key

    @abstractmethod
    def start(self) -> None:
        """Start the run; raises ``ExecutionError`` (and leaves nothing behind) if it cannot start."""

    @abstractmethod
    def wait(self, until: float | None = None) -> Outcome | None:
        """Block until the run ends (its outcome) or until ``until`` passes (None: still running).

        The run's own timeout is enforced here: when it expires the run is killed and ends TIMED_OUT.
        """

    @abstractmethod
    def kill(self, reason: str) -> Outcome:
        """End the run now (status KILLED unless it had already ended) and return its outcome."""

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


class Executor(ABC):
    """Makes executions of one kind (``python``, ``spark``, ...)."""

    name: str

    @abstractmethod
    def prepare(self, request: RunRequest) -> Execution:
        """Everything the run needs short of starting it (code, environment); may raise ``PeachError``."""

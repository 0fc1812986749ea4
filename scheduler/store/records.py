"""What the state store hands back: plain frozen records, detached from the database.

``as_dict()`` gives the JSON objects of the CLI (``--json``) and the HTTP API (SPEC §5): timestamps in
ISO-8601 UTC, statuses as their names.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.spec.definitions import describe
from scheduler.spec.taskspec import ExecutorKind
from scheduler.status import RunStatus
from scheduler.store.models import (
    ArtifactRow,
    ManifestRow,
    ProblemRow,
    RunRow,
    RunTrigger,
    TaskRow,
    TaskState,
    TriggerRow,
)

SHORT_VERSION = 12
YARN_HANDLE = "yarn:"  # the handle of a run on YARN (executors.yarn.execution.yarn_handle)


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 UTC with a ``Z``, to the millisecond; None stays None."""
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Run:
    id: str
    codops: str
    task: str
    loop: str
    executor: ExecutorKind
    version: str | None
    status: RunStatus
    trigger: RunTrigger
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    outcome: str | None
    error: str | None
    log_path: str | None
    handle: str | None
    host: str | None
    deadline: datetime | None
    rerun_of: str | None = None
    progress: float | None = None
    progress_message: str | None = None
    progress_at: datetime | None = None
    keep: bool = False
    artifacts_dir: str | None = None
    artifacts_state: str | None = None
    artifacts_note: str | None = None
    waited_seconds: float | None = None
    peak_memory_bytes: int | None = None

    @property
    def short_version(self) -> str | None:
        return self.version[:SHORT_VERSION] if self.version else None

    @property
    def application_id(self) -> str | None:
        """The YARN application of the run (SPEC §5), from its handle (``yarn:<id>``)."""
        if self.handle is None or not self.handle.startswith(YARN_HANDLE):
            return None
        return self.handle.removeprefix(YARN_HANDLE)

    @classmethod
    def from_row(cls, row: RunRow) -> "Run":
        return cls(
            id=row.id,
            codops=row.codops,
            task=row.task,
            loop=row.loop,
            executor=ExecutorKind(row.executor),
            version=row.version,
            status=RunStatus(row.status),
            trigger=RunTrigger(row.trigger),
            started_at=row.started_at,
            finished_at=row.finished_at,
            duration_seconds=row.duration_seconds,
            outcome=row.outcome,
            error=row.error,
            log_path=row.log_path,
            handle=row.handle,
            host=row.host,
            deadline=row.deadline,
            rerun_of=row.rerun_of,
            progress=row.progress,
            progress_message=row.progress_message,
            progress_at=row.progress_at,
            keep=bool(row.keep),
            artifacts_dir=row.artifacts_dir,
            artifacts_state=row.artifacts_state,
            artifacts_note=row.artifacts_note,
            waited_seconds=row.waited_seconds,
            peak_memory_bytes=row.peak_memory_bytes,
        )

    def as_dict(self) -> dict[str, Any]:
        """The SPEC §5 run object (``version`` is the full commit; ``short_version`` for display)."""
        return {
            "id": self.id,
            "codops": self.codops,
            "task": self.task,
            "loop": self.loop,
            "executor": self.executor.value,
            "version": self.version,
            "short_version": self.short_version,
            "status": self.status.value,
            "trigger": self.trigger.value,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_seconds": self.duration_seconds,
            "outcome": self.outcome,
            "error": self.error,
            "application_id": self.application_id,
            "rerun_of": self.rerun_of,
            "progress": self.progress,
            "progress_message": self.progress_message,
            "progress_at": iso(self.progress_at),
            "keep": self.keep,
            "artifacts": self.artifacts_state,
            "waited_seconds": self.waited_seconds,
            "peak_memory_bytes": self.peak_memory_bytes,
        }


@dataclass(frozen=True)
class Artifact:
    """One file of a run's artifacts: ``path`` relative to its directory; ``dropped`` over the limit."""

    path: str
    size: int
    sha256: str | None
    dropped: bool

    @classmethod
    def from_row(cls, row: ArtifactRow) -> "Artifact":
        return cls(path=row.path, size=row.size, sha256=row.sha256, dropped=row.dropped)

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "dropped": self.dropped}


@dataclass(frozen=True)
class TaskStatus:
    codops: str
    task: str
    loop: str
    executor: ExecutorKind
    state: TaskState
    last_status: RunStatus | None
    last_run_id: str | None
    last_started_at: datetime | None
    last_finished_at: datetime | None
    last_duration_seconds: float | None
    last_success_at: datetime | None
    enabled: bool
    next_due: datetime | None
    file: str | None
    line: int | None
    removed: bool
    expected_seconds: float | None = None
    reason: str | None = None  # why INVALID (its problem) or PENDING (a slot, a failing environment)
    invalid_since: str | None = None
    last_error: str | None = None

    @classmethod
    def from_row(cls, row: TaskRow) -> "TaskStatus":
        return cls(
            codops=row.codops,
            task=row.task,
            loop=row.loop,
            executor=ExecutorKind(row.executor),
            state=TaskState(row.state),
            last_status=RunStatus(row.last_status) if row.last_status else None,
            last_run_id=row.last_run_id,
            last_started_at=row.last_started_at,
            last_finished_at=row.last_finished_at,
            last_duration_seconds=row.last_duration_seconds,
            last_success_at=row.last_success_at,
            enabled=row.enabled,
            next_due=row.next_due,
            file=row.file,
            line=row.line,
            removed=row.removed_at is not None,
            expected_seconds=row.expected_seconds,
            reason=row.reason,
            invalid_since=row.invalid_since,
            last_error=row.last_error,
        )

    def as_dict(self) -> dict[str, Any]:
        """The SPEC §5 task object."""
        return {
            "codops": self.codops,
            "task": self.task,
            "loop": self.loop,
            "executor": self.executor.value,
            "state": self.state.value,
            "reason": self.reason,
            "last_status": self.last_status.value if self.last_status else None,
            "last_run_id": self.last_run_id,
            "last_started_at": iso(self.last_started_at),
            "last_finished_at": iso(self.last_finished_at),
            "last_duration_seconds": self.last_duration_seconds,
            "last_success_at": iso(self.last_success_at),
            "enabled": self.enabled,
            "next_due": iso(self.next_due),
            "file": self.file,
            "line": self.line,
            "expected_seconds": self.expected_seconds,
            "invalid_since": self.invalid_since,
            "last_error": self.last_error,
        }


@dataclass(frozen=True)
class StoredProblem:
    """A validation problem as stored: ``definitions.Problem`` plus its repository and codops."""

    repository: str
    codops: str
    file: str
    line: int | None
    cell: int | None
    task: str | None
    severity: str
    message: str
    found_at: datetime

    def __str__(self) -> str:
        return describe(self.file, self.line, self.cell, self.task, self.severity, self.message)

    @classmethod
    def from_row(cls, row: ProblemRow) -> "StoredProblem":
        return cls(
            repository=row.repository,
            codops=row.codops,
            file=row.file,
            line=row.line,
            cell=row.cell,
            task=row.task,
            severity=row.severity,
            message=row.message,
            found_at=row.found_at,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "codops": self.codops,
            "file": self.file,
            "line": self.line,
            "cell": self.cell,
            "task": self.task,
            "severity": self.severity,
            "message": self.message,
            "found_at": iso(self.found_at),
        }


@dataclass(frozen=True)
class Organisation:
    """One codops at a glance (API ``/organisations``)."""

    codops: str
    tasks: int
    running: int
    failing: int
    errors: int
    last_started_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "codops": self.codops,
            "tasks": self.tasks,
            "running": self.running,
            "failing": self.failing,
            "errors": self.errors,
            "last_started_at": iso(self.last_started_at),
        }


@dataclass(frozen=True)
class LoopExpectation:
    """How long one pass of a loop is expected to take (``scheduler.runs.eta``)."""

    loop: str
    tasks: int
    expected_pass_seconds: float | None  # the sum over the tasks that have a successful run
    tasks_without_history: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "loop": self.loop,
            "tasks": self.tasks,
            "expected_pass_seconds": self.expected_pass_seconds,
            "tasks_without_history": self.tasks_without_history,
        }


@dataclass(frozen=True)
class Trigger:
    id: int
    codops: str
    task: str
    loop: str
    requested_at: datetime
    requested_by: str | None
    taken_at: datetime | None
    rerun_of: str | None = None

    @classmethod
    def from_row(cls, row: TriggerRow) -> "Trigger":
        return cls(
            id=row.id,
            codops=row.codops,
            task=row.task,
            loop=row.loop,
            requested_at=row.requested_at,
            requested_by=row.requested_by,
            taken_at=row.taken_at,
            rerun_of=row.rerun_of,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "codops": self.codops,
            "task": self.task,
            "loop": self.loop,
            "requested_at": iso(self.requested_at),
            "requested_by": self.requested_by,
            "taken_at": iso(self.taken_at),
            "rerun_of": self.rerun_of,
        }


@dataclass(frozen=True)
class Manifest:
    """What one run ran (``scheduler.runs.manifests``): enough to show it, run it again, and compare it.

    ``runner`` is the runner script as executed; ``requirements`` the declared set the environment was
    built for; ``frozen`` the exact distributions installed in it (``name==version``; None when the
    environment was never built); ``spark`` the effective spark-submit settings, secrets redacted (None
    for the python executor); ``definition`` the task's part of its YAML file ``definition_file``.
    """

    run_id: str
    recorded_at: datetime
    commit: str | None
    runner: str
    requirements: tuple[str, ...]
    frozen: tuple[str, ...] | None
    spark: dict[str, Any] | None
    args: dict[str, Any]
    definition_file: str
    definition: str

    @classmethod
    def from_row(cls, row: ManifestRow) -> "Manifest":
        frozen = json.loads(row.frozen) if row.frozen is not None else None
        return cls(
            run_id=row.run_id,
            recorded_at=row.recorded_at,
            commit=row.commit,
            runner=row.runner,
            requirements=tuple(json.loads(row.requirements)),
            frozen=tuple(frozen) if frozen is not None else None,
            spark=json.loads(row.spark) if row.spark is not None else None,
            args=json.loads(row.args),
            definition_file=row.definition_file,
            definition=row.definition,
        )

    def to_row(self) -> ManifestRow:
        return ManifestRow(
            run_id=self.run_id,
            recorded_at=self.recorded_at,
            commit=self.commit,
            runner=self.runner,
            requirements=json.dumps(list(self.requirements)),
            frozen=json.dumps(list(self.frozen)) if self.frozen is not None else None,
            spark=json.dumps(self.spark, sort_keys=True) if self.spark is not None else None,
            args=json.dumps(self.args, sort_keys=True),
            definition_file=self.definition_file,
            definition=self.definition,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "recorded_at": iso(self.recorded_at),
            "commit": self.commit,
            "runner": self.runner,
            "requirements": list(self.requirements),
            "frozen": list(self.frozen) if self.frozen is not None else None,
            "spark": self.spark,
            "args": self.args,
            "definition_file": self.definition_file,
            "definition": self.definition,
        }

"""The state store: runs, tasks, validation problems and manual triggers, in SQLite or PostgreSQL.

One ``Store`` is shared by every loop thread and the HTTP server. Each method is one short transaction;
records come back as frozen dataclasses (``scheduler.store.records``), never live ORM objects. The schema is
brought to the latest Alembic migration when the store starts (``scheduler.store.database``).
"""

import logging
import secrets
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scheduler.errors import AlreadyRunning, ManifestNotFound, RunNotFound, StateError, TaskNotFound
from scheduler.spec.taskspec import ExecutorKind
from scheduler.status import RunStatus
from scheduler.store.database import build_engine, default_url, migrate, writing
from scheduler.store.history import HISTORY, expected_duration
from scheduler.store.models import (
    ArtifactRow,
    ArtifactsState,
    ManifestRow,
    ProblemRow,
    RunRow,
    RunTrigger,
    TaskRow,
    TaskState,
    TriggerRow,
)
from scheduler.store.records import (
    Artifact,
    LoopExpectation,
    Manifest,
    Organisation,
    Run,
    StoredProblem,
    TaskStatus,
    Trigger,
)

if TYPE_CHECKING:
    from scheduler.spec.definitions import InvalidTask, Problem, Task

log = logging.getLogger(__name__)

__all__ = ["Store", "build_engine", "default_url", "new_run_id"]

MAX_PAGE = 1000
_FAILING = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_run_id(now: datetime) -> str:
    """``r-YYYYMMDD-HHMMSS-xxxxxx`` (UTC, 6 random hex digits): sortable by time, safe as a YARN tag,
    a directory name and a URL path segment."""
    return f"r-{now.astimezone(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


class Store:
    """Runs, tasks, problems and triggers. Thread-safe: share one per process."""

    def __init__(
        self, engine: Engine, *, clock: Clock = utcnow, host: str | None = None, upgrade: bool = True
    ) -> None:
        self.engine = engine
        self._clock = clock
        self.host = host or socket.gethostname()
        if upgrade:
            migrate(engine)

    @classmethod
    def from_url(cls, url: str, *, clock: Clock = utcnow, host: str | None = None) -> "Store":
        return cls(build_engine(url), clock=clock, host=host)

    def close(self) -> None:
        self.engine.dispose()

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the store's clock must return zone-aware datetimes")
        return now.astimezone(UTC)

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        connect = writing(self.engine) if write else self.engine.connect()
        with (
            connect as connection,
            Session(bind=connection, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    # -- runs -----------------------------------------------------------------------------------------

    def start_run(
        self,
        codops: str,
        task: str,
        *,
        loop: str,
        executor: ExecutorKind | str,
        version: str | None,
        trigger: RunTrigger = RunTrigger.SCHEDULE,
        log_path: str | None = None,
        deadline: datetime | None = None,
        run_id: str | None = None,
        rerun_of: str | None = None,
        waited_seconds: float | None = None,
    ) -> Run:
        """Record a new RUNNING run and mark its task RUNNING (its waiting reason cleared);
        ``AlreadyRunning`` if it already is. ``waited_seconds``: its wait for a capacity slot."""
        now = self._now()
        row = RunRow(
            id=run_id or new_run_id(now),
            codops=codops,
            task=task,
            loop=loop,
            executor=ExecutorKind(executor).value,
            version=version,
            status=RunStatus.RUNNING.value,
            trigger=RunTrigger(trigger).value,
            started_at=now,
            log_path=log_path,
            host=self.host,
            deadline=deadline,
            rerun_of=rerun_of,
            waited_seconds=None if waited_seconds is None else round(waited_seconds, 3),
        )
        try:
            with self._session(write=True) as session:
                session.add(row)
                task_row = session.get(TaskRow, (codops, task))
                if task_row is None:
                    task_row = TaskRow(
                        codops=codops, task=task, loop=loop, executor=row.executor, enabled=True
                    )
                    session.add(task_row)
                task_row.state = TaskState.RUNNING.value
                task_row.reason = None
                task_row.last_run_id = row.id
                task_row.last_started_at = now
                task_row.updated_at = now
        except IntegrityError as error:
            if any(run.codops == codops and run.task == task for run in self.running_runs()):
                raise AlreadyRunning(f"task {codops}/{task} already has a running run") from error
            raise
        log.debug("run %s of %s/%s started (version %s)", row.id, codops, task, version)
        return Run.from_row(row)

    def attach(
        self,
        run_id: str,
        *,
        handle: str | None = None,
        log_path: str | None = None,
    ) -> Run:
        """Record what identifies a run outside the scheduler (its executor's opaque ``handle``: a pid,
        a YARN application) and where its log is, once known. None leaves a field."""
        changes = {"handle": handle, "log_path": log_path}
        with self._session(write=True) as session:
            row = self._run_row(session, run_id)
            for name, value in changes.items():
                if value is not None:
                    setattr(row, name, value)
        return Run.from_row(row)

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        outcome: str,
        *,
        error: str | None = None,
        handle: str | None = None,
        next_due: datetime | None = None,
        ended_at: datetime | None = None,
        peak_memory_bytes: int | None = None,
    ) -> Run:
        """Close a RUNNING run with a final status and its outcome in words; updates its task.

        ``ended_at``: when the run really ended, if earlier than now (a YARN application that ended while
        the scheduler was down: YARN's ``finishedTime``); never before the run's start."""
        status = RunStatus(status)
        if not status.final:
            raise ValueError(f"{status} is not a final status")
        now = self._now()
        with self._session(write=True) as session:
            row = self._run_row(session, run_id, lock=True)
            if row.status != RunStatus.RUNNING:
                raise StateError(f"run {run_id} is already {row.status}")
            row.status = status.value
            if ended_at is not None:
                now = min(now, max(ended_at.astimezone(UTC), row.started_at))
            row.finished_at = now
            row.duration_seconds = round(max((now - row.started_at).total_seconds(), 0.0), 3)
            row.outcome = outcome
            row.error = error
            if handle is not None:
                row.handle = handle
            if peak_memory_bytes is not None:
                row.peak_memory_bytes = peak_memory_bytes
            task_row = session.get(TaskRow, (row.codops, row.task))
            if task_row is not None and task_row.last_run_id in (row.id, None):
                invalid = task_row.invalid_since is not None  # it turned invalid while this run went on
                task_row.state = (TaskState.INVALID if invalid else TaskState.FINISHED).value
                task_row.last_status = status.value
                task_row.last_finished_at = now
                task_row.last_duration_seconds = row.duration_seconds
                task_row.last_error = error
                if status is RunStatus.SUCCEEDED:
                    task_row.last_success_at = now
                if next_due is not None:
                    task_row.next_due = next_due
                task_row.updated_at = now
            if status is RunStatus.SUCCEEDED and task_row is not None:
                session.flush()
                task_row.expected_seconds = expected_duration(self._successes(session, row.codops, row.task))
        log.debug("run %s of %s/%s %s: %s", run_id, row.codops, row.task, status.value, outcome)
        return Run.from_row(row)

    def record_progress(
        self, run_id: str, fraction: float, message: str | None, at: datetime | None = None
    ) -> bool:
        """Record the latest progress of a RUNNING run (one short UPDATE; callers throttle it, see
        ``scheduler.runs.supervise``); False when the run is not running (any more)."""
        with self._session(write=True) as session:
            result = session.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.status == RunStatus.RUNNING.value)
                .values(progress=fraction, progress_message=message, progress_at=at or self._now())
            )
            return bool(getattr(result, "rowcount", 0))

    @staticmethod
    def _successes(session: Session, codops: str, task: str) -> list[float]:
        """Durations of the task's last ``HISTORY`` successful runs, newest first."""
        query = (
            select(RunRow.duration_seconds)
            .where(RunRow.codops == codops, RunRow.task == task)
            .where(RunRow.status == RunStatus.SUCCEEDED.value, RunRow.duration_seconds.is_not(None))
            .order_by(RunRow.started_at.desc())
            .limit(HISTORY)
        )
        return [duration for duration in session.scalars(query) if duration is not None]

    def expected_seconds(self, codops: str, task: str) -> float | None:
        """How long a run of the task is expected to take (``scheduler.runs.eta``); None without history."""
        with self._session() as session:
            row = session.get(TaskRow, (codops, task))
            return row.expected_seconds if row is not None else None

    def get_run(self, run_id: str) -> Run:
        with self._session() as session:
            return Run.from_row(self._run_row(session, run_id))

    def running_runs(
        self, *, host: str | None = None, codops: str | None = None, loop: str | None = None
    ) -> list[Run]:
        """Every RUNNING run (of one host, organisation or loop if given), oldest first: what restart
        recovery must settle, and the progress of running tasks."""
        query = select(RunRow).where(RunRow.status == RunStatus.RUNNING.value)
        for column, value in ((RunRow.host, host), (RunRow.codops, codops), (RunRow.loop, loop)):
            if value is not None:
                query = query.where(column == value)
        with self._session() as session:
            return [Run.from_row(row) for row in session.scalars(query.order_by(RunRow.started_at))]

    def list_runs(
        self,
        *,
        codops: str | None = None,
        task: str | None = None,
        loop: str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[Run]:
        """Newest first. Pages are stable while runs are added: pass the last run id as ``before``."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        query = select(RunRow)
        for column, value in ((RunRow.codops, codops), (RunRow.task, task), (RunRow.loop, loop)):
            if value is not None:
                query = query.where(column == value)
        if status is not None:
            query = query.where(RunRow.status == RunStatus(status).value)
        with self._session() as session:
            if before is not None:
                anchor = self._run_row(session, before)
                query = query.where(
                    or_(
                        RunRow.started_at < anchor.started_at,
                        and_(RunRow.started_at == anchor.started_at, RunRow.id < anchor.id),
                    )
                )
            query = query.order_by(RunRow.started_at.desc(), RunRow.id.desc()).limit(limit)
            return [Run.from_row(row) for row in session.scalars(query)]

    def durations(self, codops: str, task: str) -> list[tuple[str, datetime, float | None, str]]:
        """(id, started_at, duration_seconds, status) of every run of a task, oldest first: the chart's
        series, three columns per run rather than whole records (10,000 runs stay cheap)."""
        query = (
            select(RunRow.id, RunRow.started_at, RunRow.duration_seconds, RunRow.status)
            .where(RunRow.codops == codops, RunRow.task == task)
            .order_by(RunRow.started_at, RunRow.id)
        )
        with self._session() as session:
            return [(row[0], row[1], row[2], row[3]) for row in session.execute(query)]

    @staticmethod
    def _run_row(session: Session, run_id: str, *, lock: bool = False) -> RunRow:
        row = session.get(RunRow, run_id, with_for_update=lock)
        if row is None:
            raise RunNotFound(f"no run {run_id!r}")
        return row

    # -- tasks ----------------------------------------------------------------------------------------

    def upsert_tasks(
        self,
        codops: str,
        tasks: Iterable["Task"],
        invalid: Iterable[tuple["InvalidTask", str | None]] = (),
    ) -> list[str]:
        """Make ``tasks`` the current tasks of ``codops``, and ``invalid`` (each with the version it is
        invalid at) its INVALID ones; returns the names newly marked removed.

        New tasks start PENDING; a task that is gone keeps its row and history, marked removed until it
        comes back. The state of existing tasks is left alone, but for INVALID: a task turning invalid
        becomes INVALID (a running run ends first), with its problem as the reason and the version it
        turned invalid at; one valid again is PENDING.
        """
        now = self._now()
        removed = []
        with self._session(write=True) as session:
            rows = {row.task: row for row in session.scalars(select(TaskRow).where(TaskRow.codops == codops))}
            seen = set()
            for task in tasks:
                if task.codops != codops:
                    raise ValueError(f"task {task.key} does not belong to {codops}")
                row = rows.get(task.name)
                if row is None:
                    row = TaskRow(codops=codops, task=task.name, state=TaskState.PENDING.value)
                    session.add(row)
                if row.state == TaskState.INVALID.value:
                    row.state, row.reason = TaskState.PENDING.value, None
                row.invalid_since = None
                row.loop, row.executor = task.loop, task.executor.value
                row.enabled = task.definition.enabled
                row.file, row.line = task.file, task.line
                row.updated_at, row.removed_at = now, None
                seen.add(task.name)
            for bad, version in invalid:
                if bad.codops != codops or bad.name in seen:
                    continue
                row = rows.get(bad.name)
                if row is None:
                    row = TaskRow(
                        codops=codops, task=bad.name, loop=bad.loop, executor=bad.executor.value, enabled=True
                    )
                    session.add(row)
                if row.state != TaskState.RUNNING.value:
                    row.state = TaskState.INVALID.value
                if row.invalid_since is None:
                    row.invalid_since = version or "unknown"
                row.reason, row.file, row.line = bad.problem, bad.file, bad.line
                row.updated_at, row.removed_at = now, None
                seen.add(bad.name)
            for name, row in rows.items():
                if name not in seen and row.removed_at is None:
                    row.removed_at = row.updated_at = now
                    removed.append(name)
        if removed:
            log.info("%s: tasks removed from the definitions: %s", codops, ", ".join(sorted(removed)))
        return sorted(removed)

    def set_pending(self, codops: str, tasks: Iterable[str]) -> None:
        """Mark tasks as waiting their turn (a loop pass starts); RUNNING and INVALID tasks are left alone
        (what a task waits for, if anything, is ``set_waiting``'s)."""
        names = list(tasks)
        values = {"state": TaskState.PENDING.value}
        with self._session(write=True) as session:
            session.execute(
                update(TaskRow)
                .where(TaskRow.codops == codops, TaskRow.task.in_(names))
                .where(TaskRow.state.not_in([TaskState.RUNNING.value, TaskState.INVALID.value]))
                .values(**values)
            )

    def set_waiting(self, codops: str, task: str, reason: str | None) -> None:
        """Why a task waits (``waiting for a local slot (3/3 in use)``): the task is shown PENDING with
        this reason until its run starts or the reason is cleared (None). The one place a task's waiting
        reason is written, whatever the cause; a RUNNING task keeps its state."""
        query = update(TaskRow).where(TaskRow.codops == codops, TaskRow.task == task)
        with self._session(write=True) as session:
            session.execute(query.values(reason=reason))
            if reason is not None:
                not_running = query.where(TaskRow.state != TaskState.RUNNING.value)
                session.execute(not_running.values(state=TaskState.PENDING.value))

    def set_next_due(self, codops: str, task: str, when: datetime | None) -> None:
        with self._session(write=True) as session:
            session.execute(
                update(TaskRow).where(TaskRow.codops == codops, TaskRow.task == task).values(next_due=when)
            )

    def task_states(
        self, codops: str | None = None, *, loop: str | None = None, include_removed: bool = False
    ) -> list[TaskStatus]:
        """Tasks ordered by codops and name."""
        query = select(TaskRow)
        if codops is not None:
            query = query.where(TaskRow.codops == codops)
        if loop is not None:
            query = query.where(TaskRow.loop == loop)
        if not include_removed:
            query = query.where(TaskRow.removed_at.is_(None))
        with self._session() as session:
            rows = session.scalars(query.order_by(TaskRow.codops, TaskRow.task))
            return [TaskStatus.from_row(row) for row in rows]

    # -- problems -------------------------------------------------------------------------------------

    def replace_problems(self, codops: str, repository: str, problems: Iterable["Problem"]) -> None:
        """The problems found by the latest load of ``repository`` replace its previous ones."""
        now = self._now()
        with self._session(write=True) as session:
            session.execute(delete(ProblemRow).where(ProblemRow.repository == repository))
            session.add_all(
                ProblemRow(
                    repository=repository,
                    codops=codops,
                    file=problem.file,
                    line=problem.line,
                    cell=problem.cell,
                    task=problem.task,
                    severity=str(problem.severity),
                    message=problem.message,
                    found_at=now,
                )
                for problem in problems
            )

    def problems(self, codops: str | None = None, *, repository: str | None = None) -> list[StoredProblem]:
        query = select(ProblemRow)
        if codops is not None:
            query = query.where(ProblemRow.codops == codops)
        if repository is not None:
            query = query.where(ProblemRow.repository == repository)
        with self._session() as session:
            rows = session.scalars(query.order_by(ProblemRow.codops, ProblemRow.repository, ProblemRow.id))
            return [StoredProblem.from_row(row) for row in rows]

    # -- organisations --------------------------------------------------------------------------------

    def organisations(self) -> list[Organisation]:
        """Every codops with current tasks or stored problems, with counts at a glance."""
        task_counts = (
            select(
                TaskRow.codops,
                func.count(),
                func.count().filter(TaskRow.state == TaskState.RUNNING.value),
                func.count().filter(TaskRow.last_status.in_([status.value for status in _FAILING])),
                func.max(TaskRow.last_started_at),
            )
            .where(TaskRow.removed_at.is_(None))
            .group_by(TaskRow.codops)
        )
        error_counts = (
            select(ProblemRow.codops, func.count())
            .where(ProblemRow.severity == "error")
            .group_by(ProblemRow.codops)
        )
        with self._session() as session:
            tasks = {row[0]: row for row in session.execute(task_counts)}
            errors: dict[str, int] = {codops: count for codops, count in session.execute(error_counts)}
        summaries = []
        for codops in sorted(tasks.keys() | errors.keys()):
            _, count, running, failing, last_started_at = tasks.get(codops, (codops, 0, 0, 0, None))
            summaries.append(
                Organisation(codops, count, running, failing, errors.get(codops, 0), last_started_at)
            )
        return summaries

    def loop_expectations(self) -> dict[str, LoopExpectation]:
        """Each loop's expected pass duration: the sum of its enabled tasks' expected durations."""
        query = (
            select(
                TaskRow.loop,
                func.count(),
                func.sum(TaskRow.expected_seconds),
                func.count().filter(TaskRow.expected_seconds.is_(None)),
            )
            .where(TaskRow.removed_at.is_(None), TaskRow.enabled.is_(True))
            .group_by(TaskRow.loop)
        )
        with self._session() as session:
            return {
                loop: LoopExpectation(loop, tasks, None if total is None else float(total), unknown)
                for loop, tasks, total, unknown in session.execute(query)
            }

    # -- manual triggers ------------------------------------------------------------------------------

    def request_trigger(self, codops: str, task: str, *, requested_by: str | None = None) -> Trigger:
        """Ask the task's loop to run it at its next pass; a request still waiting is returned as is."""
        now = self._now()
        with self._session(write=True) as session:
            task_row = session.get(TaskRow, (codops, task))
            if task_row is None or task_row.removed_at is not None:
                raise TaskNotFound(f"no task {codops}/{task}")
            waiting = session.scalars(
                select(TriggerRow).where(
                    TriggerRow.codops == codops,
                    TriggerRow.task == task,
                    TriggerRow.taken_at.is_(None),
                    TriggerRow.rerun_of.is_(None),
                )
            ).first()
            if waiting is None:
                waiting = TriggerRow(
                    codops=codops, task=task, loop=task_row.loop, requested_at=now, requested_by=requested_by
                )
                session.add(waiting)
                session.flush()
        return Trigger.from_row(waiting)

    def take_triggers(self, loop: str) -> list[Trigger]:
        """The waiting requests of ``loop``, oldest first, marked taken (each is handed out once)."""
        now = self._now()
        with self._session(write=True) as session:
            rows = list(
                session.scalars(
                    select(TriggerRow)
                    .where(TriggerRow.loop == loop, TriggerRow.taken_at.is_(None))
                    .order_by(TriggerRow.id)
                    .with_for_update(skip_locked=True)
                )
            )
            for row in rows:
                row.taken_at = now
        return [Trigger.from_row(row) for row in rows]

    def return_trigger(self, trigger_id: int) -> None:
        """A taken request that was not run (its task still had a running run, or the service stopped)
        waits again, with its place in the queue."""
        with self._session(write=True) as session:
            row = session.get(TriggerRow, trigger_id)
            if row is not None:
                row.taken_at = None

    # -- manifests and reruns -------------------------------------------------------------------------

    def save_manifest(self, manifest: Manifest) -> None:
        """Record what a run ran (once, when it starts)."""
        with self._session(write=True) as session:
            self._run_row(session, manifest.run_id)
            session.add(manifest.to_row())

    def get_manifest(self, run_id: str) -> Manifest:
        """``RunNotFound`` for an unknown run, ``ManifestNotFound`` for a run without a manifest."""
        with self._session() as session:
            row = session.get(ManifestRow, run_id)
            if row is None:
                run = self._run_row(session, run_id)
                raise ManifestNotFound(
                    f"run {run_id} of {run.codops}/{run.task} has no manifest: it ran before manifests "
                    "were recorded, or ended before it was prepared"
                )
            return Manifest.from_row(row)

    def has_manifest(self, run_id: str) -> bool:
        """Whether a run has a manifest (its key only: cheap enough for every poll of a run)."""
        with self._session() as session:
            found = session.scalar(select(ManifestRow.run_id).where(ManifestRow.run_id == run_id))
            return found is not None

    def request_rerun(self, run_id: str, *, requested_by: str | None = None) -> Trigger:
        """Ask the loop of ``run_id`` to run its task again at the run's commit, with its dependency set
        and arguments; a request for the same run still waiting is returned as is."""
        manifest = self.get_manifest(run_id)
        if manifest.commit is None:
            raise ManifestNotFound(f"run {run_id} has no recorded commit to run again")
        now = self._now()
        with self._session(write=True) as session:
            run = self._run_row(session, run_id)
            waiting = session.scalars(
                select(TriggerRow).where(TriggerRow.rerun_of == run_id, TriggerRow.taken_at.is_(None))
            ).first()
            if waiting is None:
                waiting = TriggerRow(
                    codops=run.codops,
                    task=run.task,
                    loop=run.loop,
                    requested_at=now,
                    requested_by=requested_by,
                    rerun_of=run_id,
                )
                session.add(waiting)
                session.flush()
        return Trigger.from_row(waiting)

    def prune_runs(self, older_than: timedelta) -> int:
        """Delete finished runs that started more than ``older_than`` ago (and their manifests and artifact
        records)."""
        cutoff = self._now() - older_than
        old = select(RunRow.id).where(RunRow.started_at < cutoff, RunRow.status != RunStatus.RUNNING.value)
        with self._session(write=True) as session:
            session.execute(delete(ArtifactRow).where(ArtifactRow.run_id.in_(old)))
            result = session.execute(
                delete(RunRow).where(RunRow.started_at < cutoff, RunRow.status != RunStatus.RUNNING.value)
            )
            session.execute(delete(ManifestRow).where(ManifestRow.run_id.not_in(select(RunRow.id))))
            return int(getattr(result, "rowcount", 0) or 0)

    # -- artifacts ------------------------------------------------------------------------------------

    def set_artifacts_dir(self, run_id: str, directory: str | None, note: str | None = None) -> Run:
        """Where the run's artifacts go (state ``pending``), or None with why there are none."""
        with self._session(write=True) as session:
            row = self._run_row(session, run_id)
            row.artifacts_dir = directory
            row.artifacts_state = (ArtifactsState.PENDING if directory else ArtifactsState.UNAVAILABLE).value
            row.artifacts_note = note
        return Run.from_row(row)

    def record_artifacts(self, run_id: str, files: Iterable[Artifact], note: str | None = None) -> Run:
        """The files collected after the run (kept and dropped ones) replace any recorded before."""
        with self._session(write=True) as session:
            row = self._run_row(session, run_id)
            session.execute(delete(ArtifactRow).where(ArtifactRow.run_id == run_id))
            session.add_all(
                ArtifactRow(run_id=run_id, path=f.path, size=f.size, sha256=f.sha256, dropped=f.dropped)
                for f in files
            )
            row.artifacts_state, row.artifacts_note = ArtifactsState.KEPT.value, note
        return Run.from_row(row)

    def artifacts(self, run_id: str) -> list[Artifact]:
        """A run's recorded files (``RunNotFound`` for an unknown run), by path."""
        query = select(ArtifactRow).where(ArtifactRow.run_id == run_id).order_by(ArtifactRow.path)
        with self._session() as session:
            self._run_row(session, run_id)
            return [Artifact.from_row(row) for row in session.scalars(query)]

    def set_keep(self, run_id: str, keep: bool) -> Run:
        """Mark (or unmark) a run whose artifacts retention must keep."""
        with self._session(write=True) as session:
            row = self._run_row(session, run_id)
            row.keep = keep
        log.info("run %s of %s/%s: keep %s", run_id, row.codops, row.task, keep)
        return Run.from_row(row)

    def prunable_artifacts(self, keep_runs: int, limit: int = 500) -> list[Run]:
        """Finished runs whose artifacts are still on disk but which are not among the last ``keep_runs``
        runs of their task, nor marked keep: oldest first, at most ``limit``."""
        rank = (
            func.row_number()
            .over(
                partition_by=(RunRow.codops, RunRow.task),
                order_by=(RunRow.started_at.desc(), RunRow.id.desc()),
            )
            .label("rank")
        )
        ranked = select(RunRow.id, rank).subquery()
        query = (
            select(RunRow)
            .join(ranked, ranked.c.id == RunRow.id)
            .where(ranked.c.rank > keep_runs, RunRow.artifacts_dir.is_not(None))
            .where(RunRow.keep.is_(False), RunRow.status != RunStatus.RUNNING.value)
            .order_by(RunRow.started_at, RunRow.id)
            .limit(limit)
        )
        with self._session() as session:
            return [Run.from_row(row) for row in session.scalars(query)]

    def mark_artifacts_pruned(self, run_id: str, note: str) -> int:
        """Forget a run's files once its directory is gone; returns the bytes they took."""
        with self._session(write=True) as session:
            row = self._run_row(session, run_id)
            kept = ArtifactRow.run_id == run_id, ArtifactRow.dropped.is_(False)
            freed = session.scalar(select(func.coalesce(func.sum(ArtifactRow.size), 0)).where(*kept))
            session.execute(delete(ArtifactRow).where(ArtifactRow.run_id == run_id))
            row.artifacts_dir, row.artifacts_state = None, ArtifactsState.PRUNED.value
            row.artifacts_note = note
        return int(freed or 0)

    def artifact_totals(self) -> tuple[int, int]:
        """(files, bytes) of every kept artifact: the metrics' gauges."""
        query = select(func.count(), func.coalesce(func.sum(ArtifactRow.size), 0))
        with self._session() as session:
            files, size = session.execute(query.where(ArtifactRow.dropped.is_(False))).one()
        return int(files), int(size)

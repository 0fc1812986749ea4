"""The state database's tables (SQLAlchemy 2 typed ORM) and the states they hold.

Every schema change here needs a new migration under ``scheduler/store/migrations/versions``; a test checks
that the migrated schema equals this metadata. Statuses are stored as plain strings (no database enum
types), timestamps as UTC without a zone (SQLite has none) and handed back zone-aware.
"""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class TaskState(StrEnum):
    """A task as users see it: waiting its turn, running, finished (with its last run's status), or
    invalid (its definition has an error: it is kept listed, with the problem, and does not run)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    INVALID = "INVALID"  # its definition no longer validates: listed with its problem, never run


class RunTrigger(StrEnum):
    """Why a run started."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    RERUN = "rerun"


class UtcDateTime(TypeDecorator[datetime]):
    """Stores UTC without a zone, returns zone-aware UTC; refuses naive datetimes on the way in."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the state store takes zone-aware datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class RunRow(Base):
    """One execution of one task. ``id`` is also the YARN tag and the run's log directory name."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    codops: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(64))
    loop: Mapped[str] = mapped_column(String(32))
    executor: Mapped[str] = mapped_column(String(16))
    version: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    log_path: Mapped[str | None] = mapped_column(Text)
    # what identifies the run outside the scheduler, opaque to the store (executors.base): ``pid:1234``,
    # ``yarn:application_1_0001``; migration 0005 replaced the pid, pid_start and application_id columns
    handle: Mapped[str | None] = mapped_column(String(128))
    host: Mapped[str | None] = mapped_column(String(255))
    deadline: Mapped[datetime | None] = mapped_column(UtcDateTime())
    rerun_of: Mapped[str | None] = mapped_column(String(40))  # the run this one repeats (trigger rerun)
    # The latest progress the run reported (scheduler.progress): fraction 0..1, message, when.
    progress: Mapped[float | None] = mapped_column(Float)
    progress_message: Mapped[str | None] = mapped_column(Text)
    progress_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # artifacts (migration 0003): retention never prunes a run marked ``keep``
    keep: Mapped[bool] = mapped_column(default=False, server_default=false())
    artifacts_dir: Mapped[str | None] = mapped_column(Text)
    artifacts_state: Mapped[str | None] = mapped_column(String(16))
    artifacts_note: Mapped[str | None] = mapped_column(Text)
    # capacity (migration 0006): the wait for its slot before it started; its local processes' peak memory
    waited_seconds: Mapped[float | None] = mapped_column(Float)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index(None, "codops", "task", "started_at"),
        Index(None, "started_at", "id"),
        Index(None, "status"),
        # At most one RUNNING run per task, enforced by the database whatever the number of writers.
        Index(
            "uq_runs_one_running_per_task",
            "codops",
            "task",
            unique=True,
            sqlite_where=text("status = 'RUNNING'"),
            postgresql_where=text("status = 'RUNNING'"),
        ),
    )


class ArtifactsState(StrEnum):
    """Where a run's artifacts are: collected after the run, then kept until retention prunes them."""

    PENDING = "pending"  # the run goes on; its directory is collected when it ends
    KEPT = "kept"
    PRUNED = "pruned"
    UNAVAILABLE = "unavailable"  # e.g. YARN cluster mode: the driver's files stay on the cluster


class ArtifactRow(Base):
    """One file a run left in its artifacts directory (``dropped``: deleted for the size limit)."""

    __tablename__ = "run_artifacts"

    run_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    dropped: Mapped[bool] = mapped_column()


class TaskRow(Base):
    """The latest known definition and state of one task; ``removed_at`` once its YAML is gone."""

    __tablename__ = "tasks"

    codops: Mapped[str] = mapped_column(String(32), primary_key=True)
    task: Mapped[str] = mapped_column(String(64), primary_key=True)
    loop: Mapped[str] = mapped_column(String(32))
    executor: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_run_id: Mapped[str | None] = mapped_column(String(40))
    last_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_duration_seconds: Mapped[float | None] = mapped_column(Float)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    enabled: Mapped[bool] = mapped_column(default=True)
    next_due: Mapped[datetime | None] = mapped_column(UtcDateTime())
    file: Mapped[str | None] = mapped_column(Text)
    line: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # How long a run is expected to take: the median of its last successful runs (scheduler.progress).
    expected_seconds: Mapped[float | None] = mapped_column(Float)
    # Why the task is in its state, in words (migrations 0006, 0007): an INVALID task's problem, what a
    # PENDING task waits for (``Store.set_waiting``); the version its definition has been invalid since.
    reason: Mapped[str | None] = mapped_column(Text)
    invalid_since: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(
        Text
    )  # the last run's ``error`` (its exception's last line)

    __table_args__ = (Index(None, "loop"),)


class ProblemRow(Base):
    """A validation problem of one repository; a repository's problems are replaced at each load."""

    __tablename__ = "problems"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    repository: Mapped[str] = mapped_column(String(255))
    codops: Mapped[str] = mapped_column(String(32))
    file: Mapped[str] = mapped_column(Text)
    line: Mapped[int | None] = mapped_column(Integer)
    cell: Mapped[int | None] = mapped_column(Integer)
    task: Mapped[str | None] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    found_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (Index(None, "repository"), Index(None, "codops"))


class TriggerRow(Base):
    """A manual run request, taken by the task's loop at its next pass."""

    __tablename__ = "triggers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    codops: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(64))
    loop: Mapped[str] = mapped_column(String(32))
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime())
    requested_by: Mapped[str | None] = mapped_column(String(255))
    taken_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    rerun_of: Mapped[str | None] = mapped_column(String(40))  # set: run this run again, at its commit

    __table_args__ = (Index(None, "loop", "taken_at"),)


class ManifestRow(Base):
    """What one run ran (``scheduler.runs.manifests``): written once when the run starts, never changed.

    The list and mapping columns hold JSON text (one plain type for SQLite and PostgreSQL alike).
    """

    __tablename__ = "run_manifests"

    run_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    commit: Mapped[str | None] = mapped_column(String(64))
    runner: Mapped[str] = mapped_column(Text)
    requirements: Mapped[str] = mapped_column(Text)
    frozen: Mapped[str | None] = mapped_column(Text)
    spark: Mapped[str | None] = mapped_column(Text)
    args: Mapped[str] = mapped_column(Text)
    definition_file: Mapped[str] = mapped_column(Text)
    definition: Mapped[str] = mapped_column(Text)

"""A run's handle: one opaque column instead of the executor-specific pid, pid_start and application_id.

``runs.handle`` is what identifies a run outside the scheduler, as its executor says it (``pid:1234``,
``yarn:application_1_0001``; a Kubernetes executor would store a pod name). Existing runs get theirs from
the columns it replaces: a YARN run's application, else the local run's pid. ``pid_start`` was never read.
The run's ``application_id`` in the API (SPEC §5) is derived from the handle from now on.

Plain ADD and DROP COLUMN (SQLite 3.35+ does both in place): no table rebuild, the partial unique index
on running runs stays.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

YARN, PID = "yarn:", "pid:"


def _runs(*columns: str) -> sa.TableClause:
    return sa.table("runs", *(sa.column(name) for name in columns))


def upgrade() -> None:
    op.add_column("runs", sa.Column("handle", sa.String(128), nullable=True))
    runs = _runs("handle", "application_id", "pid")
    application, pid = sa.cast(runs.c.application_id, sa.String), sa.cast(runs.c.pid, sa.String)
    op.execute(
        runs.update()
        .where(runs.c.application_id.is_not(None))
        .values(handle=sa.literal(YARN, sa.String) + application)
    )
    op.execute(
        runs.update()
        .where(runs.c.handle.is_(None), runs.c.pid.is_not(None))
        .values(handle=sa.literal(PID, sa.String) + pid)
    )
    for column in ("pid_start", "pid", "application_id"):
        op.drop_column("runs", column)


def downgrade() -> None:
    op.add_column("runs", sa.Column("application_id", sa.String(64), nullable=True))
    op.add_column("runs", sa.Column("pid", sa.Integer(), nullable=True))
    op.add_column("runs", sa.Column("pid_start", sa.BigInteger(), nullable=True))
    runs = _runs("handle", "application_id", "pid")
    handle = sa.cast(runs.c.handle, sa.String)
    op.execute(
        runs.update()
        .where(handle.like(f"{YARN}%"))
        .values(application_id=sa.func.substr(handle, len(YARN) + 1))
    )
    op.execute(
        runs.update()
        .where(handle.like(f"{PID}%"))
        .values(pid=sa.cast(sa.func.substr(handle, len(PID) + 1), sa.Integer))
    )
    op.drop_column("runs", "handle")

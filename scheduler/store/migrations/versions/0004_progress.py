"""Progress and ETA: the latest progress of a run, the expected duration of a task.

Existing tasks get their expected duration from the history already stored (the median of their last 10
successful runs, as ``scheduler.runs.eta`` computes it from then on), so ETAs work from the first run
after the upgrade.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import statistics
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("progress", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("progress_message", sa.Text(), nullable=True))
    op.add_column("runs", sa.Column("progress_at", sa.DateTime(), nullable=True))
    op.add_column("tasks", sa.Column("expected_seconds", sa.Float(), nullable=True))
    _backfill_expected()


HISTORY = 10


def _backfill_expected() -> None:
    runs = sa.table(
        "runs",
        sa.column("codops"),
        sa.column("task"),
        sa.column("status"),
        sa.column("duration_seconds"),
        sa.column("started_at"),
    )
    tasks = sa.table("tasks", sa.column("codops"), sa.column("task"), sa.column("expected_seconds"))
    rank = (
        sa.func.row_number()
        .over(partition_by=(runs.c.codops, runs.c.task), order_by=runs.c.started_at.desc())
        .label("rank")
    )
    latest = (
        sa.select(runs.c.codops, runs.c.task, runs.c.duration_seconds, rank)
        .where(runs.c.status == "SUCCEEDED", runs.c.duration_seconds.is_not(None))
        .subquery()
    )
    query = sa.select(latest.c.codops, latest.c.task, latest.c.duration_seconds).where(
        latest.c.rank <= HISTORY
    )
    durations: dict[tuple[str, str], list[float]] = {}
    connection = op.get_bind()
    for codops, task, seconds in connection.execute(query):
        durations.setdefault((codops, task), []).append(seconds)
    for (codops, task), found in durations.items():
        connection.execute(
            tasks.update()
            .where(tasks.c.codops == codops, tasks.c.task == task)
            .values(expected_seconds=statistics.median(found))
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks") as tasks:
        tasks.drop_column("expected_seconds")
    with op.batch_alter_table("runs") as runs:
        for column in ("progress_at", "progress_message", "progress"):
            runs.drop_column(column)

"""Progress and ETA: the latest progress of a run, the expected duration of a task.

Revision ID: 0004
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("progress", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("progress_message", sa.Text(), nullable=True))
    op.add_column("runs", sa.Column("progress_at", sa.DateTime(), nullable=True))
    op.add_column("tasks", sa.Column("expected_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as tasks:
        tasks.drop_column("expected_seconds")
    with op.batch_alter_table("runs") as runs:
        for column in ("progress_at", "progress_message", "progress"):
            runs.drop_column(column)

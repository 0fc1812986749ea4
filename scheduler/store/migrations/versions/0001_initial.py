"""Initial schema: runs, tasks, problems, triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUNNING = sa.text("status = 'RUNNING'")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("codops", sa.String(32), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("loop", sa.String(32), nullable=False),
        sa.Column("executor", sa.String(16), nullable=False),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("application_id", sa.String(64), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("pid_start", sa.BigInteger(), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("deadline", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_codops_task_started_at", "runs", ["codops", "task", "started_at"])
    op.create_index("ix_runs_started_at_id", "runs", ["started_at", "id"])
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_index(
        "uq_runs_one_running_per_task",
        "runs",
        ["codops", "task"],
        unique=True,
        sqlite_where=RUNNING,
        postgresql_where=RUNNING,
    )

    op.create_table(
        "tasks",
        sa.Column("codops", sa.String(32), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("loop", sa.String(32), nullable=False),
        sa.Column("executor", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_status", sa.String(16), nullable=True),
        sa.Column("last_run_id", sa.String(40), nullable=True),
        sa.Column("last_started_at", sa.DateTime(), nullable=True),
        sa.Column("last_finished_at", sa.DateTime(), nullable=True),
        sa.Column("last_duration_seconds", sa.Float(), nullable=True),
        sa.Column("last_success_at", sa.DateTime(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_due", sa.DateTime(), nullable=True),
        sa.Column("file", sa.Text(), nullable=True),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("removed_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("codops", "task", name="pk_tasks"),
    )
    op.create_index("ix_tasks_loop", "tasks", ["loop"])

    op.create_table(
        "problems",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("codops", sa.String(32), nullable=False),
        sa.Column("file", sa.Text(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("cell", sa.Integer(), nullable=True),
        sa.Column("task", sa.String(64), nullable=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("found_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_problems"),
    )
    op.create_index("ix_problems_codops", "problems", ["codops"])
    op.create_index("ix_problems_repository", "problems", ["repository"])

    op.create_table(
        "triggers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("codops", sa.String(32), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("loop", sa.String(32), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=True),
        sa.Column("taken_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_triggers"),
    )
    op.create_index("ix_triggers_loop_taken_at", "triggers", ["loop", "taken_at"])


def downgrade() -> None:
    for table in ("triggers", "problems", "tasks", "runs"):
        op.drop_table(table)

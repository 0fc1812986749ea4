"""Capacity: why a task waits, how long a run waited for its slot, and its peak memory.

``tasks.reason`` says why a PENDING task waits (``waiting for a local slot (3/3 in use)``; any cause,
written by ``Store.set_waiting``). ``runs.waited_seconds`` is the time the run waited for its capacity
slot before it started (not counted against its timeout); ``runs.peak_memory_bytes`` the most memory its
local processes held, where a cgroup measured it. Plain ADD COLUMN: no table rebuild.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("reason", sa.Text(), nullable=True))
    op.add_column("runs", sa.Column("waited_seconds", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("peak_memory_bytes")
        runs.drop_column("waited_seconds")
    with op.batch_alter_table("tasks") as tasks:
        tasks.drop_column("reason")

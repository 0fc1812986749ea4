"""Invalid tasks and the error one glance away: the commit a task has been invalid since, and its last
run's error.

``tasks.invalid_since`` is the version (short commit) at which the definition became invalid (its problem
is ``tasks.reason``, from 0006, which says in words why a task is in its state: an INVALID task's problem,
what a PENDING task waits for). ``tasks.last_error`` is the last line of the last run's exception
(``NameError: name 'x' is not defined``), as the run's ``error``, so that the task list shows why it failed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("invalid_since", sa.String(64), nullable=True))
    op.add_column("tasks", sa.Column("last_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as tasks:
        tasks.drop_column("last_error")
        tasks.drop_column("invalid_since")

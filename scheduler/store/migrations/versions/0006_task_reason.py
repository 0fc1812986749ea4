"""A task's state reason, the commit it has been invalid since, and its last run's error.

``tasks.reason`` says, in words, why the task is in its state: for ``INVALID`` its problem
(``peach.conf/tf.yaml:5: method 'train_modle' is not defined at the top level of analysis.ipynb``), for
``PENDING`` what it waits for (``environment failing: ..., next try at ...``); null when there is nothing
to say. ``tasks.invalid_since`` is the version (short commit) at which the definition became invalid.
``tasks.last_error`` is the last line of the last run's exception (``NameError: name 'x' is not
defined``), as the run's ``error``, so that the task list shows why it failed.

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
    op.add_column("tasks", sa.Column("invalid_since", sa.String(64), nullable=True))
    op.add_column("tasks", sa.Column("last_error", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("tasks", "last_error")
    op.drop_column("tasks", "invalid_since")
    op.drop_column("tasks", "reason")

"""Run manifests (what each run ran) and reruns: ``run_manifests``, ``runs.rerun_of``, ``triggers.rerun_of``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_manifests",
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("commit", sa.String(64), nullable=True),
        sa.Column("runner", sa.Text(), nullable=False),
        sa.Column("requirements", sa.Text(), nullable=False),
        sa.Column("frozen", sa.Text(), nullable=True),
        sa.Column("spark", sa.Text(), nullable=True),
        sa.Column("args", sa.Text(), nullable=False),
        sa.Column("definition_file", sa.Text(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_run_manifests"),
    )
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("rerun_of", sa.String(40), nullable=True))
    with op.batch_alter_table("triggers") as triggers:
        triggers.add_column(sa.Column("rerun_of", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("triggers") as triggers:
        triggers.drop_column("rerun_of")
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("rerun_of")
    op.drop_table("run_manifests")

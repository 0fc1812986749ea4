"""Run artifacts: the files a run left in its artifacts directory, and the runs to keep.

``runs.keep`` marks a run whose artifacts retention must never prune; ``runs.artifacts_dir`` is where the
run's artifacts are (None once pruned, or when the run had none, e.g. YARN cluster mode);
``runs.artifacts_state`` says which (``pending`` while the run goes, then ``kept``, ``pruned`` or
``unavailable``) and ``runs.artifacts_note`` why, in words. ``run_artifacts`` lists each file: its path
relative to the directory, size, sha256, and whether it was dropped for the size limit.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite does it in place): no table rebuild, the partial unique index stays.
    op.add_column("runs", sa.Column("keep", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("runs", sa.Column("artifacts_dir", sa.Text(), nullable=True))
    op.add_column("runs", sa.Column("artifacts_state", sa.String(16), nullable=True))
    op.add_column("runs", sa.Column("artifacts_note", sa.Text(), nullable=True))
    op.create_table(
        "run_artifacts",
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("dropped", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "path", name="pk_run_artifacts"),
    )


def downgrade() -> None:
    op.drop_table("run_artifacts")
    for column in ("artifacts_note", "artifacts_state", "artifacts_dir", "keep"):
        op.drop_column("runs", column)

"""monitor runs: every monitoring pass, so a silent monitor can raise an alert

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 05:05:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "monitor_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("windows", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_monitor_runs_model_started", "monitor_runs", ["model", "started_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_monitor_runs_model_started", table_name="monitor_runs")
    op.drop_table("monitor_runs")

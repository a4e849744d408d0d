"""alert_deliveries: an outbox of alerts a sink has not taken yet, so a webhook or Slack that is
down when an alert fires gets it when it is back, and a crash between storing an alert and
sending it loses no notification.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 02:20:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_deliveries",
        sa.Column("alert_id", sa.Integer, primary_key=True),
        sa.Column("sink", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("tries", sa.Integer, nullable=False),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("given_up", sa.Boolean, nullable=False),
    )
    op.create_index("ix_alert_deliveries_due", "alert_deliveries", ["model", "given_up", "next_at"])


def downgrade() -> None:
    op.drop_index("ix_alert_deliveries_due", table_name="alert_deliveries")
    op.drop_table("alert_deliveries")

"""predictions.confidence and shadow_predictions.confidence may be empty: a regression model's
prediction has no confidence

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 05:45:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("predictions", "shadow_predictions"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("confidence", existing_type=sa.Float(), nullable=True)


def downgrade() -> None:
    for table in ("predictions", "shadow_predictions"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("confidence", existing_type=sa.Float(), nullable=False)

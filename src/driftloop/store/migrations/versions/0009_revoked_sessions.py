"""revoked_sessions: the sign-in sessions signed out before their cookie expires, so that every
worker refuses a copied cookie after its owner signs out.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 00:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revoked_sessions",
        sa.Column("nonce", sa.String(32), primary_key=True),
        sa.Column("expires", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("revoked_sessions")

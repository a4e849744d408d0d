"""review_items and reviews: the review queue and what each reviewer answered;
quarantined_sources: reviewers quarantined for low agreement (beside the configured ones)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:35:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("prediction_id", sa.String(length=32), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("wanted", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model", "prediction_id", name="uq_review_items_prediction"),
    )
    op.create_index("ix_review_items_model_expires", "review_items", ["model", "expires_at"])
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("reviewer", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("label", sa.String(length=256), nullable=True),
        sa.Column("feedback_id", sa.Integer(), nullable=True),
        sa.Column("undone", sa.Boolean(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reviews_item_id", "reviews", ["item_id"])
    op.create_index("ix_reviews_model_reviewer", "reviews", ["model", "reviewer"])
    op.create_table(
        "quarantined_sources",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model", "source", name="uq_quarantined_sources"),
    )


def downgrade() -> None:
    op.drop_table("quarantined_sources")
    op.drop_index("ix_reviews_model_reviewer", table_name="reviews")
    op.drop_index("ix_reviews_item_id", table_name="reviews")
    op.drop_table("reviews")
    op.drop_index("ix_review_items_model_expires", table_name="review_items")
    op.drop_table("review_items")

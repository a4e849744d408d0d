"""annotations: ratings, tags and late scores people and judges attach to predictions (a review
names the annotation it wrote); a prediction, a shadow prediction, a feedback label and a
review's label may be long texts (a generator's output, a preferred rewrite)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 14:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# a generator's output, and a preferred text, are longer than 256 characters
_WIDENED = [
    ("predictions", "prediction", False),
    ("shadow_predictions", "prediction", False),
    ("feedback", "label", False),
    ("reviews", "label", True),
]


def upgrade() -> None:
    op.create_table(
        "annotations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("prediction_id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("rating", sa.Float(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=True),
        sa.Column("scores", sa.JSON(), nullable=True),
        sa.Column("rationale", sa.Text(), nullable=True),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_annotations_prediction_id", "annotations", ["prediction_id"])
    with op.batch_alter_table("reviews") as batch:  # a generator's review writes an annotation
        batch.add_column(sa.Column("annotation_id", sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        return  # SQLite never enforces a VARCHAR length; rebuilding a large log table would only cost
    for table, column, nullable in _WIDENED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column, type_=sa.Text(), existing_type=sa.String(256), existing_nullable=nullable
            )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        _narrow()
    with op.batch_alter_table("reviews") as batch:
        batch.drop_column("annotation_id")
    op.drop_index("ix_annotations_prediction_id", table_name="annotations")
    op.drop_table("annotations")


def _narrow() -> None:
    for table, column, nullable in _WIDENED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column, type_=sa.String(256), existing_type=sa.Text(), existing_nullable=nullable
            )

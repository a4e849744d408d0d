"""reviews: one standing answer per reviewer and item, enforced by a partial unique index, so
that two submissions racing each other cannot both be recorded. Answers a race recorded twice
before it keep the first; the later ones are undone as ``undo`` would (their feedback and
annotation rows deleted).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 18:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_reviews = sa.table(
    "reviews",
    sa.column("id", sa.Integer),
    sa.column("item_id", sa.Integer),
    sa.column("reviewer", sa.String),
    sa.column("undone", sa.Boolean),
    sa.column("feedback_id", sa.Integer),
    sa.column("annotation_id", sa.Integer),
)
_feedback = sa.table("feedback", sa.column("id", sa.Integer))
_annotations = sa.table("annotations", sa.column("id", sa.Integer))


def upgrade() -> None:
    conn = op.get_bind()
    standing = conn.execute(
        sa.select(_reviews).where(_reviews.c.undone.is_(False)).order_by(_reviews.c.id)
    ).all()
    seen: set[tuple[int, str]] = set()
    for row in standing:
        if (row.item_id, row.reviewer) not in seen:
            seen.add((row.item_id, row.reviewer))
            continue
        conn.execute(sa.update(_reviews).where(_reviews.c.id == row.id).values(undone=True))
        if row.feedback_id is not None:
            conn.execute(sa.delete(_feedback).where(_feedback.c.id == row.feedback_id))
        if row.annotation_id is not None:
            conn.execute(sa.delete(_annotations).where(_annotations.c.id == row.annotation_id))
    op.create_index(
        "uq_reviews_item_reviewer_standing",
        "reviews",
        ["item_id", "reviewer"],
        unique=True,
        sqlite_where=sa.text("NOT undone"),
        postgresql_where=sa.text("NOT undone"),
    )


def downgrade() -> None:
    op.drop_index("uq_reviews_item_reviewer_standing", table_name="reviews")

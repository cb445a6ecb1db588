"""photos remember their last message and who claimed them (sweeper, same-message reclaim)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("photos", sa.Column("message_id", sa.String(64)))
    op.add_column("photos", sa.Column("enqueued_at", sa.DateTime(timezone=True)))
    op.add_column("photos", sa.Column("claimed_by", sa.String(64)))
    op.create_index(
        "ix_photos_unfinished",
        "photos",
        ["status", "enqueued_at"],
        postgresql_where=sa.text("status IN ('PENDING', 'PROCESSING')"),
    )


def downgrade() -> None:
    op.drop_index("ix_photos_unfinished", table_name="photos")
    op.drop_column("photos", "claimed_by")
    op.drop_column("photos", "enqueued_at")
    op.drop_column("photos", "message_id")

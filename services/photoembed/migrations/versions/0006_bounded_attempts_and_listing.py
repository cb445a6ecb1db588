"""bounded attempts and time, backlog gauges, newest-first listing

`submitted_at` is when the current round of attempts began (the upload, or a retry of a FAILED
photo): the sweeper fails a photo not finished within GIVE_UP_AFTER_SECONDS of it. Indexes serve
the oldest-PENDING gauge and the cursor pagination of photos (all, by status, by person), newest
first.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("photos", sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE photos SET submitted_at = coalesce(enqueued_at, created_at)")
    op.alter_column("photos", "submitted_at", nullable=False, server_default=sa.text("now()"))
    op.create_index("ix_photos_created_id", "photos", ["created_at", "id"])
    op.create_index("ix_photos_status_created_id", "photos", ["status", "created_at", "id"])
    op.create_index("ix_photos_person_created_id", "photos", ["person_id", "created_at", "id"])
    op.create_index("ix_photos_status_submitted", "photos", ["status", "submitted_at"])
    op.create_index("ix_persons_name_id", "persons", ["name", "id"])


def downgrade() -> None:
    op.drop_index("ix_persons_name_id", table_name="persons")
    op.drop_index("ix_photos_status_submitted", table_name="photos")
    op.drop_index("ix_photos_person_created_id", table_name="photos")
    op.drop_index("ix_photos_status_created_id", table_name="photos")
    op.drop_index("ix_photos_created_id", table_name="photos")
    op.drop_column("photos", "submitted_at")

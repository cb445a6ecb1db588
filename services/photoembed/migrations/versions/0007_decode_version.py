"""every vector records the decode that made it

`decode_version` (images.DECODE_VERSION) and `decode_mode` (`exact`, `jpeg-draft-<side>` or
`device-jpeg`). Vectors stored before this revision came from version 1, the reduced decode that
moved them up to 7e-3 (max abs) from the exact one; `photoembed backfill` refreshes them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "embeddings",
        sa.Column("decode_version", sa.Integer(), nullable=False, server_default=sa.text("1")),
    )
    op.alter_column("embeddings", "decode_version", server_default=None)
    op.add_column("embeddings", sa.Column("decode_mode", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("embeddings", "decode_mode")
    op.drop_column("embeddings", "decode_version")

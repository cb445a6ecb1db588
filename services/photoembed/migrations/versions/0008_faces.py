"""faces: every face found in a photo, its identity vector and its person

A `faces` table (one row per face and face model, HNSW indexes per identity dimension), the face
stage's own lifecycle on `photos` (faces_status, faces_error, face_count, attempts and lease),
`image_quality` beside a versioned `quality_score`, and unnamed persons (made by the grouping).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FACE_DIMS = (128, 512)


def upgrade() -> None:
    op.alter_column("persons", "name", existing_type=sa.String(200), nullable=True)
    op.add_column("photos", sa.Column("image_quality", sa.Float(), nullable=True))
    op.add_column("photos", sa.Column("quality_version", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE photos SET image_quality = quality_score, quality_version = 1 "
        "WHERE quality_score IS NOT NULL"
    )
    op.add_column("photos", sa.Column("faces_status", sa.String(16), nullable=True))
    op.add_column("photos", sa.Column("faces_error", sa.Text(), nullable=True))
    op.add_column("photos", sa.Column("face_count", sa.Integer(), nullable=True))
    op.add_column(
        "photos",
        sa.Column("faces_attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.add_column(
        "photos", sa.Column("faces_claimed_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("photos", sa.Column("faces_claimed_by", sa.String(64), nullable=True))
    op.add_column("photos", sa.Column("faces_message_id", sa.String(64), nullable=True))
    op.add_column(
        "photos", sa.Column("faces_enqueued_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index("ix_photos_faces_status", "photos", ["faces_status"])
    op.create_check_constraint(
        "photos_faces_status_valid",
        "photos",
        "faces_status IN ('PENDING', 'PROCESSING', 'DONE', 'FAILED')",
    )

    op.create_table(
        "faces",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "photo_id", sa.Uuid(), sa.ForeignKey("photos.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("face_index", sa.Integer(), nullable=False),
        sa.Column("box_x", sa.Integer(), nullable=False),
        sa.Column("box_y", sa.Integer(), nullable=False),
        sa.Column("box_w", sa.Integer(), nullable=False),
        sa.Column("box_h", sa.Integer(), nullable=False),
        sa.Column("landmarks", sa.JSON(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("quality", sa.Float(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", Vector(), nullable=False),
        sa.Column(
            "person_id", sa.Uuid(), sa.ForeignKey("persons.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("assigned_by", sa.String(16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("photo_id", "model", "face_index", name="faces_photo_model_index_key"),
        sa.CheckConstraint("assigned_by IN ('auto', 'upload', 'user')", name="faces_assigned_by"),
    )
    op.create_index("ix_faces_photo_id", "faces", ["photo_id"])
    op.create_index("ix_faces_model", "faces", ["model"])
    op.create_index("ix_faces_person_id", "faces", ["person_id"])
    for dim in FACE_DIMS:
        op.execute(
            f"CREATE INDEX faces_vector_{dim}_hnsw ON faces "
            f"USING hnsw ((vector::vector({dim})) vector_l2_ops) WHERE dim = {dim}"
        )


def downgrade() -> None:
    op.drop_table("faces")
    op.drop_constraint("photos_faces_status_valid", "photos")
    op.drop_index("ix_photos_faces_status", "photos")
    for column in (
        "faces_enqueued_at",
        "faces_message_id",
        "faces_claimed_by",
        "faces_claimed_at",
        "faces_attempts",
        "face_count",
        "faces_error",
        "faces_status",
        "quality_version",
        "image_quality",
    ):
        op.drop_column("photos", column)
    op.execute("UPDATE persons SET name = 'unnamed' WHERE name IS NULL")
    op.alter_column("persons", "name", existing_type=sa.String(200), nullable=False)

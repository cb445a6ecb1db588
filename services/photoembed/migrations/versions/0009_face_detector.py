"""every face records the detector that found it; dlib's identity names the recogniser alone

dlib's faces were stored under `dlib:resnet-v1:<digest>:hog-5pt`. Their vectors come from the
ResNet on a chip aligned by the 5-point landmarks, whichever detector drew the box, so the
identity becomes `dlib:resnet-v1:<digest>:5pt` and the old rows are renamed to it: faces found by
HOG before and by BlazeFace now group and search together. `detector` says which one found each
face (`hog`, `blazeface`, `scrfd`; NULL never stays after this revision).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


OLD, NEW = ":hog-5pt", ":5pt"


def _rename(before: str, after: str) -> None:
    """dlib faces' identity from one suffix to the other (bound values: a colon in SQL text
    would be read as a parameter)."""
    op.execute(
        sa.text(
            "UPDATE faces SET model = left(model, length(model) - length(:before)) || :after"
            " WHERE model LIKE 'dlib:resnet-v1:%' AND right(model, length(:before)) = :before"
        ).bindparams(before=before, after=after)
    )


def upgrade() -> None:
    op.add_column("faces", sa.Column("detector", sa.String(64), nullable=True))
    _rename(OLD, NEW)
    op.execute("UPDATE faces SET detector = 'hog' WHERE model LIKE 'dlib:resnet-v1:%'")
    op.execute("UPDATE faces SET detector = 'scrfd' WHERE model LIKE 'insightface%'")


def downgrade() -> None:
    _rename(NEW, OLD)
    op.drop_column("faces", "detector")

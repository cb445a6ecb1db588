"""vectors of several dimensions, each with its own HNSW index

The column loses its fixed dimension; each supported dimension gets a partial HNSW index over
`vector::vector(N)` for its rows, which is how pgvector indexes mixed dimensions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DIMENSIONS = (512, 768, 1024, 1152)


def upgrade() -> None:
    op.execute("DROP INDEX ix_embeddings_vector_hnsw")
    op.execute("ALTER TABLE embeddings ALTER COLUMN vector TYPE vector")
    for dim in DIMENSIONS:
        op.execute(
            f"CREATE INDEX ix_embeddings_vector_{dim} ON embeddings "
            f"USING hnsw ((vector::vector({dim})) vector_cosine_ops) WHERE dim = {dim}"
        )


def downgrade() -> None:
    for dim in DIMENSIONS:
        op.execute(f"DROP INDEX ix_embeddings_vector_{dim}")
    op.execute("DELETE FROM embeddings WHERE dim <> 512")
    op.execute("ALTER TABLE embeddings ALTER COLUMN vector TYPE vector(512)")
    op.execute(
        "CREATE INDEX ix_embeddings_vector_hnsw ON embeddings USING hnsw (vector vector_cosine_ops)"
    )

"""the photo search indexes over halfvec (16-bit floats): half the size, the same recall

Each supported dimension's partial HNSW index is rebuilt over `vector::halfvec(N)`. The stored
vectors stay full precision (what GET /photos/{id}/embedding serves, what an exact scan and the
similarity a search returns are computed from); only the graph's copy is 16-bit. Measured by
`make bench-scale` (docs/scale.md): at 100,000 photos 130 MB instead of 260 MB, recall@20 mean
0.9994 against 0.9999, no query of 400 below 0.8. This rebuilds the indexes: about 25 s per
100,000 photos here.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DIMENSIONS = (512, 768, 1024, 1152)


def upgrade() -> None:
    for dim in DIMENSIONS:
        op.execute(f"DROP INDEX ix_embeddings_vector_{dim}")
        op.execute(
            f"CREATE INDEX ix_embeddings_halfvec_{dim} ON embeddings "
            f"USING hnsw ((vector::halfvec({dim})) halfvec_cosine_ops) WHERE dim = {dim}"
        )


def downgrade() -> None:
    for dim in DIMENSIONS:
        op.execute(f"DROP INDEX ix_embeddings_halfvec_{dim}")
        op.execute(
            f"CREATE INDEX ix_embeddings_vector_{dim} ON embeddings "
            f"USING hnsw ((vector::vector({dim})) vector_cosine_ops) WHERE dim = {dim}"
        )

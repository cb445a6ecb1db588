"""the photo search indexes with a denser graph (m 24, ef_construction 128)

pgvector's defaults (m 16, ef_construction 64) top out at recall@20 0.972-0.978 on a clustered
library of 1,000,000 photos whatever hnsw.ef_search is (400, 800): some photos are never reached.
Built with m 24 and ef_construction 128 the same library gives 0.9996 at ef_search 100 (1.0 with
the search's exact ranking of its candidates), measured by bench/hnsw_trial.py and
`make bench-scale` (docs/scale.md). The price: a build about three times as long (about a minute
per 100,000 photos here) and a larger index.

The new index is built beside the old one without blocking writes (CREATE INDEX CONCURRENTLY),
then the old one is dropped: uploads keep being stored and searches keep being answered while it
runs.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DIMENSIONS = (512, 768, 1024, 1152)


def _rebuild(options: str) -> None:
    with op.get_context().autocommit_block():
        for dim in DIMENSIONS:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS ix_embeddings_halfvec_{dim}_new")
            op.execute(
                f"CREATE INDEX CONCURRENTLY ix_embeddings_halfvec_{dim}_new ON embeddings "
                f"USING hnsw ((vector::halfvec({dim})) halfvec_cosine_ops) {options} "
                f"WHERE dim = {dim}"
            )
            op.execute(f"DROP INDEX CONCURRENTLY ix_embeddings_halfvec_{dim}")
            op.execute(
                f"ALTER INDEX ix_embeddings_halfvec_{dim}_new RENAME TO ix_embeddings_halfvec_{dim}"
            )


def upgrade() -> None:
    _rebuild("WITH (m = 24, ef_construction = 128)")


def downgrade() -> None:
    _rebuild("")

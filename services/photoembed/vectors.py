"""Vectors in the database: written one row per photo and model identity, the same way from every
writer (the worker's pipeline and the backfill), and how one library's are scanned.

Every library's vectors share one HNSW index per dimension. A search within a library that holds
a good share of the index walks the graph and keeps the library's rows (iterative scans go on
until enough pass); a small library's rows are so few among the others that the walk would cross
most of the graph to collect them, so they are ranked exactly instead, every one of them, through
the (library_id, model, dim) index: `ranks_exactly`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Literal

from sqlalchemy import text
from sqlalchemy.orm import Session

from photoembed.clip.contract import LoadedInfo
from photoembed.images import DECODE_VERSION


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form, for `CAST(:v AS vector)`."""
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"


# A library with at most this many vectors of a model is ranked exactly (docs/scale.md: at
# 100,000 vectors an exact ranking of 5,000 costs what the filtered walk does).
EXACT_SCAN_MAX = 5000
VectorTable = Literal["embeddings", "faces"]


def ranks_exactly(
    session: Session,
    table: VectorTable,
    library_id: uuid.UUID,
    model: str,
    dim: int,
    most: int = EXACT_SCAN_MAX,
) -> bool:
    """Whether the library holds at most `most` vectors of `model`, few enough to rank every one
    (counted only up to `most` + 1, from the index)."""
    count = session.execute(
        text(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE library_id = :library "  # noqa: S608
            "AND model = :model AND dim = :dim LIMIT :cap) AS counted"
        ),
        {"library": library_id, "model": model, "dim": dim, "cap": most + 1},
    ).scalar_one()
    return int(count) <= most


def insert_embedding(
    session: Session,
    photo_id: uuid.UUID,
    vector: Sequence[float],
    loaded: LoadedInfo,
    decode_mode: str,
) -> None:
    """Store (or refresh) the photo's vector of this model, with the decode that made it, in the
    photo's library."""
    plan = loaded.plan
    session.execute(
        text(
            """
            INSERT INTO embeddings (photo_id, library_id, model, backend, model_name, pretrained,
                                    weights_sha256, quick_gelu, dim, vector, decode_version,
                                    decode_mode, created_at)
            SELECT id, library_id, :model, :backend, :model_name, :pretrained, :sha, :quick_gelu,
                   :dim, CAST(:vector AS vector), :decode_version, :decode_mode, now()
              FROM photos WHERE id = :photo_id
            ON CONFLICT (photo_id, model)
            DO UPDATE SET vector = EXCLUDED.vector, decode_version = EXCLUDED.decode_version,
                          decode_mode = EXCLUDED.decode_mode, created_at = EXCLUDED.created_at
            """
        ),
        {
            "photo_id": photo_id,
            "model": loaded.identity,
            "backend": plan.backend,
            "model_name": plan.model_name,
            "pretrained": plan.pretrained,
            "sha": loaded.weights_sha256,
            "quick_gelu": plan.quick_gelu,
            "dim": len(vector),
            "vector": vector_literal(vector),
            "decode_version": DECODE_VERSION,
            "decode_mode": decode_mode,
        },
    )

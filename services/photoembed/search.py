"""Person search: cosine similarity over pgvector's HNSW index, within one model's vectors.

A query becomes one unit vector: a text through the CLIP text tower, an uploaded image through the
image tower, an existing photo's stored vector, or a person's READY photos' mean vector
(re-normalised: the centroid of their appearance). Only vectors of the same model identity are
compared, since vectors of different weights live in different spaces.

These queries stay SQL: the ORM cannot say pgvector's distance operator with the cast that makes
Postgres use the partial HNSW index of each dimension, nor the `SET LOCAL` scan settings.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from photoembed.models import SUPPORTED_DIMS, PhotoStatus
from photoembed.vectors import vector_literal


@dataclass(frozen=True)
class QueryVector:
    vector: list[float]
    model: str


@dataclass(frozen=True)
class SearchHit:
    photo_id: uuid.UUID
    person_id: uuid.UUID | None
    similarity: float
    quality_score: float | None


def _parse(vector_text: str) -> list[float]:
    return [float(v) for v in vector_text.strip("[]").split(",")]


def photo_query(session: Session, photo_id: uuid.UUID, model: str | None) -> QueryVector | None:
    """The photo's vector in `model` (the active one), or its newest if `model` is None."""
    row = session.execute(
        text(
            "SELECT e.vector::text AS vector, e.model FROM embeddings e "
            "JOIN photos p ON p.id = e.photo_id "
            "WHERE e.photo_id = :id AND p.status = :ready "
            "AND (CAST(:model AS text) IS NULL OR e.model = :model) "
            "ORDER BY e.created_at DESC LIMIT 1"
        ),
        {"id": photo_id, "model": model, "ready": PhotoStatus.READY.value},
    ).one_or_none()
    return QueryVector(_parse(row.vector), row.model) if row else None


def person_query(session: Session, person_id: uuid.UUID, model: str | None) -> QueryVector | None:
    """The normalised mean of the person's READY photos' vectors in `model` (the active one), or
    in their newest model if `model` is None."""
    rows = session.execute(
        text(
            """
            SELECT e.vector::text AS vector, e.model FROM embeddings e
              JOIN photos p ON p.id = e.photo_id
             WHERE p.person_id = :id AND p.status = :ready
               AND e.model = coalesce(
                   CAST(:model AS text),
                   (SELECT e2.model FROM embeddings e2 JOIN photos p2 ON p2.id = e2.photo_id
                     WHERE p2.person_id = :id ORDER BY e2.created_at DESC LIMIT 1))
            """
        ),
        {"id": person_id, "model": model, "ready": PhotoStatus.READY.value},
    ).all()
    if not rows:
        return None
    mean = np.mean([_parse(row.vector) for row in rows], axis=0)
    return QueryVector((mean / np.linalg.norm(mean)).tolist(), rows[0].model)


def search_similar(
    session: Session,
    query: QueryVector,
    *,
    limit: int,
    min_quality: float | None = None,
    person_id: uuid.UUID | None = None,
) -> list[SearchHit]:
    dim = len(query.vector)
    if dim not in SUPPORTED_DIMS:
        raise ValueError(f"{dim}-d vectors have no index (supported: {SUPPORTED_DIMS})")
    # Filters run after the index scan; iterative scans keep going until `limit` rows pass them.
    session.execute(text("SET LOCAL hnsw.iterative_scan = 'relaxed_order'"))
    session.execute(text(f"SET LOCAL hnsw.ef_search = {max(40, 2 * limit)}"))
    # The expression and the `dim` condition match the partial index of that dimension.
    distance = f"(e.vector::vector({dim})) <=> CAST(:q AS vector({dim}))"
    # dim is one of SUPPORTED_DIMS (checked above); every value goes in as a bound parameter.
    statement = text(
        f"""
            SELECT p.id, p.person_id, p.quality_score, 1 - ({distance}) AS similarity
              FROM embeddings e JOIN photos p ON p.id = e.photo_id
             WHERE e.dim = {dim} AND e.model = :model AND p.status = :ready
               AND (CAST(:min_quality AS double precision) IS NULL
                    OR p.quality_score >= :min_quality)
               AND (CAST(:person AS uuid) IS NULL OR p.person_id = :person)
             ORDER BY {distance}
             LIMIT :limit
            """  # noqa: S608
    )
    rows = session.execute(
        statement,
        {
            "q": vector_literal(query.vector),
            "model": query.model,
            "min_quality": min_quality,
            "person": person_id,
            "limit": limit,
            "ready": PhotoStatus.READY.value,
        },
    ).all()
    return [
        SearchHit(row.id, row.person_id, float(row.similarity), row.quality_score) for row in rows
    ]

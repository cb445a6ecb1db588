"""Person search: cosine similarity over pgvector's HNSW index, within one model's vectors, or,
for a person with known faces (or a face), L2 distance between face identity vectors.

The photos' index holds 16-bit (halfvec) copies of the vectors (migration 0011: half the size,
the same recall, docs/scale.md); the similarity returned and any exact ranking use the stored
full-precision vectors.

A query becomes one unit vector: a text through the CLIP text tower, an uploaded image through the
image tower, an existing photo's stored vector, or a person's READY photos' mean vector
(re-normalised: the centroid of their appearance). Only vectors of the same model identity are
compared, since vectors of different weights live in different spaces.

These queries stay SQL: the ORM cannot say pgvector's distance operator with the cast that makes
Postgres use the partial HNSW index of each dimension, nor the `SET LOCAL` scan settings.

Every search is within one library: its queries (a photo, a person, a face) are the library's, and
so are the rows it ranks, whatever the library's size (`vectors.ranks_exactly` picks the plan).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sqlalchemy import Row, TextClause, text
from sqlalchemy.orm import Session

from photoembed.logging import get_logger
from photoembed.metrics import EXACT_RECHECKS
from photoembed.models import FACE_DIMS, SUPPORTED_DIMS, PhotoStatus
from photoembed.vectors import plan_for_this_library, ranks_exactly, vector_literal

log = get_logger(__name__)


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
    face_id: uuid.UUID | None = None
    face_distance: float | None = None


@dataclass(frozen=True)
class FaceQuery:
    """Identity vectors of one face model: a person's best faces, or one face."""

    vectors: list[list[float]]
    model: str
    dim: int


PERSON_FACES = 20  # a person is searched by their best faces
# hnsw.ef_search: the candidates each scan keeps (SEARCH_EF_SEARCH=0 takes this). Measured by
# `make bench-scale` on clustered libraries (docs/scale.md): at 100,000 photos 40 left 3-7
# queries of 400 in an unrelated region of the graph (recall 0) and 100 none; at 1,000,000, over
# the photo index's denser graph (migration 0012) and with the candidates ranked exactly, 100
# gave recall 1.0.
DEFAULT_EF_SEARCH = 100
MAX_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search
# A photo search takes twice the rows asked for from the index (its halfvec ranking) and keeps
# the nearest by the stored vectors: near-ties the 16-bit graph orders wrongly come out right.
CANDIDATES_PER_ROW = 2


@dataclass(frozen=True)
class ScanSettings:
    """How the scans of one search run: a small library ranked exactly (at most `exact_max`
    vectors, or `vectors.ranks_exactly`'s bound); a larger one through the HNSW index with `ef_search` candidates at least (twice the rows
    asked for when that is more), iterative scans until enough rows pass the filters."""

    ef_search: int = DEFAULT_EF_SEARCH
    exact_max: int | None = None  # None: `vectors.ranks_exactly`'s bound for the table's size

    @classmethod
    def configured(cls, ef_search: int) -> ScanSettings:
        """SEARCH_EF_SEARCH: 0 for the measured default."""
        return cls(ef_search=ef_search or DEFAULT_EF_SEARCH)

    def wider(self) -> ScanSettings | None:
        """Four times the candidates, up to pgvector's most (1000); None when at the most."""
        if self.ef_search >= MAX_EF_SEARCH:
            return None
        return replace(self, ef_search=min(MAX_EF_SEARCH, 4 * self.ef_search))

    def apply(self, session: Session, rows: int) -> None:
        plan_for_this_library(session)
        session.execute(text("SET LOCAL hnsw.iterative_scan = 'relaxed_order'"))
        ef_search = min(MAX_EF_SEARCH, max(int(self.ef_search), 2 * rows))
        session.execute(text(f"SET LOCAL hnsw.ef_search = {ef_search}"))


def _parse(vector_text: str) -> list[float]:
    return [float(v) for v in vector_text.strip("[]").split(",")]


def photo_query(
    session: Session, library_id: uuid.UUID, photo_id: uuid.UUID, model: str | None
) -> QueryVector | None:
    """The library's photo's vector in `model` (the active one), or its newest if `model` is
    None; None for a photo of another library, as for one without a vector."""
    row = session.execute(
        text(
            "SELECT e.vector::text AS vector, e.model FROM embeddings e "
            "JOIN photos p ON p.id = e.photo_id "
            "WHERE e.photo_id = :id AND p.library_id = :library AND p.status = :ready "
            "AND (CAST(:model AS text) IS NULL OR e.model = :model) "
            "ORDER BY e.created_at DESC LIMIT 1"
        ),
        {"id": photo_id, "library": library_id, "model": model, "ready": PhotoStatus.READY.value},
    ).one_or_none()
    return QueryVector(_parse(row.vector), row.model) if row else None


def person_query(
    session: Session, library_id: uuid.UUID, person_id: uuid.UUID, model: str | None
) -> QueryVector | None:
    """The normalised mean of the library's person's READY photos' vectors in `model` (the
    active one), or in their newest model if `model` is None."""
    rows = session.execute(
        text(
            """
            SELECT e.vector::text AS vector, e.model FROM embeddings e
              JOIN photos p ON p.id = e.photo_id
             WHERE p.person_id = :id AND p.library_id = :library AND p.status = :ready
               AND e.model = coalesce(
                   CAST(:model AS text),
                   (SELECT e2.model FROM embeddings e2 JOIN photos p2 ON p2.id = e2.photo_id
                     WHERE p2.person_id = :id AND p2.library_id = :library
                     ORDER BY e2.created_at DESC LIMIT 1))
            """
        ),
        {"id": person_id, "library": library_id, "model": model, "ready": PhotoStatus.READY.value},
    ).all()
    if not rows:
        return None
    mean = np.mean([_parse(row.vector) for row in rows], axis=0)
    return QueryVector((mean / np.linalg.norm(mean)).tolist(), rows[0].model)


# A person's photos, as GET /persons/{id}/photos has them: uploaded for them, or with their face.
PERSON_PHOTOS = """(SELECT id FROM photos WHERE person_id = :person
                    UNION SELECT photo_id FROM faces WHERE person_id = :person)"""


def _rows(vectors: str, person_id: uuid.UUID | None) -> str:
    """FROM the library's vectors and their photos, WHERE (the library and, given a person, only
    the person's photos; the rest of the conditions follow with AND)."""
    alias = vectors.split()[-1]
    rows = f"{vectors} JOIN photos p ON p.id = {alias}.photo_id WHERE {alias}.library_id = :library"
    if person_id is not None:
        rows += f" AND {alias}.photo_id IN {PERSON_PHOTOS}"
    return rows


def _visibly_wrong(
    session: Session, eligible: str, values: dict[str, Any], rows: Sequence[Row[Any]]
) -> str | None:
    """Why an HNSW result is certainly wrong, or None: the query photo's own vector passes the
    filters but is not among the rows, or fewer rows came back than pass the filters."""
    query_photo = values["query_photo"]
    if query_photo is not None and all(row.id != query_photo for row in rows):
        passes = session.execute(
            text(f"SELECT 1 {eligible} AND p.id = :query_photo"),
            values,
        ).first()
        if passes:
            return "query photo missing"
    if len(rows) < values["limit"]:
        count = session.execute(
            text(f"SELECT count(*) FROM (SELECT 1 {eligible} LIMIT :limit) AS x"),  # noqa: S608
            values,
        ).scalar_one()
        if count > len(rows):
            return f"{len(rows)} of {count} rows"
    return None


def search_similar(
    session: Session,
    library_id: uuid.UUID,
    query: QueryVector,
    *,
    limit: int,
    min_quality: float | None = None,
    person_id: uuid.UUID | None = None,
    scan: ScanSettings = ScanSettings(),
    query_photo: uuid.UUID | None = None,
) -> list[SearchHit]:
    """The `limit` READY photos of the library nearest to `query` (cosine) among vectors of its
    model.

    A small library (`vectors.ranks_exactly`) and a person's photos are ranked exactly. Otherwise
    the HNSW index's CANDIDATES_PER_ROW * `limit` nearest of the library (iterative scans) are
    ranked again by the stored vectors. An HNSW scan can end in the wrong region of the graph;
    where that can be seen (the query is a stored photo's vector, `query_photo`, that passes the
    filters but is missing from the result, or fewer rows came back than pass them) the search is
    asked again with four times the candidates, then, if still wrong, ranked exactly."""
    dim = len(query.vector)
    if dim not in SUPPORTED_DIMS:
        raise ValueError(f"{dim}-d vectors have no index (supported: {SUPPORTED_DIMS})")
    candidates = CANDIDATES_PER_ROW * limit
    # the similarity returned, and an exact ranking, use the stored (full precision) vectors;
    # no index serves this expression
    exact_distance = "e.vector <=> CAST(:q AS vector)"
    index_distance = f"(e.vector::halfvec({dim})) <=> CAST(:q AS halfvec({dim}))"
    # dim is one of SUPPORTED_DIMS (checked above); every value goes in as a bound parameter.
    eligible = f"""
              FROM {_rows("embeddings e", person_id)}
               AND e.dim = {dim} AND e.model = :model AND p.status = :ready
               AND (CAST(:min_quality AS double precision) IS NULL
                    OR p.quality_score >= :min_quality)"""

    def ranked_by(order: str) -> TextClause:
        return text(
            f"""
            SELECT id, person_id, quality_score, 1 - distance AS similarity FROM (
                SELECT p.id, p.person_id, p.quality_score, {exact_distance} AS distance
                {eligible}
                 ORDER BY {order}
                 LIMIT :candidates
            ) AS nearest
             ORDER BY distance
             LIMIT :limit
            """  # noqa: S608
        )

    values = {
        "q": vector_literal(query.vector),
        "library": library_id,
        "model": query.model,
        "min_quality": min_quality,
        "person": person_id,
        "limit": limit,
        "candidates": candidates,
        "ready": PhotoStatus.READY.value,
        "query_photo": query_photo,
    }
    if person_id is not None or ranks_exactly(
        session, "embeddings", library_id, query.model, dim, scan.exact_max
    ):
        rows = session.execute(ranked_by(exact_distance), values).all()
        return _hits(rows)
    statement = ranked_by(index_distance)
    scan.apply(session, candidates)
    rows = session.execute(statement, values).all()
    # A visibly wrong answer is asked again with four times the candidates (cheap), then, if
    # still wrong, by an exact scan (a second or more at a million photos).
    reason = _visibly_wrong(session, eligible, values, rows)
    wider = scan.wider()
    if reason is not None and wider is not None:
        wider.apply(session, candidates)
        rows = session.execute(statement, values).all()
        retried = _visibly_wrong(session, eligible, values, rows)
        log.info("search.wider_scan", reason=reason, ef_search=wider.ef_search, still=retried)
        EXACT_RECHECKS.labels(kind="wider").inc()
        reason = retried
    if reason is not None:
        log.warning("search.exact_recheck", reason=reason, model=query.model, limit=limit)
        EXACT_RECHECKS.labels(kind="photos").inc()
        rows = session.execute(ranked_by(exact_distance), values).all()
    return _hits(rows)


def _hits(rows: Sequence[Row[Any]]) -> list[SearchHit]:
    return [
        SearchHit(row.id, row.person_id, float(row.similarity), row.quality_score) for row in rows
    ]


def person_face_query(
    session: Session, library_id: uuid.UUID, person_id: uuid.UUID
) -> FaceQuery | None:
    """The library's person's best faces of the face model that found their newest face; None
    when no face of theirs is known."""
    rows = session.execute(
        text(
            """
            SELECT f.vector::text AS vector, f.model, f.dim FROM faces f
             WHERE f.person_id = :id AND f.library_id = :library
               AND f.model = (SELECT f2.model FROM faces f2
                               WHERE f2.person_id = :id AND f2.library_id = :library
                               ORDER BY f2.created_at DESC LIMIT 1)
             ORDER BY f.quality DESC, f.id
             LIMIT :n
            """
        ),
        {"id": person_id, "library": library_id, "n": PERSON_FACES},
    ).all()
    if not rows:
        return None
    return FaceQuery([_parse(row.vector) for row in rows], rows[0].model, rows[0].dim)


def face_query(session: Session, library_id: uuid.UUID, face_id: uuid.UUID) -> FaceQuery | None:
    row = session.execute(
        text(
            "SELECT vector::text AS vector, model, dim FROM faces "
            "WHERE id = :id AND library_id = :library"
        ),
        {"id": face_id, "library": library_id},
    ).one_or_none()
    return FaceQuery([_parse(row.vector)], row.model, row.dim) if row else None


def search_by_face(
    session: Session,
    library_id: uuid.UUID,
    query: FaceQuery,
    *,
    limit: int,
    min_quality: float | None = None,
    person_id: uuid.UUID | None = None,
    scan: ScanSettings = ScanSettings(),
) -> list[SearchHit]:
    """The library's READY photos ranked by their face nearest (L2) to any of the query's faces;
    each photo once, with that face, its distance and the cosine similarity of the two vectors.

    In one statement either way: a small library (or a person's photos) is read once, each face
    against every query face; a large one walks the HNSW index once per query face (a lateral
    join), the nearest 3 x `limit` + 20 faces each, several faces of a photo may come first."""
    if query.dim not in FACE_DIMS:
        raise ValueError(f"{query.dim}-d face vectors have no index (supported: {FACE_DIMS})")
    dim = query.dim
    queries = f"unnest(CAST(:queries AS vector({dim})[])) AS q(vector)"
    eligible = f"""
              FROM {_rows("faces f", person_id)}
               AND f.dim = {dim} AND f.model = :model AND p.status = :ready
               AND (CAST(:min_quality AS double precision) IS NULL
                    OR p.quality_score >= :min_quality)"""
    # dim is one of FACE_DIMS (checked above); every value goes in as a bound parameter.
    if person_id is not None or ranks_exactly(
        session, "faces", library_id, query.model, dim, scan.exact_max
    ):
        nearest = f"""
            SELECT DISTINCT ON (e.id) e.face_id, e.id, e.person_id, e.quality_score,
                   best.distance, 1 - best.cosine AS similarity
              FROM (SELECT f.id AS face_id, f.vector, p.id, p.person_id, p.quality_score
                    {eligible}) AS e
             CROSS JOIN LATERAL (
                SELECT e.vector <-> q.vector AS distance, e.vector <=> q.vector AS cosine
                  FROM {queries} ORDER BY 1 LIMIT 1) AS best
             ORDER BY e.id, best.distance"""  # noqa: S608
    else:
        scan.apply(session, 3 * limit + 20)
        index_distance = f"(f.vector::vector({dim})) <-> q.vector"
        nearest = f"""
            SELECT DISTINCT ON (near.id) near.* FROM {queries}
             CROSS JOIN LATERAL (
                SELECT f.id AS face_id, p.id, p.person_id, p.quality_score,
                       {index_distance} AS distance,
                       1 - ((f.vector::vector({dim})) <=> q.vector) AS similarity
                {eligible}
                 ORDER BY {index_distance}
                 LIMIT 3 * :limit + 20
             ) AS near
             ORDER BY near.id, near.distance"""  # noqa: S608
    rows = session.execute(
        text(f"SELECT * FROM ({nearest}) AS per_photo ORDER BY distance, id LIMIT :limit"),  # noqa: S608
        {
            "queries": "{" + ",".join(f'"{vector_literal(v)}"' for v in query.vectors) + "}",
            "library": library_id,
            "model": query.model,
            "min_quality": min_quality,
            "person": person_id,
            "limit": limit,
            "ready": PhotoStatus.READY.value,
        },
    ).all()
    return [
        SearchHit(
            row.id,
            row.person_id,
            float(row.similarity),
            row.quality_score,
            row.face_id,
            float(row.distance),
        )
        for row in rows
    ]

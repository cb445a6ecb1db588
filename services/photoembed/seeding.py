"""A library of N photos put straight into Postgres by COPY: `make bench-scale` and the tests of
search and grouping at size.

Photos are READY with a 512-d CLIP vector each, drawn around cluster centres (a library has many
photos of few scenes and people, which is what makes an HNSW graph hard to search); about 0.9 faces
a photo, 128-d identity vectors around one centre per identity, at the distances dlib's vectors
keep (same person ~0.15 apart, different people ~0.8, match distance 0.5). Every face starts with
its identity's person, as the grouping would have placed it; a tenth of the persons are named.

The HNSW indexes are dropped before the COPY and built again after it, timed: that is how a
restore or a bulk import should load them, and it is the index build the bench reports.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.types.json import Json

PHOTO_DIM = 512
FACE_DIM = 128
PHOTOS_PER_CLUSTER = 100
PHOTOS_PER_IDENTITY = 50
FACE_CENTRE_SPREAD = 0.05  # per dimension: identities ~0.8 apart (L2)
FACE_NOISE = 0.0075  # per dimension: ~0.085 from the centre, faces of one person ~0.12 apart
CHUNK = 20_000


@dataclass
class SeededLibrary:
    photos: int
    faces: int
    persons: int
    photo_ids: list[uuid.UUID] = field(repr=False)
    person_ids: list[uuid.UUID] = field(repr=False)
    photo_vectors: np.ndarray = field(repr=False)
    copy_seconds: float = 0.0
    index_seconds: dict[str, float] = field(default_factory=dict)


def clustered_unit_vectors(
    rng: np.random.Generator, count: int, dim: int, clusters: int, spread: float
) -> np.ndarray:
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    members = rng.integers(0, clusters, count)
    vectors = centres[members] + spread * rng.standard_normal((count, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _hnsw_indexes(conn: psycopg.Connection) -> dict[str, str]:
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes "
        "WHERE tablename IN ('embeddings', 'faces') AND indexdef ILIKE '%USING hnsw%'"
    ).fetchall()
    return {name: definition for name, definition in rows}


def seed_library(
    libpq_url: str, photos: int, *, clip_model: str, face_model: str, seed: int = 0
) -> SeededLibrary:
    """Put `photos` READY photos, their vectors, faces and persons into an empty database."""
    rng = np.random.default_rng(seed)
    identities = max(1, photos // PHOTOS_PER_IDENTITY)
    person_ids = [uuid.uuid4() for _ in range(identities)]
    photo_ids = [uuid.uuid4() for _ in range(photos)]
    photo_vectors = clustered_unit_vectors(
        rng, photos, PHOTO_DIM, max(1, photos // PHOTOS_PER_CLUSTER), 0.03
    )
    face_centres = FACE_CENTRE_SPREAD * rng.standard_normal((identities, FACE_DIM), np.float32)
    # 0, 1 or 2 faces a photo: 0.9 on average
    faces_per_photo = rng.choice([0, 1, 2], size=photos, p=[0.3, 0.5, 0.2])
    start = datetime(2025, 1, 1, tzinfo=UTC)

    with psycopg.connect(libpq_url, autocommit=True) as conn:
        register_vector(conn)
        indexes = _hnsw_indexes(conn)
        for name in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        copy_started = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy("COPY persons (id, name, created_at) FROM STDIN") as copy:
                for i, person_id in enumerate(person_ids):
                    copy.write_row((person_id, f"Person {i}" if i % 10 == 0 else None, start))
            faces = 0
            for begin in range(0, photos, CHUNK):
                end = min(photos, begin + CHUNK)
                faces += _copy_chunk(
                    cur,
                    range(begin, end),
                    photo_ids,
                    photo_vectors,
                    faces_per_photo,
                    face_centres,
                    person_ids,
                    rng,
                    start,
                    clip_model,
                    face_model,
                )
        copy_seconds = time.perf_counter() - copy_started
        conn.execute("ANALYZE")
        index_seconds = {}
        for name, definition in indexes.items():
            began = time.perf_counter()
            conn.execute(definition)
            index_seconds[name] = round(time.perf_counter() - began, 1)
        conn.execute("ANALYZE")
    return SeededLibrary(
        photos=photos,
        faces=faces,
        persons=identities,
        photo_ids=photo_ids,
        person_ids=person_ids,
        photo_vectors=photo_vectors,
        copy_seconds=round(copy_seconds, 1),
        index_seconds=index_seconds,
    )


def _copy_chunk(
    cur: psycopg.Cursor,
    rows: range,
    photo_ids: list[uuid.UUID],
    photo_vectors: np.ndarray,
    faces_per_photo: np.ndarray,
    face_centres: np.ndarray,
    person_ids: list[uuid.UUID],
    rng: np.random.Generator,
    start: datetime,
    clip_model: str,
    face_model: str,
) -> int:
    identities = len(person_ids)
    with cur.copy(
        "COPY photos (id, person_id, status, storage_key, content_hash, content_type, size_bytes,"
        " width, height, quality_score, image_quality, quality_version, attempts, submitted_at,"
        " processed_at, created_at, updated_at, faces_status, face_count, faces_attempts)"
        " FROM STDIN"
    ) as copy:
        for i in rows:
            created = start + timedelta(seconds=i)
            copy.write_row(
                (
                    photo_ids[i], None, "READY", f"{i:064x}", f"{i:064x}",
                    "image/jpeg", 2_000_000, 4000, 3000, 0.5 + 0.5 * ((i * 7919) % 1000) / 1000,
                    0.7, 2, 1, created, created, created, created, "DONE",
                    int(faces_per_photo[i]), 1,
                )
            )  # fmt: skip
    with cur.copy(
        "COPY embeddings (photo_id, model, backend, model_name, pretrained, quick_gelu, dim,"
        " vector, decode_version, created_at) FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(
            ["uuid", "varchar", "varchar", "varchar", "varchar", "bool", "int4", "vector",
             "int4", "timestamptz"]
        )  # fmt: skip
        for i in rows:
            copy.write_row(
                (photo_ids[i], clip_model, "open_clip", "ViT-B-32", "openai", True, PHOTO_DIM,
                 photo_vectors[i], 1, start + timedelta(seconds=i))
            )  # fmt: skip
    faces = 0
    with cur.copy(
        "COPY faces (id, photo_id, model, detector, face_index, box_x, box_y, box_w, box_h,"
        " landmarks, score, quality, dim, vector, person_id, assigned_by, created_at)"
        " FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(
            ["uuid", "uuid", "varchar", "varchar", "int4", "int4", "int4", "int4", "int4",
             "json", "float8", "float8", "int4", "vector", "uuid", "varchar", "timestamptz"]
        )  # fmt: skip
        for i in rows:
            for index in range(int(faces_per_photo[i])):
                identity = int(rng.integers(0, identities))
                vector = face_centres[identity] + FACE_NOISE * rng.standard_normal(
                    FACE_DIM, np.float32
                )
                copy.write_row(
                    (uuid.uuid4(), photo_ids[i], face_model, "blazeface", index, 100 + 400 * index,
                     200, 300, 300, Json([]), 0.9, 0.5 + 0.4 * ((i + index) % 10) / 10, FACE_DIM,
                     vector, person_ids[identity], "auto", start + timedelta(seconds=i))
                )  # fmt: skip
                faces += 1
    return faces

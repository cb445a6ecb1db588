"""Libraries of N photos put straight into Postgres by COPY: `make bench-scale` and the tests of
search and grouping at size.

Photos are READY with a 512-d CLIP vector each, drawn around cluster centres (a library has many
photos of few scenes and people, which is what makes an HNSW graph hard to search); about 0.9 faces
a photo, 128-d identity vectors around one centre per identity, at the distances dlib's vectors
keep (same person ~0.15 apart, different people ~0.8, match distance 0.5). Every face starts with
its identity's person, as the grouping would have placed it (or unplaced, as after a backfill or a
model change: `placed=False`); a tenth of the persons are named. Each library has scenes and
people of its own.

The HNSW indexes are dropped before the COPY and built again after it, timed: that is how a
restore or a bulk import should load them, and it is the index build the bench reports.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.types.json import Json

from photoembed.models import DEFAULT_LIBRARY_ID

PHOTO_DIM = 512
FACE_DIM = 128
PHOTOS_PER_CLUSTER = 100
PHOTOS_PER_IDENTITY = 50
FACE_CENTRE_SPREAD = 0.05  # per dimension: identities ~0.8 apart (L2)
FACE_NOISE = 0.0075  # per dimension: ~0.085 from the centre, faces of one person ~0.12 apart
START = datetime(2025, 1, 1, tzinfo=UTC)
FACES_PER_PHOTO = (0.3, 0.5, 0.2)  # the chances of 0, 1 and 2 faces: 0.9 a photo


@dataclass
class SeededLibrary:
    photos: int
    faces: int
    persons: int
    photo_ids: list[uuid.UUID] = field(repr=False)
    person_ids: list[uuid.UUID] = field(repr=False)
    photo_vectors: np.ndarray = field(repr=False)
    library_id: uuid.UUID = DEFAULT_LIBRARY_ID
    name: str = "default"
    created: list[datetime] = field(default_factory=list, repr=False)  # of each photo
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


def _hnsw_indexes(conn: psycopg.Connection, tables: Sequence[str]) -> dict[str, str]:
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes "
        "WHERE tablename = ANY(%s) AND indexdef ILIKE '%%USING hnsw%%'",
        (list(tables),),
    ).fetchall()
    return {name: definition for name, definition in rows}


def seed_library(
    libpq_url: str,
    photos: int,
    *,
    clip_model: str,
    face_model: str,
    seed: int = 0,
    placed: bool = True,
) -> SeededLibrary:
    """Put `photos` READY photos, their vectors, faces and persons into the default library of
    an empty database."""
    return seed_libraries(
        libpq_url,
        [photos],
        clip_model=clip_model,
        face_model=face_model,
        seed=seed,
        placed=placed,
        use_default=True,
    )[0]


def seed_libraries(
    libpq_url: str,
    sizes: Sequence[int],
    *,
    clip_model: str,
    face_model: str,
    seed: int = 0,
    placed: bool = True,
    use_default: bool = False,
    prefix: str = "seeded",
    vectors: bool = True,
    faces_per_photo: Sequence[float] = FACES_PER_PHOTO,
    first_photo: int = 0,
) -> list[SeededLibrary]:
    """A library of each size (named `prefix`-<n>; with `use_default`, the first is the default
    library). Photo number `first_photo` + i of the seeding was created i seconds after START.
    Without `vectors` the photos have no CLIP vector (what a recluster reads is only faces);
    `faces_per_photo`: the chances of 0, 1 and 2 faces."""
    rng = np.random.default_rng(seed)
    times = [START + timedelta(seconds=first_photo + i) for i in range(sum(sizes))]
    libraries: list[SeededLibrary] = []
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        register_vector(conn)
        indexes = _hnsw_indexes(conn, ["embeddings", "faces"] if vectors else ["faces"])
        for name in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        copy_started = time.perf_counter()
        offset = first_photo
        with conn.cursor() as cur:
            for number, size in enumerate(sizes):
                library_id, name = _library(cur, number, use_default, prefix)
                library = _seed_one(
                    cur,
                    rng,
                    library_id,
                    name,
                    size,
                    offset,
                    times[offset - first_photo : offset - first_photo + size],
                    clip_model,
                    face_model,
                    placed,
                    vectors,
                    faces_per_photo,
                )
                libraries.append(library)
                offset += size
        copy_seconds = time.perf_counter() - copy_started
        conn.execute("ANALYZE")
        index_seconds = {}
        for name, definition in indexes.items():
            began = time.perf_counter()
            conn.execute(definition)
            index_seconds[name] = round(time.perf_counter() - began, 1)
        conn.execute("ANALYZE")
    for library in libraries:
        library.copy_seconds = round(copy_seconds, 1)
        library.index_seconds = index_seconds
    return libraries


def _copy_vectors(
    cur: psycopg.Cursor,
    library_id: uuid.UUID,
    photo_ids: list[uuid.UUID],
    photo_vectors: np.ndarray,
    created: list[datetime],
    clip_model: str,
) -> None:
    with cur.copy(
        "COPY embeddings (photo_id, library_id, model, backend, model_name, pretrained,"
        " quick_gelu, dim, vector, decode_version, created_at) FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(
            ["uuid", "uuid", "varchar", "varchar", "varchar", "varchar", "bool", "int4", "vector",
             "int4", "timestamptz"]
        )  # fmt: skip
        for i, photo_id in enumerate(photo_ids):
            copy.write_row(
                (photo_id, library_id, clip_model, "open_clip", "ViT-B-32", "openai", True,
                 PHOTO_DIM, photo_vectors[i], 1, created[i])
            )  # fmt: skip


def _library(
    cur: psycopg.Cursor, number: int, use_default: bool, prefix: str
) -> tuple[uuid.UUID, str]:
    if use_default and number == 0:
        return DEFAULT_LIBRARY_ID, "default"
    library_id, name = uuid.uuid4(), f"{prefix}-{number}"
    cur.execute(
        "INSERT INTO libraries (id, name, created_at) VALUES (%s, %s, %s)",
        (library_id, name, START),
    )
    return library_id, name


def _seed_one(
    cur: psycopg.Cursor,
    rng: np.random.Generator,
    library_id: uuid.UUID,
    name: str,
    photos: int,
    offset: int,
    created: list[datetime],
    clip_model: str,
    face_model: str,
    placed: bool,
    vectors: bool,
    faces_per_photo: Sequence[float],
) -> SeededLibrary:
    identities = max(1, photos // PHOTOS_PER_IDENTITY)
    person_ids = [uuid.uuid4() for _ in range(identities)]
    photo_ids = [uuid.uuid4() for _ in range(photos)]
    photo_vectors = clustered_unit_vectors(
        rng, photos, PHOTO_DIM, max(1, photos // PHOTOS_PER_CLUSTER), 0.03
    )
    face_centres = FACE_CENTRE_SPREAD * rng.standard_normal((identities, FACE_DIM), np.float32)
    face_counts = rng.choice([0, 1, 2], size=photos, p=list(faces_per_photo))
    with cur.copy("COPY persons (id, library_id, name, created_at) FROM STDIN") as copy:
        for i, person_id in enumerate(person_ids):
            copy.write_row((person_id, library_id, f"Person {i}" if i % 10 == 0 else None, START))
    with cur.copy(
        "COPY photos (id, library_id, person_id, status, storage_key, content_hash, content_type,"
        " size_bytes, width, height, quality_score, image_quality, quality_version, attempts,"
        " submitted_at, processed_at, created_at, updated_at, faces_status, face_count,"
        " faces_attempts) FROM STDIN"
    ) as copy:
        for i in range(photos):
            key = f"{offset + i:064x}"
            copy.write_row(
                (
                    photo_ids[i], library_id, None, "READY", key, key, "image/jpeg", 2_000_000,
                    4000, 3000, 0.5 + 0.5 * ((i * 7919) % 1000) / 1000, 0.7, 2, 1, created[i],
                    created[i], created[i], created[i], "DONE", int(face_counts[i]), 1,
                )
            )  # fmt: skip
    if vectors:
        _copy_vectors(cur, library_id, photo_ids, photo_vectors, created, clip_model)
    faces = 0
    with cur.copy(
        "COPY faces (id, photo_id, library_id, model, detector, face_index, box_x, box_y, box_w,"
        " box_h, landmarks, score, quality, dim, vector, person_id, assigned_by, created_at)"
        " FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(
            ["uuid", "uuid", "uuid", "varchar", "varchar", "int4", "int4", "int4", "int4", "int4",
             "json", "float8", "float8", "int4", "vector", "uuid", "varchar", "timestamptz"]
        )  # fmt: skip
        for i in range(photos):
            for index in range(int(face_counts[i])):
                identity = int(rng.integers(0, identities))
                vector = face_centres[identity] + FACE_NOISE * rng.standard_normal(
                    FACE_DIM, np.float32
                )
                person, assigned = (person_ids[identity], "auto") if placed else (None, None)
                copy.write_row(
                    (uuid.uuid4(), photo_ids[i], library_id, face_model, "blazeface", index,
                     100 + 400 * index, 200, 300, 300, Json([]), 0.9,
                     0.5 + 0.4 * ((i + index) % 10) / 10, FACE_DIM, vector, person, assigned,
                     created[i])
                )  # fmt: skip
                faces += 1
    return SeededLibrary(
        photos=photos,
        faces=faces,
        persons=identities,
        photo_ids=photo_ids,
        person_ids=person_ids,
        photo_vectors=photo_vectors,
        library_id=library_id,
        name=name,
        created=created,
    )

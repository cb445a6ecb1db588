"""What happens to one photo: claim it, decode it, embed it, store the vector, mark it READY.

Delivery is at-least-once, so every step is safe to repeat: the claim is a conditional UPDATE with a
lease, a READY or FAILED photo is left alone, and the vector and the status change commit together.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass

import redis
from PIL import Image
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from photoembed.clip.runtime import ImageEmbedder
from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.images import ImageError, ImageInfo, load_rgb
from photoembed.logging import get_logger
from photoembed.metrics import (
    DECODE_SECONDS,
    PHOTO_FAILURES,
    PHOTOS_EMBEDDED,
    STATUS_TRANSITIONS,
)
from photoembed.models import PhotoStatus
from photoembed.quality import quality_score
from photoembed.storage import PhotoStorage
from photoembed.vectors import insert_embedding

log = get_logger(__name__)

# Errors worth retrying: the photo is fine, a service it needs is not (yet).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    TimeoutError,
    ConnectionError,
)


@dataclass(frozen=True)
class ClaimedPhoto:
    id: uuid.UUID
    storage_key: str
    attempts: int


def decode_stored(
    settings: Settings, storage: PhotoStorage, key: str
) -> tuple[Image.Image, ImageInfo]:
    """A stored photo as RGB at about twice the model's input, within the configured limits."""
    return load_rgb(
        storage.read_path(key),
        max_pixels=settings.max_image_pixels,
        min_side=settings.min_image_side,
        draft_side=settings.decode_draft_side,
    )


def claim_photo(
    session: Session, photo_id: uuid.UUID, message_id: str, lease_seconds: int
) -> ClaimedPhoto | None:
    """Take the photo if it is PENDING, or PROCESSING under an expired lease, or PROCESSING under
    this same message (a redelivery after the worker died, or a retry whose release failed).

    Every claim counts as an attempt, so a photo that kills its worker each time runs out of them.
    """
    row = session.execute(
        text(
            """
            UPDATE photos
               SET status = 'PROCESSING', attempts = attempts + 1, claimed_at = now(),
                   claimed_by = :message_id, updated_at = now()
             WHERE id = :id
               AND (status = 'PENDING'
                    OR (status = 'PROCESSING'
                        AND (claimed_by = :message_id
                             OR claimed_at < now() - make_interval(secs => :lease))))
         RETURNING storage_key, attempts
            """
        ),
        {"id": photo_id, "message_id": message_id, "lease": lease_seconds},
    ).one_or_none()
    if row is None:
        return None
    return ClaimedPhoto(id=photo_id, storage_key=row.storage_key, attempts=row.attempts)


def mark_failed(database_url: str, photo_id: uuid.UUID, error: str, reason: str) -> None:
    PHOTO_FAILURES.labels(reason).inc()
    STATUS_TRANSITIONS.labels(PhotoStatus.FAILED).inc()
    with session_scope(database_url) as session:
        session.execute(
            text(
                """
                UPDATE photos SET status = 'FAILED', error = :error, processed_at = now(),
                                  updated_at = now()
                 WHERE id = :id AND status = 'PROCESSING'
                """
            ),
            {"id": photo_id, "error": error[:2000]},
        )


def release_claim(database_url: str, photo_id: uuid.UUID) -> None:
    """Hand a photo back (PENDING) after a transient error, so that the retry can claim it. The
    attempt is given back too: an outage is not the photo's fault."""
    with session_scope(database_url) as session:
        session.execute(
            text(
                """
                UPDATE photos SET status = 'PENDING', claimed_at = NULL, claimed_by = NULL,
                                  attempts = greatest(attempts - 1, 0), updated_at = now()
                 WHERE id = :id AND status = 'PROCESSING'
                """
            ),
            {"id": photo_id},
        )


def store_embedding(
    session: Session,
    photo_id: uuid.UUID,
    vector: list[float],
    quality: float,
    embedder: ImageEmbedder,
) -> bool:
    """Write the vector (one per photo and model) and mark the photo READY, in one transaction."""
    insert_embedding(session, photo_id, vector, embedder.load())
    updated = session.execute(
        text(
            """
            UPDATE photos SET status = 'READY', quality_score = :quality, error = NULL,
                              processed_at = now(), updated_at = now()
             WHERE id = :id AND status = 'PROCESSING'
            """
        ),
        {"id": photo_id, "quality": quality},
    )
    return bool(updated.rowcount)  # type: ignore[attr-defined]


def process_photo(
    photo_id: uuid.UUID,
    message_id: str,
    settings: Settings,
    embedder: ImageEmbedder,
    storage: PhotoStorage,
) -> str:
    """Run one photo through the pipeline and return its outcome (a PhotoStatus or 'skipped')."""
    started = time.perf_counter()
    with session_scope(settings.database_url) as session:
        claimed = claim_photo(session, photo_id, message_id, settings.claim_lease_seconds)
    if claimed is None:
        log.info("photo.skipped", reason="not PENDING, or claimed by another worker")
        return "skipped"
    if claimed.attempts > settings.max_attempts:
        error = (
            f"gave up after {claimed.attempts - 1} attempts that did not finish "
            f"(the worker died or timed out each time)"
        )
        mark_failed(settings.database_url, photo_id, error, "attempts_exhausted")
        log.error("photo.failed", reason="attempts_exhausted", error=error)
        return PhotoStatus.FAILED

    STATUS_TRANSITIONS.labels(PhotoStatus.PROCESSING).inc()
    try:
        decode_started = time.perf_counter()
        image, info = decode_stored(settings, storage, claimed.storage_key)
        quality = quality_score(image, (info.width, info.height))
        DECODE_SECONDS.observe(time.perf_counter() - decode_started)
        vector = embedder.embed_image(image)
        with session_scope(settings.database_url) as session:
            stored = store_embedding(session, photo_id, vector.tolist(), quality, embedder)
    except (ImageError, FileNotFoundError) as exc:
        mark_failed(settings.database_url, photo_id, str(exc), "bad_input")
        log.warning("photo.failed", reason="bad_input", error=str(exc))
        return PhotoStatus.FAILED
    except TRANSIENT_ERRORS as exc:
        log.warning("photo.retrying", error=f"{type(exc).__name__}: {exc}")
        # If even that fails, the lease expires and the retry or the sweeper picks it up.
        with contextlib.suppress(*TRANSIENT_ERRORS):
            release_claim(settings.database_url, photo_id)
        raise
    except DBAPIError as exc:
        error = f"could not store the embedding: {type(exc).__name__}: {exc.orig}"
        mark_failed(settings.database_url, photo_id, error, "database_rejected")
        log.error("photo.failed", reason="database_rejected", error=error)
        return PhotoStatus.FAILED
    except Exception as exc:
        error = f"embedding failed: {type(exc).__name__}: {exc}"
        mark_failed(settings.database_url, photo_id, error, "embedding_error")
        log.exception("photo.failed", reason="embedding_error", error=error)
        return PhotoStatus.FAILED

    if not stored:
        log.info("photo.skipped", reason="finished by another worker meanwhile")
        return "skipped"
    PHOTOS_EMBEDDED.inc()
    STATUS_TRANSITIONS.labels(PhotoStatus.READY).inc()
    log.info(
        "photo.embedded",
        model=embedder.load().identity,
        quality_score=quality,
        width=info.width,
        height=info.height,
        attempts=claimed.attempts,
        duration_ms=round((time.perf_counter() - started) * 1000),
    )
    return PhotoStatus.READY


def backfill_one(photo_id: uuid.UUID, settings: Settings, embedder: ImageEmbedder) -> str:
    """Add this embedder's vector to an existing photo (a `backfill_photo` message)."""
    loaded = embedder.load()
    with session_scope(settings.database_url) as session:
        key = session.execute(
            text(
                "SELECT p.storage_key FROM photos p WHERE p.id = :id AND NOT EXISTS "
                "(SELECT 1 FROM embeddings e WHERE e.photo_id = p.id AND e.model = :model)"
            ),
            {"id": photo_id, "model": loaded.identity},
        ).scalar_one_or_none()
    if key is None:
        log.info("photo.skipped", reason="already has a vector of this model, or deleted")
        return "skipped"
    try:
        image, _ = decode_stored(settings, PhotoStorage(settings.storage_dir), key)
    except (ImageError, FileNotFoundError) as exc:
        log.warning("photo.backfill_failed", error=str(exc))
        return PhotoStatus.FAILED
    vector = embedder.embed_image(image)
    with session_scope(settings.database_url) as session:
        insert_embedding(session, photo_id, vector.tolist(), loaded)
    log.info("photo.backfilled", model=loaded.identity)
    return PhotoStatus.READY

"""What happens to one photo: claim it, read its bytes, embed it, store the vector, mark it READY.

Delivery is at-least-once, so every step is safe to repeat: the claim is a conditional UPDATE with a
lease, a READY or FAILED photo is left alone, and the vector and the status change commit together.
Every claim is an attempt. A bad image fails at once; anything transient (a service down, bytes this
worker cannot see yet, a device error) hands the photo back and is retried with backoff, until
MAX_ATTEMPTS claims have been spent, and then it ends FAILED with the last reason.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator

import redis
import structlog
from dramatiq import Retry
from sqlalchemy.exc import DBAPIError, OperationalError

from photoembed import events, repository
from photoembed.clip.batching import DeviceFailure
from photoembed.clip.contract import ImageEmbedder
from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.images import ImageError
from photoembed.logging import get_logger
from photoembed.metrics import PHOTO_FAILURES, PHOTOS_EMBEDDED, STATUS_TRANSITIONS
from photoembed.models import EventType, PhotoStatus
from photoembed.photos import decode_limits, decode_stored
from photoembed.storage import PhotoBytesMissing, PhotoStorage, StorageUnavailable
from photoembed.vectors import insert_embedding

log = get_logger(__name__)

# Errors worth retrying: the photo is fine, something it needs is not (yet).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    TimeoutError,
    ConnectionError,
    PhotoBytesMissing,
    StorageUnavailable,
    DeviceFailure,
)


def retry_rule(max_retries: int) -> Callable[[int, BaseException], bool]:
    """Dramatiq's `retry_when`: retry what `retried_when_transient` turned into Retry, at most
    `max_retries` times (attempts are bounded separately by the claims)."""

    def retry_when(retries: int, exception: BaseException) -> bool:
        return retries <= max_retries and isinstance(exception, Retry)

    return retry_when


@contextlib.contextmanager
def retried_when_transient() -> Iterator[None]:
    """A transient error (already logged by the pipeline as `photo.retrying`) becomes Dramatiq's
    Retry: retried with backoff, without an error-level traceback for an expected event."""
    try:
        yield
    except TRANSIENT_ERRORS as exc:
        raise Retry(f"{type(exc).__name__}: {exc}") from exc


def describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, PhotoBytesMissing) else f"{type(exc).__name__}: {exc}"


def unfinished_attempts_error(attempts: int, max_attempts: int) -> str:
    """Why a stage claimed more than MAX_ATTEMPTS times ends FAILED."""
    return (
        f"gave up after {attempts - 1} attempts that did not finish "
        f"(the worker died or timed out each time; MAX_ATTEMPTS={max_attempts})"
    )


def last_attempt_error(attempts: int, error: str) -> str:
    """Why a stage whose last allowed attempt hit a transient error ends FAILED."""
    return f"gave up after {attempts} attempts (MAX_ATTEMPTS); last: {error}"


def fail(
    database_url: str, photo_id: uuid.UUID, error: str, reason: str, *, level: str = "error"
) -> PhotoStatus:
    """End the photo FAILED (if it is still PROCESSING), count it, and log `photo.failed` with the
    reason, also when the database write itself fails. `level="exception"` adds the traceback."""
    try:
        with session_scope(database_url) as session:
            if repository.mark_failed(session, photo_id, error, from_status=PhotoStatus.PROCESSING):
                events.record_for_photos(session, EventType.PHOTO_FAILED, [photo_id])
                PHOTO_FAILURES.labels(reason).inc()
                STATUS_TRANSITIONS.labels(PhotoStatus.FAILED).inc()
    finally:
        getattr(log, level)("photo.failed", reason=reason, error=error)
    return PhotoStatus.FAILED


def process_photo(
    photo_id: uuid.UUID,
    message_id: str,
    settings: Settings,
    embedder: ImageEmbedder,
    storage: PhotoStorage,
    faces_message_id: str | None = None,
) -> str:
    """Run one photo through the pipeline and return its outcome (a PhotoStatus or 'skipped').
    With `faces_message_id`, READY also makes its face stage PENDING under that message, which
    the caller sends once this returns READY."""
    started = time.perf_counter()
    try:
        with session_scope(settings.database_url) as session:
            claimed = repository.claim_photo(
                session, photo_id, message_id, settings.claim_lease_seconds
            )
    except TRANSIENT_ERRORS as exc:
        log.warning("photo.retrying", error=describe(exc), attempt=None)
        raise
    if claimed is None:
        log.info("photo.skipped", reason="not PENDING, or claimed by another worker")
        return "skipped"
    structlog.contextvars.bind_contextvars(library_id=str(claimed.library_id))
    if claimed.attempts > settings.max_attempts:
        error = unfinished_attempts_error(claimed.attempts, settings.max_attempts)
        return fail(settings.database_url, photo_id, error, "attempts_exhausted")

    STATUS_TRANSITIONS.labels(PhotoStatus.PROCESSING).inc()
    try:
        embedded = embedder.embed_photo(storage.read(claimed.storage_key), decode_limits(settings))
        with session_scope(settings.database_url) as session:
            insert_embedding(
                session, photo_id, embedded.vector.tolist(), embedder.load(), embedded.decode_mode
            )
            stored = repository.mark_ready(session, photo_id, embedded.quality, faces_message_id)
            if stored:
                events.record_for_photos(session, EventType.PHOTO_READY, [photo_id])
    except ImageError as exc:
        return fail(settings.database_url, photo_id, str(exc), "bad_input", level="warning")
    except TRANSIENT_ERRORS as exc:
        error = describe(exc)
        if claimed.attempts >= settings.max_attempts:
            error = last_attempt_error(claimed.attempts, error)
            # If the database is what failed, the lease runs out and the next claim ends it.
            with contextlib.suppress(*TRANSIENT_ERRORS):
                fail(settings.database_url, photo_id, error, "attempts_exhausted")
            return PhotoStatus.FAILED
        log.warning(
            "photo.retrying",
            error=error,
            attempt=claimed.attempts,
            max_attempts=settings.max_attempts,
        )
        # If even that fails, the lease expires and the retry or the sweeper picks it up.
        with contextlib.suppress(*TRANSIENT_ERRORS), session_scope(settings.database_url) as s:
            repository.hand_back(s, photo_id, f"attempt {claimed.attempts} failed: {error}")
        raise
    except DBAPIError as exc:
        error = f"could not store the embedding: {type(exc).__name__}: {exc.orig}"
        return fail(settings.database_url, photo_id, error, "database_rejected")
    except Exception as exc:
        error = f"embedding failed: {type(exc).__name__}: {exc}"
        return fail(settings.database_url, photo_id, error, "embedding_error", level="exception")

    if not stored:
        log.info("photo.skipped", reason="finished by another worker meanwhile")
        return "skipped"
    PHOTOS_EMBEDDED.inc()
    STATUS_TRANSITIONS.labels(PhotoStatus.READY).inc()
    log.info(
        "photo.embedded",
        model=embedder.load().identity,
        quality_score=embedded.quality,
        width=embedded.info.width,
        height=embedded.info.height,
        attempts=claimed.attempts,
        duration_ms=round((time.perf_counter() - started) * 1000),
    )
    return PhotoStatus.READY


def backfill_one(
    photo_id: uuid.UUID, settings: Settings, embedder: ImageEmbedder, storage: PhotoStorage
) -> str:
    """Add this embedder's vector to an existing photo (a `backfill_photo` message)."""
    loaded = embedder.load()
    with session_scope(settings.database_url) as session:
        key = repository.storage_key_missing_vector(session, photo_id, loaded.identity)
    if key is None:
        log.info("photo.skipped", reason="already has a vector of this model, or deleted")
        return "skipped"
    try:
        image, _ = decode_stored(settings, storage, key)
    except (ImageError, PhotoBytesMissing) as exc:
        log.warning("photo.backfill_failed", error=str(exc))
        return PhotoStatus.FAILED
    vector = embedder.embed_images([image])[0]
    with session_scope(settings.database_url) as session:
        insert_embedding(
            session, photo_id, vector.tolist(), loaded, decode_limits(settings).decode_mode
        )
    log.info("photo.backfilled", model=loaded.identity)
    return PhotoStatus.READY

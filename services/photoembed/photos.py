"""The photos service: accepting an upload, removing photos, decoding and thumbnailing stored ones,
and sending failed ones round again. Routes, the worker, the backfill and the command line call
these; none of them reaches into another's module for it.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from PIL import Image
from redis.exceptions import RedisError
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from photoembed import events, repository
from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.faces.grouping import drop_empty_unnamed, lock_grouping
from photoembed.faces.store import record_faces_message
from photoembed.images import DecodeLimits, ImageInfo, inspect_image, load_rgb
from photoembed.logging import get_logger
from photoembed.metrics import STATUS_TRANSITIONS, UPLOADS
from photoembed.models import EventType, Face, Photo, PhotoStatus, utcnow
from photoembed.queue import detect_faces_message, embed_photo_message
from photoembed.storage import PhotoStorage, StagedFile, open_storage

log = get_logger(__name__)

THUMBNAIL_SIDE = 256


class UnknownPerson(Exception):
    def __init__(self, person_id: uuid.UUID) -> None:
        super().__init__(f"person {person_id} not found")


def storage_for(settings: Settings) -> PhotoStorage:
    return open_storage(
        settings.storage_location,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        key_id=settings.s3_access_key_id,
        secret=settings.s3_secret_access_key.get_secret_value(),
    )


def decode_limits(settings: Settings) -> DecodeLimits:
    return DecodeLimits(
        max_pixels=settings.max_image_pixels,
        min_side=settings.min_image_side,
        draft_side=settings.decode_draft_side,
    )


def decode_stored(
    settings: Settings, storage: PhotoStorage, key: str
) -> tuple[Image.Image, ImageInfo]:
    """A stored photo as RGB at a reduced scale, within the configured limits."""
    return load_rgb(storage.read(key), decode_limits(settings))


def enqueue_or_defer(broker: RedisBroker, message: Message[Any], photo_id: uuid.UUID) -> None:
    """Send the message of a committed photo; if Redis is down, the sweeper sends it later."""
    try:
        broker.enqueue(message)
    except RedisError as exc:
        log.warning("photo.enqueue_deferred", photo_id=str(photo_id), error=str(exc))


def send(settings: Settings, broker: RedisBroker, photo_ids: list[uuid.UUID]) -> None:
    """Enqueue photos whose rows are committed, each under a new message."""
    for photo_id in photo_ids:
        message = embed_photo_message(settings, photo_id)
        with session_scope(settings.database_url) as session:
            repository.record_message(session, photo_id, message.message_id)
        enqueue_or_defer(broker, message, photo_id)


def send_for_faces(settings: Settings, broker: RedisBroker, photo_ids: list[uuid.UUID]) -> None:
    """Enqueue the face stage of photos whose faces are PENDING (committed), each under a new
    message recorded on the row first."""
    for photo_id in photo_ids:
        message = detect_faces_message(settings, photo_id)
        with session_scope(settings.database_url) as session:
            record_faces_message(session, photo_id, message.message_id)
        enqueue_or_defer(broker, message, photo_id)


def lock_stored_bytes(session: Session, keys: list[str]) -> None:
    """Until the transaction ends, nobody else stores or removes these bytes. The storage is
    content-addressed and shared by every library: an upload of bytes that a deletion (in any
    library) is about to remove either commits its photo first, and the bytes stay, or waits and
    stores them again."""
    for key in sorted(keys):
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('photoembed:bytes'), hashtext(:key))"),
            {"key": key},
        )


def accept_photo(
    settings: Settings,
    storage: PhotoStorage,
    broker: RedisBroker,
    staged: StagedFile,
    library_id: uuid.UUID,
    person_id: uuid.UUID | None,
) -> Photo:
    """Validate a staged upload, store it, record it PENDING in the library, commit, then enqueue
    it. The staged file is committed or discarded whatever happens. Raises ImageError or
    UnknownPerson (also for another library's person)."""
    try:
        info = inspect_image(staged.read_bytes(), decode_limits(settings))
        with session_scope(settings.database_url) as session:
            if (
                person_id is not None
                and repository.person_of(session, library_id, person_id) is None
            ):
                raise UnknownPerson(person_id)
            lock_stored_bytes(session, [staged.sha256])
            key = storage.commit(staged)
            photo_id = uuid.uuid4()
            message = embed_photo_message(settings, photo_id)
            now = utcnow()
            photo = Photo(
                id=photo_id,
                library_id=library_id,
                person_id=person_id,
                status=PhotoStatus.PENDING,
                storage_key=key,
                content_hash=staged.sha256,
                content_type=info.content_type,
                size_bytes=staged.size,
                width=info.width,
                height=info.height,
                message_id=message.message_id,
                enqueued_at=now,
                submitted_at=now,
            )
            session.add(photo)
    finally:
        storage.discard(staged)
    UPLOADS.labels("accepted").inc()
    STATUS_TRANSITIONS.labels(PhotoStatus.PENDING).inc()
    enqueue_or_defer(broker, message, photo.id)
    log.info(
        "photo.uploaded",
        photo_id=str(photo.id),
        message_id=message.message_id,
        size_bytes=staged.size,
        width=info.width,
        height=info.height,
        format=info.format,
    )
    return photo


def remove_photos(
    session: Session, storage: PhotoStorage, library_id: uuid.UUID, photos: list[Photo]
) -> None:
    """Delete the library's rows (their vectors and faces cascade; a person the grouping made,
    left with no face, goes too), then each file no photo of any library still uses."""
    assert all(photo.library_id == library_id for photo in photos)
    keys = sorted({photo.storage_key for photo in photos})
    lock_grouping(session, library_id)
    persons = list(
        session.scalars(
            select(Face.person_id)
            .where(Face.photo_id.in_([photo.id for photo in photos]), Face.person_id.is_not(None))
            .distinct()
        )
    )
    for photo in photos:
        events.record(
            session,
            library_id,
            EventType.PHOTO_DELETED,
            {"photo_id": str(photo.id), "status": "DELETED"},
        )
        session.delete(photo)
    session.flush()
    drop_empty_unnamed(session, library_id, persons)  # type: ignore[arg-type]
    session.commit()
    lock_stored_bytes(session, keys)
    # a key is the SHA-256 of the bytes (the content hash, which is indexed)
    still_used = set(
        session.scalars(
            select(Photo.storage_key).where(
                Photo.content_hash.in_(keys), Photo.storage_key.in_(keys)
            )
        )
    )
    for key in set(keys) - still_used:
        storage.remove(key)
    session.commit()


def thumbnail(
    settings: Settings, storage: PhotoStorage, key: str, side: int = THUMBNAIL_SIDE
) -> bytes:
    """A JPEG at most `side` px on a side; the 256 px one is made on first request and kept
    beside the photo, larger ones (the page's photo view) are made each time.
    Raises ImageError or PhotoBytesMissing."""
    kept = side == THUMBNAIL_SIDE
    cached = storage.read_thumbnail(key) if kept else None
    if cached is not None:
        return cached
    image, _ = load_rgb(storage.read(key), DecodeLimits(settings.max_image_pixels, 1, side))
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    if kept:
        storage.write_thumbnail(key, buffer.getvalue())
    return buffer.getvalue()


def retry_failed(
    settings: Settings, broker: RedisBroker, photo_ids: list[uuid.UUID]
) -> list[uuid.UUID]:
    """Send FAILED photos round again: attempts reset, PENDING, enqueued after the commit.
    Returns the ids that were FAILED (the others are left as they are)."""
    with session_scope(settings.database_url) as session:
        resubmitted = repository.resubmit_failed(session, photo_ids)
    for _ in resubmitted:
        STATUS_TRANSITIONS.labels(PhotoStatus.PENDING).inc()
    send(settings, broker, resubmitted)
    log.info("photo.retry", photos=len(resubmitted))
    return resubmitted

"""The tables: libraries and their API keys; in each library, persons, their photos, one
embedding per photo and model, and the photos' faces.

Every row of a library's data carries its `library_id`. In the database (migration 0013) the
links between them are composite foreign keys on (id, library_id): a face or vector can only
belong to a photo, and a face or photo only to a person, of its own library, whatever the code
above does. The models declare the single-column keys the ORM needs."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    ARRAY,
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Identity vectors of faces with their own HNSW index (migration 0008): dlib's ResNet (128),
# ArcFace (512).
FACE_DIMS = (128, 512)
# Dimensions with their own HNSW index (migration 0005): CLIP B (512), CLIP L / SigLIP B (768),
# CLIP H (1024), SigLIP So400m (1152).
SUPPORTED_DIMS = (512, 768, 1024, 1152)


def utcnow() -> datetime:
    return datetime.now(UTC)


# The library that every row made before libraries existed belongs to (migration 0013), and that
# the keys of API_KEYS act on.
DEFAULT_LIBRARY_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
DEFAULT_LIBRARY_NAME = "default"


class Scope(enum.StrEnum):
    """What an API key may do (its `scopes`)."""

    READ = "read"
    UPLOAD = "upload"
    MANAGE = "manage"
    ADMIN = "admin"


class PhotoStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    READY = "READY"
    FAILED = "FAILED"


class FacesStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    DONE = "DONE"
    FAILED = "FAILED"


class Assignment(enum.StrEnum):
    """Who put a face with its person (or took it away): the grouping never moves a `user` face."""

    AUTO = "auto"
    UPLOAD = "upload"
    USER = "user"


class Base(DeclarativeBase):
    pass


class Library(Base):
    """One customer's photos, persons and faces, seen only through its own keys."""

    __tablename__ = "libraries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """A key bound to one library: only the SHA-256 of its secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    library_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("libraries.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str | None] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Person(Base):
    __tablename__ = "persons"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    library_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("libraries.id"))
    # None for a person the grouping made, until someone names them
    name: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    photos: Mapped[list[Photo]] = relationship(back_populates="person")


class Photo(Base):
    __tablename__ = "photos"
    __table_args__ = (
        CheckConstraint(
            "status IN ('PENDING', 'PROCESSING', 'READY', 'FAILED')", name="photos_status_valid"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    library_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("libraries.id"))
    person_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("persons.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default=PhotoStatus.PENDING, index=True)
    storage_key: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    content_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    quality_score: Mapped[float | None] = mapped_column(Float)
    # the image-only score (quality.quality_score); quality_score combines it with the best face's
    # quality once the face stage is done (quality_version 2, see photoembed.faces.quality)
    image_quality: Mapped[float | None] = mapped_column(Float)
    quality_version: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    message_id: Mapped[str | None] = mapped_column(String(64))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the current round of attempts began: the upload, or the retry of a FAILED photo.
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    # The face stage: NULL until the photo is READY (or with faces off), then its own lifecycle.
    faces_status: Mapped[str | None] = mapped_column(String(16), index=True)
    faces_error: Mapped[str | None] = mapped_column(Text)
    face_count: Mapped[int | None] = mapped_column(Integer)
    faces_attempts: Mapped[int] = mapped_column(Integer, default=0)
    faces_claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    faces_claimed_by: Mapped[str | None] = mapped_column(String(64))
    faces_message_id: Mapped[str | None] = mapped_column(String(64))
    faces_enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    person: Mapped[Person | None] = relationship(back_populates="photos")
    embeddings: Mapped[list[Embedding]] = relationship(
        back_populates="photo", cascade="all, delete-orphan", passive_deletes=True
    )


class Embedding(Base):
    """One vector per photo and model; `model` is the identity string of the weights that made it."""

    __tablename__ = "embeddings"
    __table_args__ = (UniqueConstraint("photo_id", "model", name="embeddings_photo_model_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    photo_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("photos.id", ondelete="CASCADE"), index=True
    )
    library_id: Mapped[uuid.UUID] = mapped_column(Uuid)  # the photo's
    model: Mapped[str] = mapped_column(String(300), index=True)
    backend: Mapped[str] = mapped_column(String(32), default="open_clip")
    model_name: Mapped[str] = mapped_column(String(100))
    pretrained: Mapped[str] = mapped_column(String(300))
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    quick_gelu: Mapped[bool] = mapped_column(Boolean)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[list[float]] = mapped_column(Vector())
    # images.DECODE_VERSION and DecodeLimits.decode_mode of the decode that made the vector
    decode_version: Mapped[int] = mapped_column(Integer)
    decode_mode: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    photo: Mapped[Photo] = relationship(back_populates="embeddings")


class Face(Base):
    """One face found in a photo by one face model: where (in the photo's displayed orientation),
    how sure, how usable, its identity vector, and whose it is."""

    __tablename__ = "faces"
    __table_args__ = (
        UniqueConstraint("photo_id", "model", "face_index", name="faces_photo_model_index_key"),
        CheckConstraint("assigned_by IN ('auto', 'upload', 'user')", name="faces_assigned_by"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    photo_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("photos.id", ondelete="CASCADE"), index=True
    )
    library_id: Mapped[uuid.UUID] = mapped_column(Uuid)  # the photo's
    model: Mapped[str] = mapped_column(String(300))
    detector: Mapped[str | None] = mapped_column(String(64))
    face_index: Mapped[int] = mapped_column(Integer)
    box_x: Mapped[int] = mapped_column(Integer)
    box_y: Mapped[int] = mapped_column(Integer)
    box_w: Mapped[int] = mapped_column(Integer)
    box_h: Mapped[int] = mapped_column(Integer)
    landmarks: Mapped[list[list[float]]] = mapped_column(JSON)
    score: Mapped[float] = mapped_column(Float)
    quality: Mapped[float] = mapped_column(Float)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[list[float]] = mapped_column(Vector())
    person_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("persons.id", ondelete="SET NULL"), index=True
    )
    # None: nobody has placed it (the grouping may); `user`: a person's choice, also when the
    # choice was "nobody" (person_id NULL), and the grouping never changes it
    assigned_by: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @property
    def box(self) -> list[int]:
        return [self.box_x, self.box_y, self.box_w, self.box_h]


class EventType(enum.StrEnum):
    """What an event reports (the `type` of a webhook body and of a stream message)."""

    PHOTO_READY = "photo.ready"
    PHOTO_FAILED = "photo.failed"
    PHOTO_DELETED = "photo.deleted"
    FACES_DONE = "faces.done"
    FACES_FAILED = "faces.failed"
    PERSON_UPDATED = "person.updated"


class Event(Base):
    """One change a library's customers are told about, written in the transaction that made the
    change (a transactional outbox). `position` orders a library's events for the stream: given
    once the event is committed, in the order events became visible (`events.sequence`)."""

    __tablename__ = "events"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    position: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    library_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)


class Webhook(Base):
    """An endpoint of a library that events are sent to, signed with its secret (kept encrypted
    with ENCRYPTION_KEY)."""

    __tablename__ = "webhooks"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    library_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    secret_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # the first failure of the current run of failures; a day of them disables the endpoint
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class DeliveryStatus(enum.StrEnum):
    PENDING = "PENDING"  # due at next_attempt_at
    SENDING = "SENDING"  # handed to the webhooks queue, claimed until its lease runs out
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"  # gave up (retried for WEBHOOK_RETRY_HOURS), or the endpoint went away


class WebhookDelivery(Base):
    """One event for one endpoint: its attempts, the last answer, the next try."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("webhook_id", "event_id", name="deliveries_webhook_event"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    first_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

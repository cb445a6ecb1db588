"""Response bodies of the HTTP API."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from photoembed.libraries import check_library_name, parse_scopes
from photoembed.models import EventType, Photo
from photoembed.webhooks.endpoints import event_types

_PHOTO_ID = "0b3f6a52-4c1e-4d8e-9a51-2f6d1c7e9a10"
_PERSON_ID = "5d2c9e1a-7b34-4f0e-8c61-9e0a3b4d2f77"
_FACE_ID = "9a7e2c41-0d5b-4b8e-a1f3-6c2d8e4b7f90"
_MODEL = "open_clip:ViT-B-32:openai:a2f9c3d1e0b4:quickgelu"


class PhotoOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _PHOTO_ID,
                    "status": "READY",
                    "person_id": _PERSON_ID,
                    "content_type": "image/jpeg",
                    "size_bytes": 2811402,
                    "width": 4000,
                    "height": 3000,
                    "quality_score": 0.82,
                    "error": None,
                    "attempts": 1,
                    "model": _MODEL,
                    "created_at": "2026-11-22T10:00:00Z",
                    "processed_at": "2026-11-22T10:00:01Z",
                    "status_url": f"/photos/{_PHOTO_ID}",
                    "thumbnail_url": f"/photos/{_PHOTO_ID}/thumbnail",
                    "quality_version": 2,
                    "faces_status": "DONE",
                    "faces_error": None,
                    "face_count": 1,
                    "faces_url": f"/photos/{_PHOTO_ID}/faces",
                }
            ]
        },
    )

    id: uuid.UUID
    status: str
    person_id: uuid.UUID | None
    content_type: str
    size_bytes: int
    width: int
    height: int
    quality_score: float | None
    error: str | None
    attempts: int
    model: str | None = None
    created_at: datetime
    processed_at: datetime | None
    status_url: str = Field(description="Where to follow this photo's status")
    thumbnail_url: str
    quality_version: int | None = Field(
        default=None,
        description="1: the image alone; 2: with its best face (docs/faces.md, Quality score)",
    )
    faces_status: str | None = Field(
        default=None, description="The face stage: PENDING, PROCESSING, DONE or FAILED"
    )
    faces_error: str | None = None
    face_count: int | None = None
    faces_url: str

    @classmethod
    def of(cls, photo: Photo, model: str | None = None) -> PhotoOut:
        return cls(
            id=photo.id,
            status=photo.status,
            person_id=photo.person_id,
            content_type=photo.content_type,
            size_bytes=photo.size_bytes,
            width=photo.width,
            height=photo.height,
            quality_score=photo.quality_score,
            error=photo.error,
            attempts=photo.attempts,
            model=model,
            created_at=photo.created_at,
            processed_at=photo.processed_at,
            status_url=f"/photos/{photo.id}",
            thumbnail_url=f"/photos/{photo.id}/thumbnail",
            quality_version=photo.quality_version,
            faces_status=photo.faces_status,
            faces_error=photo.faces_error,
            face_count=photo.face_count,
            faces_url=f"/photos/{photo.id}/faces",
        )


class PersonIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["Ada Lovelace"])
    note: str | None = Field(default=None, max_length=2000, examples=["met at the 2026 meetup"])

    @field_validator("name", "note")
    @classmethod
    def no_nul_characters(cls, value: str | None) -> str | None:
        # Postgres text cannot hold U+0000: refused here with a reason instead of a 500 there.
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters (U+0000)")
        return value


class PersonPatch(PersonIn):
    """Rename a person (a person the grouping made has no name until given one) or change the
    note; fields left out stay as they are."""

    name: str | None = Field(default=None, min_length=1, max_length=200)  # type: ignore[assignment]


class MergeIn(BaseModel):
    """Persons whose faces and photos move to this one; they are deleted."""

    model_config = ConfigDict(populate_by_name=True)

    from_: list[uuid.UUID] = Field(alias="from", min_length=1, max_length=100)


class PersonOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": _PERSON_ID,
                    "name": "Ada Lovelace",
                    "note": None,
                    "created_at": "2026-11-22T10:00:00Z",
                    "face_count": 12,
                    "cover_face_id": _FACE_ID,
                }
            ]
        },
    )

    id: uuid.UUID
    name: str | None = Field(description="null for a person the grouping made, until named")
    note: str | None
    created_at: datetime
    face_count: int = 0
    cover_face_id: uuid.UUID | None = Field(default=None, description="The best-quality face")


class PersonWithPhotos(PersonOut):
    photos: list[PhotoOut] = Field(description="The newest photos (a first page)")
    photos_next_cursor: str | None = Field(
        description="More photos: GET /persons/{id}/photos?cursor=..."
    )


class PhotoPage(BaseModel):
    items: list[PhotoOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: done")


class PersonPage(BaseModel):
    items: list[PersonOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: done")


class PhotoPatch(BaseModel):
    person_id: uuid.UUID | None = Field(description="Attach to this person, or null to detach")


class SearchQuery(BaseModel):
    """A search: exactly one of `text`, `photo_id`, `person_id` (or, in a multipart body, an
    image in `file`), with optional filters."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "a person in a red shirt", "limit": 4},
                {"photo_id": _PHOTO_ID, "limit": 10, "min_quality": 0.5},
                {"person_id": _PERSON_ID, "filter_person_id": _PERSON_ID},
            ]
        },
    )

    text: str | None = Field(default=None, max_length=500, description="Describe the person")
    face_id: uuid.UUID | None = Field(default=None, description="Photos with this face's person")
    photo_id: uuid.UUID | None = Field(default=None, description="Photos that look like this one")
    person_id: uuid.UUID | None = Field(
        default=None,
        description="Photos of this person: by their faces when they have any, else by their "
        "READY photos' mean CLIP vector",
    )
    limit: int = Field(default=20, ge=1, le=100)
    min_quality: float | None = Field(default=None, ge=0, le=1)
    filter_person_id: uuid.UUID | None = Field(default=None, description="Only this person's")

    def queries(self, with_file: bool) -> list[str]:
        """Which of the query fields were given (a blank text is not a query)."""
        given = {
            "text": self.text is not None and self.text.strip() != "",
            "photo_id": self.photo_id is not None,
            "person_id": self.person_id is not None,
            "face_id": self.face_id is not None,
            "file": with_file,
        }
        return [name for name, present in given.items() if present]


class SearchHitOut(BaseModel):
    photo_id: uuid.UUID
    similarity: float = Field(description="Cosine similarity to the query, in [-1, 1]")
    person_id: uuid.UUID | None
    quality_score: float | None
    thumbnail_url: str
    face_id: uuid.UUID | None = Field(default=None, description="By face: the matching face")
    face_distance: float | None = Field(
        default=None, description="By face: L2 distance of the identity vectors (lower: closer)"
    )


class SearchOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "query": "person_id",
                    "by": "clip",
                    "model": _MODEL,
                    "results": [
                        {
                            "photo_id": _PHOTO_ID,
                            "similarity": 0.93,
                            "person_id": _PERSON_ID,
                            "quality_score": 0.82,
                            "thumbnail_url": f"/photos/{_PHOTO_ID}/thumbnail",
                        }
                    ],
                }
            ]
        }
    )

    query: str = Field(description="text, image, photo_id, person_id or face_id")
    by: str = Field(description="clip: whole-image CLIP vectors; face: face identity vectors")
    model: str
    results: list[SearchHitOut]


class EmbeddingOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"photo_id": _PHOTO_ID, "model": _MODEL, "dim": 512, "vector": [0.021, -0.004]}
            ]
        }
    )

    photo_id: uuid.UUID
    model: str
    dim: int
    vector: list[float]


class ErrorOut(BaseModel):
    detail: str


class FaceOut(BaseModel):
    id: uuid.UUID
    photo_id: uuid.UUID
    box: list[int] = Field(description="x, y, width, height in the photo's displayed orientation")
    landmarks: list[list[float]] = Field(description="Five points (x, y), the model's order")
    score: float = Field(description="The detector's score")
    quality: float = Field(description="0..1: size, sharpness, frontalness, detection score")
    person_id: uuid.UUID | None
    person_name: str | None = None
    assigned_by: str | None = Field(
        default=None, description="auto (grouping), upload (the photo's person) or user"
    )
    model: str
    thumbnail_url: str


class FacePage(BaseModel):
    items: list[FaceOut]


class FacePatch(BaseModel):
    person_id: uuid.UUID | None = Field(
        description="This face is this person; null: it is nobody known (the grouping keeps off)"
    )


class HashCheckIn(BaseModel):
    hashes: list[str] = Field(
        min_length=1,
        max_length=1000,
        description="SHA-256 of files' bytes, lowercase hex (at most 1000)",
    )

    @field_validator("hashes")
    @classmethod
    def _hex_digests(cls, hashes: list[str]) -> list[str]:
        bad = [h for h in hashes if len(h) != 64 or any(c not in "0123456789abcdef" for c in h)]
        if bad:
            raise ValueError(f"not a lowercase hex SHA-256: {bad[0]!r}")
        return hashes


class HashCheckOut(BaseModel):
    known: dict[str, uuid.UUID] = Field(
        description="Each hash a photo already has, with that photo's id (any status)"
    )


class LibraryIn(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["acme"])

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str) -> str:
        return check_library_name(name)


class LibraryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    created_at: datetime


class LibraryPage(BaseModel):
    items: list[LibraryOut]


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scopes: list[str] = Field(
        min_length=1,
        max_length=4,
        description="Any of read, upload, manage, admin",
        examples=[["read", "upload"]],
    )
    label: str | None = Field(default=None, max_length=200, examples=["web"])
    expires_at: datetime | None = Field(
        default=None, description="When the key stops working (with a time zone); null: never"
    )

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, scopes: list[str]) -> list[str]:
        return [scope.value for scope in parse_scopes(scopes)]


class KeyOut(BaseModel):
    """A key as listed: never its secret."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    scopes: list[str]
    label: str | None
    library_id: uuid.UUID
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class NewKeyOut(BaseModel):
    """A key just made: `key` is its secret, shown in this answer only."""

    id: uuid.UUID
    key: str = Field(description="The secret: send it as 'Authorization: Bearer <key>'")
    scopes: list[str]
    label: str | None
    library_id: uuid.UUID
    created_at: datetime
    expires_at: datetime | None


class KeyPage(BaseModel):
    items: list[KeyOut]


class LibraryRef(BaseModel):
    id: uuid.UUID
    name: str


class CallerOut(BaseModel):
    """Who the key is: its library and what it may do (the page shows only what it allows)."""

    library: LibraryRef
    scopes: list[str]
    key_id: uuid.UUID | None = Field(description="null for a key of API_KEYS")
    label: str | None
    expires_at: datetime | None


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1, max_length=2000, examples=["https://example.com/photoembed-hook"]
    )
    events: list[str] = Field(
        min_length=1,
        max_length=len(EventType),
        description=f"Any of {', '.join(kind.value for kind in EventType)}",
        examples=[["photo.ready", "photo.failed"]],
    )

    @field_validator("events")
    @classmethod
    def _known_events(cls, names: list[str]) -> list[str]:
        return event_types(names)


class WebhookOut(BaseModel):
    """An endpoint as listed: never its secret."""

    id: uuid.UUID
    url: str
    events: list[str]
    created_at: datetime
    failing_since: datetime | None = Field(description="Every send has failed since then")
    disabled_at: datetime | None = Field(
        description="Nothing is sent while disabled (410 Gone, or a day of failures); "
        "`POST /webhooks/{id}/replay` enables it again"
    )
    disabled_reason: str | None


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="The signing secret (Standard Webhooks, whsec_...): in this answer only"
    )


class WebhookPage(BaseModel):
    items: list[WebhookOut]


class DeliveryOut(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID = Field(description="Also the `webhook-id` of every send of it")
    event_type: str
    status: str = Field(description="PENDING, SENDING, DELIVERED or FAILED (gave up)")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="When it is tried next (PENDING)")
    created_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: done")


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: str = Field(
        description="A time (ISO 8601 with a zone): the events at or after it; or an event id: "
        "the events after it",
        examples=["2026-12-07T10:00:00Z", "3f2c8f9e-6d1a-4c57-9b1e-2a7d5f4c8e11"],
    )


class ReplayOut(BaseModel):
    queued: int = Field(description="Events queued for the endpoint again")

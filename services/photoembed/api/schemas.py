"""Response bodies of the HTTP API."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

_PHOTO_ID = "0b3f6a52-4c1e-4d8e-9a51-2f6d1c7e9a10"
_PERSON_ID = "5d2c9e1a-7b34-4f0e-8c61-9e0a3b4d2f77"
_MODEL = "open_clip:ViT-B-32:openai:a2f9c3d1e0b4:quickgelu"


class PhotoOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
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


class PersonIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["Ada Lovelace"])
    note: str | None = Field(default=None, max_length=2000, examples=["met at the 2026 meetup"])


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
                }
            ]
        },
    )

    id: uuid.UUID
    name: str
    note: str | None
    created_at: datetime


class PersonWithPhotos(PersonOut):
    photos: list[PhotoOut]


class PhotoPatch(BaseModel):
    person_id: uuid.UUID | None = Field(description="Attach to this person, or null to detach")


class SearchHitOut(BaseModel):
    photo_id: uuid.UUID
    similarity: float = Field(description="Cosine similarity to the query, in [-1, 1]")
    person_id: uuid.UUID | None
    quality_score: float | None
    thumbnail_url: str


class SearchOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "query": "person_id",
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

    query: str = Field(description="text, image, photo_id or person_id")
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

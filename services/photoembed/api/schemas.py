"""Response bodies of the HTTP API."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class PhotoOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

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
    model_config = ConfigDict(from_attributes=True)

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
    query: str = Field(description="text, image, photo_id or person_id")
    model: str
    results: list[SearchHitOut]


class EmbeddingOut(BaseModel):
    photo_id: uuid.UUID
    model: str
    dim: int
    vector: list[float]


class ErrorOut(BaseModel):
    detail: str

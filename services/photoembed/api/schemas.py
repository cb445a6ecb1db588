"""Response bodies of the HTTP API."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict


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


class EmbeddingOut(BaseModel):
    photo_id: uuid.UUID
    model: str
    dim: int
    vector: list[float]


class ErrorOut(BaseModel):
    detail: str

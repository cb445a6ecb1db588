"""Cursor pagination: an opaque `cursor` names the last row of a page by its sort key, so that the
next page starts right after it however many rows are added meanwhile."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, TypeVar

from fastapi import HTTPException, Query, status
from sqlalchemy.orm import Session

from photoembed import repository
from photoembed.api.schemas import PhotoOut, PhotoPage
from photoembed.models import PhotoStatus

Row = TypeVar("Row")

LimitQuery = Annotated[int, Query(ge=1, le=200, description="Items per page")]
CursorQuery = Annotated[
    str | None, Query(max_length=2000, description="`next_cursor` of the previous page")
]
StatusQuery = Annotated[
    PhotoStatus | None, Query(alias="status", description="Only photos in this status")
]


def encode_cursor(key: str | datetime, row_id: uuid.UUID) -> str:
    value = key.isoformat() if isinstance(key, datetime) else key
    raw = json.dumps([value, str(row_id)], ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[str, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, row_id = json.loads(raw)
        return str(value), uuid.UUID(row_id)
    except (ValueError, TypeError) as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"cursor is not one this API gave out: {exc}",
        ) from None


def time_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    value, row_id = _decode(cursor)
    try:
        return datetime.fromisoformat(value), row_id
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="cursor is not one this API gave out"
        ) from None


def name_cursor(cursor: str | None) -> tuple[str, uuid.UUID] | None:
    return None if cursor is None else _decode(cursor)


def page(rows: Sequence[Row], limit: int) -> tuple[Sequence[Row], bool]:
    """The page's rows and whether another page follows (queries fetch `limit` + 1)."""
    return rows[:limit], len(rows) > limit


def photo_page(
    session: Session,
    library_id: uuid.UUID,
    limit: int,
    cursor: str | None,
    photo_status: PhotoStatus | None = None,
    person_id: uuid.UUID | None = None,
) -> PhotoPage:
    rows, more = page(
        repository.photos_page(
            session,
            library_id,
            limit=limit,
            after=time_cursor(cursor),
            status=photo_status,
            person_id=person_id,
        ),
        limit,
    )
    last = rows[-1] if rows else None
    return PhotoPage(
        items=[PhotoOut.of(photo) for photo in rows],
        next_cursor=encode_cursor(last.created_at, last.id) if more and last else None,
    )

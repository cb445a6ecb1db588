"""Reads that may go to SEARCH_DATABASE_URL's replica, and the lookups that must not miss what was
written a moment ago: those try the replica, then the primary."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TypeVar

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.repository import person_of

Found = TypeVar("Found")


def first_found(settings: Settings, lookup: Callable[[Session], Found | None]) -> Found | None:
    """`lookup` on the replica, then (if it found nothing there) on the primary: a photo made READY
    or a person created a moment ago may not have reached the replica yet."""
    for url in dict.fromkeys([settings.read_database_url, settings.database_url]):
        with session_scope(url) as session:
            found = lookup(session)
        if found is not None:
            return found
    return None


def person_known_or_404(settings: Settings, library_id: uuid.UUID, person_id: uuid.UUID) -> None:
    """A person named as a filter: 404 for one the library does not have, as for an unknown one."""
    if first_found(settings, lambda s: person_of(s, library_id, person_id)) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"person {person_id} not found")

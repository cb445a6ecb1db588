"""Persons and their photos."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, HTTPException, status
from sqlalchemy import select

from photoembed import repository
from photoembed.api.deps import SessionDep, StorageDep, require_api_key
from photoembed.api.pagination import (
    CursorQuery,
    LimitQuery,
    StatusQuery,
    encode_cursor,
    name_cursor,
    page,
    photo_page,
)
from photoembed.api.schemas import (
    ErrorOut,
    PersonIn,
    PersonOut,
    PersonPage,
    PersonWithPhotos,
    PhotoPage,
)
from photoembed.logging import get_logger
from photoembed.models import Person, Photo
from photoembed.photos import remove_photos

log = get_logger(__name__)
PERSON_PHOTOS = 50  # photos shown with a person; the rest by cursor
router = APIRouter(prefix="/persons", tags=["persons"], dependencies=[Depends(require_api_key)])


def _get_or_404(session: SessionDep, person_id: uuid.UUID) -> Person:
    person = session.get(Person, person_id)
    if person is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"person {person_id} not found")
    return person


@router.post("", status_code=status.HTTP_201_CREATED, response_model=PersonOut)
def create_person(person: PersonIn, session: SessionDep) -> PersonOut:
    """Create a person; attach photos at upload (`person_id`) or later (`PATCH /photos/{id}`)."""
    row = Person(name=person.name, note=person.note)
    session.add(row)
    session.commit()
    log.info("person.created", person_id=str(row.id))
    return PersonOut.model_validate(row)


@router.get("", response_model=PersonPage)
def list_persons(
    session: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> PersonPage:
    """Persons by name, a page at a time: pass `next_cursor` as `cursor` for the next page."""
    rows, more = page(
        repository.persons_page(session, limit=limit, after=name_cursor(cursor)), limit
    )
    last = rows[-1] if rows else None
    return PersonPage(
        items=[PersonOut.model_validate(row) for row in rows],
        next_cursor=encode_cursor(last.name, last.id) if more and last else None,
    )


@router.get("/{person_id}", response_model=PersonWithPhotos, responses={404: {"model": ErrorOut}})
def get_person(person_id: uuid.UUID, session: SessionDep) -> PersonWithPhotos:
    """The person with their newest photos and each photo's status; `photos_next_cursor` leads
    to the rest (`GET /persons/{id}/photos`)."""
    person = _get_or_404(session, person_id)
    photos = photo_page(session, PERSON_PHOTOS, None, person_id=person_id)
    return PersonWithPhotos(
        **PersonOut.model_validate(person).model_dump(),
        photos=photos.items,
        photos_next_cursor=photos.next_cursor,
    )


@router.get("/{person_id}/photos", response_model=PhotoPage, responses={404: {"model": ErrorOut}})
def list_person_photos(
    person_id: uuid.UUID,
    session: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    photo_status: StatusQuery = None,
) -> PhotoPage:
    """The person's photos, newest first, a page at a time (the person's gallery)."""
    _get_or_404(session, person_id)
    return photo_page(session, limit, cursor, photo_status, person_id)


@router.delete(
    "/{person_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"model": ErrorOut}}
)
def delete_person(person_id: uuid.UUID, session: SessionDep, storage: StorageDep) -> None:
    """Delete the person with their photos, the photos' vectors and files."""
    person = _get_or_404(session, person_id)
    photos = list(session.scalars(select(Photo).where(Photo.person_id == person_id)))
    remove_photos(session, storage, photos)
    session.delete(person)
    session.commit()
    log.info("person.deleted", person_id=str(person_id), photos=len(photos))

"""Persons and their photos."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, HTTPException, status
from sqlalchemy import select

from photoembed.api.deps import SessionDep, StorageDep, require_api_key
from photoembed.api.routes.photos import remove_photos
from photoembed.api.schemas import ErrorOut, PersonIn, PersonOut, PersonWithPhotos, PhotoOut
from photoembed.logging import get_logger
from photoembed.models import Person, Photo

log = get_logger(__name__)
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


@router.get("", response_model=list[PersonOut])
def list_persons(session: SessionDep) -> list[PersonOut]:
    """All persons, by name."""
    rows = session.scalars(select(Person).order_by(Person.name, Person.created_at)).all()
    return [PersonOut.model_validate(row) for row in rows]


@router.get("/{person_id}", response_model=PersonWithPhotos, responses={404: {"model": ErrorOut}})
def get_person(person_id: uuid.UUID, session: SessionDep) -> PersonWithPhotos:
    """The person with their photos and each photo's status."""
    person = _get_or_404(session, person_id)
    photos = session.scalars(
        select(Photo).where(Photo.person_id == person_id).order_by(Photo.created_at)
    ).all()
    return PersonWithPhotos(
        **PersonOut.model_validate(person).model_dump(),
        photos=[PhotoOut.model_validate(photo) for photo in photos],
    )


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

"""Persons and their photos."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import select, update

from photoembed import events, repository
from photoembed.api.auth import ManageCaller, ReadCaller, UploadCaller
from photoembed.api.deps import ReadSessionDep, SessionDep, SettingsDep, StorageDep
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
    MergeIn,
    PersonIn,
    PersonOut,
    PersonPage,
    PersonPatch,
    PersonWithPhotos,
    PhotoPage,
)
from photoembed.faces.factory import rules_for
from photoembed.faces.grouping import lock_grouping, place_chosen
from photoembed.logging import get_logger
from photoembed.models import Assignment, EventType, Face, Person, Photo
from photoembed.photos import remove_photos

log = get_logger(__name__)
PERSON_PHOTOS = 50  # photos shown with a person; the rest by cursor
router = APIRouter(prefix="/persons", tags=["persons"])


def person_or_404(session: SessionDep, library_id: uuid.UUID, person_id: uuid.UUID) -> Person:
    """The library's person; 404 for another library's, exactly as for one that does not exist."""
    person = repository.person_of(session, library_id, person_id)
    if person is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"person {person_id} not found")
    return person


def persons_out(session: SessionDep, persons: list[Person]) -> list[PersonOut]:
    faces = repository.person_faces(session, [person.id for person in persons])
    out = []
    for person in persons:
        summary = faces.get(person.id)
        out.append(
            PersonOut(
                id=person.id,
                name=person.name,
                note=person.note,
                created_at=person.created_at,
                face_count=summary.face_count if summary else 0,
                cover_face_id=summary.cover_face_id if summary else None,
            )
        )
    return out


@router.post("", status_code=status.HTTP_201_CREATED, response_model=PersonOut)
def create_person(person: PersonIn, session: SessionDep, caller: UploadCaller) -> PersonOut:
    """Create a person (scope `upload`: an importer makes the persons it uploads photos for);
    attach photos at upload (`person_id`) or later (`PATCH /photos/{id}`)."""
    row = Person(library_id=caller.library_id, name=person.name, note=person.note)
    session.add(row)
    session.commit()
    log.info("person.created", person_id=str(row.id))
    return persons_out(session, [row])[0]


@router.get("", response_model=PersonPage)
def list_persons(
    session: ReadSessionDep,
    caller: ReadCaller,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    name: Annotated[str | None, Query(max_length=200, description="only this exact name")] = None,
) -> PersonPage:
    """Persons by name (unnamed ones, made by the face grouping, first), each with its number of
    faces and its best face (`cover_face_id`); pass `next_cursor` as `cursor` for the next page."""
    rows, more = page(
        repository.persons_page(
            session, caller.library_id, limit=limit, after=name_cursor(cursor), name=name
        ),
        limit,
    )
    last = rows[-1] if rows else None
    return PersonPage(
        items=persons_out(session, list(rows)),
        next_cursor=encode_cursor(last.name or "", last.id) if more and last else None,
    )


@router.get("/{person_id}", response_model=PersonWithPhotos, responses={404: {"model": ErrorOut}})
def get_person(person_id: uuid.UUID, session: SessionDep, caller: ReadCaller) -> PersonWithPhotos:
    """The person with their newest photos and each photo's status; `photos_next_cursor` leads
    to the rest (`GET /persons/{id}/photos`)."""
    person = person_or_404(session, caller.library_id, person_id)
    photos = photo_page(session, caller.library_id, PERSON_PHOTOS, None, person_id=person_id)
    return PersonWithPhotos(
        **persons_out(session, [person])[0].model_dump(),
        photos=photos.items,
        photos_next_cursor=photos.next_cursor,
    )


@router.get("/{person_id}/photos", response_model=PhotoPage, responses={404: {"model": ErrorOut}})
def list_person_photos(
    person_id: uuid.UUID,
    session: SessionDep,
    caller: ReadCaller,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    photo_status: StatusQuery = None,
) -> PhotoPage:
    """The person's photos, newest first, a page at a time (the person's gallery): those
    uploaded for them and those where their face was found."""
    person_or_404(session, caller.library_id, person_id)
    return photo_page(session, caller.library_id, limit, cursor, photo_status, person_id)


@router.patch("/{person_id}", response_model=PersonOut, responses={404: {"model": ErrorOut}})
def update_person(
    person_id: uuid.UUID, change: PersonPatch, session: SessionDep, caller: ManageCaller
) -> PersonOut:
    """Name (or rename) a person, or change the note; fields not sent stay as they are."""
    person = person_or_404(session, caller.library_id, person_id)
    if "name" in change.model_fields_set and change.name is not None:
        person.name = change.name
    if "note" in change.model_fields_set:
        person.note = change.note
    events.record(
        session,
        caller.library_id,
        EventType.PERSON_UPDATED,
        {"person_id": str(person_id), "change": "renamed", "name": person.name},
    )
    session.commit()
    log.info("person.updated", person_id=str(person_id))
    return persons_out(session, [person])[0]


@router.post(
    "/{person_id}/merge",
    response_model=PersonOut,
    responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
def merge_persons(
    person_id: uuid.UUID,
    merge: MergeIn,
    session: SessionDep,
    settings: SettingsDep,
    caller: ManageCaller,
) -> PersonOut:
    """Move the faces and photos of the persons in `from` to this one and delete them. A merge
    is a person's choice: the moved faces count as placed by a user, and no recluster undoes
    it; a named result takes over the unnamed persons next to the moved faces, as a face placed
    by a user does."""
    library_id = caller.library_id
    target = person_or_404(session, library_id, person_id)
    sources = [person_or_404(session, library_id, source) for source in dict.fromkeys(merge.from_)]
    if any(source.id == person_id for source in sources):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="a person cannot be merged into itself"
        )
    ids = [source.id for source in sources]
    lock_grouping(session, library_id)
    moved_ids = list(
        session.scalars(
            update(Face)
            .where(Face.person_id.in_(ids), Face.library_id == library_id)
            .values(person_id=person_id, assigned_by=Assignment.USER)
            .returning(Face.id)
        )
    )
    session.execute(
        update(Photo)
        .where(Photo.person_id.in_(ids), Photo.library_id == library_id)
        .values(person_id=person_id)
    )
    if target.name is None:
        target.name = next((source.name for source in sources if source.name), None)
    for source in sources:
        session.delete(source)
    session.flush()
    events.record(
        session,
        library_id,
        EventType.PERSON_UPDATED,
        {
            "person_id": str(person_id),
            "change": "merged",
            "name": target.name,
            "merged_from": [str(i) for i in ids],
        },
    )
    moved = list(session.scalars(select(Face).where(Face.id.in_(moved_ids))))
    for model in {face.model for face in moved}:
        chosen = [face for face in moved if face.model == model]
        place_chosen(session, library_id, chosen, rules_for(settings, model))
    session.commit()
    log.info("person.merged", person_id=str(person_id), merged=[str(i) for i in ids])
    return persons_out(session, [target])[0]


@router.delete(
    "/{person_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"model": ErrorOut}}
)
def delete_person(
    person_id: uuid.UUID, session: SessionDep, storage: StorageDep, caller: ManageCaller
) -> None:
    """Delete the person with their photos, the photos' vectors and files (files only where no
    photo of any library still has the same bytes)."""
    library_id = caller.library_id
    person = person_or_404(session, library_id, person_id)
    photos = list(
        session.scalars(
            select(Photo).where(Photo.person_id == person_id, Photo.library_id == library_id)
        )
    )
    # the grouping lock before any face's row, in the order the face stage takes them
    lock_grouping(session, library_id)
    # their faces in other people's photos become unplaced again, for the grouping to take up
    session.execute(
        update(Face)
        .where(Face.person_id == person_id, Face.library_id == library_id)
        .values(person_id=None, assigned_by=None)
    )
    remove_photos(session, storage, library_id, photos)
    session.delete(person)
    events.record(
        session,
        library_id,
        EventType.PERSON_UPDATED,
        {"person_id": str(person_id), "change": "deleted"},
    )
    session.commit()
    log.info("person.deleted", person_id=str(person_id), photos=len(photos))

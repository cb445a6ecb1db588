"""The faces found in photos: list a photo's faces, a face's thumbnail, and say whose a face is."""

from __future__ import annotations

import io
import uuid

from fastapi import APIRouter, HTTPException, Response, status
from PIL import Image
from sqlalchemy import select

from photoembed.api.auth import ManageCaller, ReadCaller
from photoembed.api.deps import SessionDep, SettingsDep, StorageDep
from photoembed.api.schemas import ErrorOut, FaceOut, FacePage, FacePatch
from photoembed.faces.factory import rules_for
from photoembed.faces.grouping import drop_empty_unnamed, lock_grouping, place_chosen
from photoembed.images import DecodeLimits, ImageError, load_rgb
from photoembed.logging import get_logger
from photoembed.models import Assignment, Face, Person, Photo
from photoembed.repository import face_of, person_of, photo_of
from photoembed.storage import PhotoBytesMissing, StorageUnavailable

log = get_logger(__name__)
router = APIRouter(tags=["faces"])

FACE_THUMBNAIL_SIDE = 160
FACE_MARGIN = 0.25  # of the box, on every side
DECODE_SIDE = 1024  # a reduced decode is plenty for a 160 px crop


def face_out(face: Face, person_name: str | None) -> FaceOut:
    return FaceOut(
        id=face.id,
        photo_id=face.photo_id,
        box=face.box,
        landmarks=face.landmarks,
        score=face.score,
        quality=face.quality,
        person_id=face.person_id,
        person_name=person_name,
        assigned_by=face.assigned_by,
        model=face.model,
        thumbnail_url=f"/faces/{face.id}/thumbnail",
    )


def _face_or_404(session: SessionDep, library_id: uuid.UUID, face_id: uuid.UUID) -> Face:
    face = face_of(session, library_id, face_id)
    if face is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"face {face_id} not found")
    return face


@router.get(
    "/photos/{photo_id}/faces", response_model=FacePage, responses={404: {"model": ErrorOut}}
)
def list_photo_faces(photo_id: uuid.UUID, session: SessionDep, caller: ReadCaller) -> FacePage:
    """The faces found in the photo, left to right, boxes and landmarks in its displayed
    orientation (EXIF rotation applied), each with its person; empty until `faces_status` is
    DONE."""
    if photo_of(session, caller.library_id, photo_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"photo {photo_id} not found")
    rows = session.execute(
        select(Face, Person.name)
        .outerjoin(Person, Person.id == Face.person_id)
        .where(Face.photo_id == photo_id, Face.library_id == caller.library_id)
        .order_by(Face.model, Face.face_index)
    ).all()
    return FacePage(items=[face_out(face, name) for face, name in rows])


@router.get(
    "/faces/{face_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorOut}},
)
def get_face_thumbnail(
    face_id: uuid.UUID,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    caller: ReadCaller,
) -> Response:
    """The face with a margin, a JPEG at most 160 px on a side."""
    face = _face_or_404(session, caller.library_id, face_id)
    photo = session.get(Photo, face.photo_id)
    assert photo is not None  # faces cascade with their photo
    try:
        image, header = load_rgb(
            storage.read(photo.storage_key), DecodeLimits(settings.max_image_pixels, 1, DECODE_SIDE)
        )
    except (ImageError, PhotoBytesMissing) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no thumbnail: {exc}") from None
    except StorageUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    scale = (image.width * image.height / (header.width * header.height)) ** 0.5
    x, y, w, h = (v * scale for v in face.box)
    margin = FACE_MARGIN * max(w, h)
    crop = image.crop(
        (
            max(0, round(x - margin)),
            max(0, round(y - margin)),
            min(image.width, round(x + w + margin)),
            min(image.height, round(y + h + margin)),
        )
    )
    crop.thumbnail((FACE_THUMBNAIL_SIDE, FACE_THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    crop.save(buffer, format="JPEG", quality=88)
    return Response(
        buffer.getvalue(),
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=3600"},
    )


@router.patch("/faces/{face_id}", response_model=FaceOut, responses={404: {"model": ErrorOut}})
def update_face(
    face_id: uuid.UUID,
    change: FacePatch,
    session: SessionDep,
    settings: SettingsDep,
    caller: ManageCaller,
) -> FaceOut:
    """Say whose face this is, or (`null`) that it is nobody known. Either way it is a user's
    choice: the automatic grouping and `photoembed faces recluster` never move it again. A face
    given a named person brings its unplaced neighbours and takes over the unnamed persons among
    them (photoembed.faces.grouping)."""
    library_id = caller.library_id
    lock_grouping(session, library_id)
    face = _face_or_404(session, library_id, face_id)
    person: Person | None = None
    if change.person_id is not None:
        person = person_of(session, library_id, change.person_id)
        if person is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, detail=f"person {change.person_id} not found"
            )
    previous = face.person_id
    face.person_id, face.assigned_by = change.person_id, Assignment.USER
    session.flush()
    place_chosen(session, library_id, [face], rules_for(settings, face.model))
    if previous is not None and previous != change.person_id:
        drop_empty_unnamed(session, library_id, [previous])
    session.commit()
    log.info(
        "face.assigned",
        face_id=str(face_id),
        person_id=str(change.person_id) if change.person_id else None,
        previous=str(previous) if previous else None,
    )
    return face_out(face, person.name if person else None)

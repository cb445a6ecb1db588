"""Uploading photos, reading their status and embeddings, retrying failed ones."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from photoembed.api.auth import ManageCaller, ReadCaller, UploadCaller
from photoembed.api.deps import (
    ActiveModelDep,
    BrokerDep,
    ReadSessionDep,
    SessionDep,
    SettingsDep,
    StorageDep,
)
from photoembed.api.pagination import CursorQuery, LimitQuery, StatusQuery, photo_page
from photoembed.api.reads import person_known_or_404
from photoembed.api.schemas import (
    EmbeddingOut,
    ErrorOut,
    HashCheckIn,
    HashCheckOut,
    PhotoOut,
    PhotoPage,
    PhotoPatch,
)
from photoembed.api.uploads import FILE_FIELD, receive_form
from photoembed.images import ACCEPTED_NAMES, ImageError, ImageLimitError
from photoembed.logging import get_logger
from photoembed.metrics import UPLOADS
from photoembed.models import Embedding, Photo, PhotoStatus
from photoembed.photos import UnknownPerson, accept_photo, remove_photos, retry_failed, thumbnail
from photoembed.repository import person_of, photo_of, photos_by_hash
from photoembed.storage import PhotoBytesMissing, StorageUnavailable

log = get_logger(__name__)
router = APIRouter(prefix="/photos", tags=["photos"])

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {
                        FILE_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": f"The photo: {ACCEPTED_NAMES}",
                        },
                        "person_id": {
                            "type": "string",
                            "format": "uuid",
                            "description": "Attach the photo to this person",
                        },
                    },
                }
            }
        },
    }
}


def parse_uuid(value: str | None, name: str) -> uuid.UUID | None:
    if value is None or value == "":
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"{name} is not a UUID: {value!r}"
        ) from None


def _current_embedding(
    session: SessionDep, photo_id: uuid.UUID, active_model: str | None
) -> Embedding | None:
    """The active model's vector of the photo, or its newest one if the active model is unknown."""
    query = select(Embedding).where(Embedding.photo_id == photo_id)
    if active_model is not None:
        query = query.where(Embedding.model == active_model)
    return session.scalars(query.order_by(Embedding.created_at.desc()).limit(1)).first()


def photo_or_404(session: SessionDep, library_id: uuid.UUID, photo_id: uuid.UUID) -> Photo:
    """The library's photo; 404 for another library's, exactly as for one that does not exist."""
    photo = photo_of(session, library_id, photo_id)
    if photo is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"photo {photo_id} not found")
    return photo


@router.post("/check", response_model=HashCheckOut)
def check_hashes(check: HashCheckIn, session: SessionDep, caller: UploadCaller) -> HashCheckOut:
    """Which of these files (by the SHA-256 of their bytes, as stored) the key's library already
    has: an importer uploads only the others, so a re-run sends nothing twice. Other libraries'
    photos never count."""
    hashes = list(dict.fromkeys(check.hashes))
    return HashCheckOut(known=photos_by_hash(session, caller.library_id, hashes))


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PhotoOut,
    openapi_extra=UPLOAD_BODY,
    responses={
        400: {"model": ErrorOut, "description": "empty file"},
        404: {"model": ErrorOut, "description": "unknown person_id"},
        413: {"model": ErrorOut, "description": "file larger than MAX_UPLOAD_BYTES"},
        415: {"model": ErrorOut, "description": "not a usable image, or not multipart"},
        422: {"model": ErrorOut, "description": "image outside the pixel limits, bad form"},
        503: {"model": ErrorOut, "description": "the photo storage cannot be reached"},
    },
)
async def upload_photo(
    request: Request,
    response: Response,
    settings: SettingsDep,
    broker: BrokerDep,
    storage: StorageDep,
    caller: UploadCaller,
) -> PhotoOut:
    """Store the photo (multipart field `file`, optional `person_id`), record it as PENDING, then
    queue it for embedding (after the commit). Processing is asynchronous: follow the photo at
    `Location` / `status_url` until it is READY or FAILED."""
    try:
        form = await receive_form(request, storage, settings.max_upload_bytes, {"person_id"})
    except HTTPException as exc:
        if exc.status_code == status.HTTP_413_CONTENT_TOO_LARGE:
            UPLOADS.labels("too_large").inc()
        raise
    staged = form.file
    try:
        if staged is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"send the photo in a multipart part named '{FILE_FIELD}'",
            )
        if staged.size == 0:
            UPLOADS.labels("empty").inc()
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="the file is empty")
        person_id = parse_uuid(form.fields.get("person_id"), "person_id")
    except BaseException:
        if staged is not None:
            storage.discard(staged)
        raise
    try:
        photo = await run_in_threadpool(
            accept_photo, settings, storage, broker, staged, caller.library_id, person_id
        )
    except UnknownPerson as exc:
        UPLOADS.labels("unknown_person").inc()
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    except StorageUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    except ImageError as exc:
        outside_limits = isinstance(exc, ImageLimitError)
        UPLOADS.labels("outside_limits" if outside_limits else "not_an_image").inc()
        code = (
            status.HTTP_422_UNPROCESSABLE_CONTENT
            if outside_limits
            else status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
        )
        raise HTTPException(code, detail=str(exc)) from None
    response.headers["Location"] = f"/photos/{photo.id}"
    return PhotoOut.of(photo)


@router.get("", response_model=PhotoPage)
def list_photos(
    session: ReadSessionDep,
    settings: SettingsDep,
    caller: ReadCaller,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    photo_status: StatusQuery = None,
    person_id: Annotated[uuid.UUID | None, Query(description="Only this person's photos")] = None,
) -> PhotoPage:
    """Photos, newest first, a page at a time: pass `next_cursor` as `cursor` for the next page
    (pages stay stable while photos are added). `model` is left out of list items. A `person_id`
    the library does not have is a 404."""
    if person_id is not None:
        person_known_or_404(settings, caller.library_id, person_id)
    return photo_page(session, caller.library_id, limit, cursor, photo_status, person_id)


@router.get("/{photo_id}", response_model=PhotoOut, responses={404: {"model": ErrorOut}})
def get_photo(
    photo_id: uuid.UUID, session: SessionDep, active_model: ActiveModelDep, caller: ReadCaller
) -> PhotoOut:
    """The photo's status (PENDING, PROCESSING, READY, FAILED with `error`), quality and model.
    While a photo is being retried, `error` says what the last attempt ran into."""
    photo = photo_or_404(session, caller.library_id, photo_id)
    embedding = _current_embedding(session, photo_id, active_model)
    return PhotoOut.of(photo, embedding.model if embedding else None)


@router.patch("/{photo_id}", response_model=PhotoOut, responses={404: {"model": ErrorOut}})
def update_photo(
    photo_id: uuid.UUID, change: PhotoPatch, session: SessionDep, caller: ManageCaller
) -> PhotoOut:
    """Attach the photo to a person (or detach it with `null`)."""
    photo = photo_or_404(session, caller.library_id, photo_id)
    if (
        change.person_id is not None
        and person_of(session, caller.library_id, change.person_id) is None
    ):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"person {change.person_id} not found"
        )
    photo.person_id = change.person_id
    session.commit()
    return PhotoOut.of(photo)


@router.delete(
    "/{photo_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"model": ErrorOut}}
)
def delete_photo(
    photo_id: uuid.UUID, session: SessionDep, storage: StorageDep, caller: ManageCaller
) -> None:
    """Delete the photo, its vectors and faces, and its file unless another photo (of any
    library) has the same bytes."""
    remove_photos(
        session, storage, caller.library_id, [photo_or_404(session, caller.library_id, photo_id)]
    )
    log.info("photo.deleted", photo_id=str(photo_id))


@router.post(
    "/{photo_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PhotoOut,
    responses={
        404: {"model": ErrorOut},
        409: {"model": ErrorOut, "description": "the photo is not FAILED"},
    },
)
def retry_photo(
    photo_id: uuid.UUID,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    broker: BrokerDep,
    caller: UploadCaller,
) -> PhotoOut:
    """Send a FAILED photo round again (once its cause is fixed): attempts reset, PENDING,
    queued after the commit. 409 for a photo in any other status."""
    photo = photo_or_404(session, caller.library_id, photo_id)
    session.rollback()  # the retry runs in its own transaction; read the result afresh below
    if not retry_failed(settings, broker, [photo_id]):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"photo {photo_id} is {photo.status}; only FAILED photos can be retried",
        )
    session.refresh(photo)
    response.headers["Location"] = f"/photos/{photo_id}"
    return PhotoOut.of(photo)


@router.get(
    "/{photo_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorOut}},
)
def get_thumbnail(
    photo_id: uuid.UUID,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    caller: ReadCaller,
    size: Annotated[int, Query(ge=32, le=1024, description="Longest side in px")] = 256,
) -> Response:
    """A JPEG at most `size` px on a side (256 by default: made on first request and kept beside
    the photo; up to 1024 for a closer look, made each time)."""
    photo = photo_or_404(session, caller.library_id, photo_id)
    try:
        data = thumbnail(settings, storage, photo.storage_key, size)
    except (ImageError, PhotoBytesMissing) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no thumbnail: {exc}") from None
    except StorageUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
    )


@router.get(
    "/{photo_id}/embedding", response_model=EmbeddingOut, responses={404: {"model": ErrorOut}}
)
def get_photo_embedding(
    photo_id: uuid.UUID, session: SessionDep, active_model: ActiveModelDep, caller: ReadCaller
) -> EmbeddingOut:
    """The photo's L2-normalised vector and the model identity that made it; 404 until READY."""
    photo = photo_or_404(session, caller.library_id, photo_id)
    ready = photo.status == PhotoStatus.READY
    embedding = _current_embedding(session, photo_id, active_model) if ready else None
    if embedding is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"photo {photo_id} has no vector of the active model yet (status {photo.status})",
        )
    return EmbeddingOut(
        photo_id=photo_id,
        model=embedding.model,
        dim=embedding.dim,
        vector=[float(v) for v in embedding.vector],
    )

"""Uploading photos and reading their status and embeddings."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session

from photoembed.api.deps import (
    ActiveModelDep,
    BrokerDep,
    SessionDep,
    SettingsDep,
    StorageDep,
    require_api_key,
)
from photoembed.api.schemas import EmbeddingOut, ErrorOut, PhotoOut, PhotoPatch
from photoembed.images import ImageError, ImageLimitError, inspect_image, load_rgb
from photoembed.logging import get_logger
from photoembed.metrics import STATUS_TRANSITIONS, UPLOADS
from photoembed.models import Embedding, Person, Photo, PhotoStatus, utcnow
from photoembed.queue import embed_photo_message
from photoembed.storage import PhotoStorage, TooLargeError

log = get_logger(__name__)
router = APIRouter(prefix="/photos", tags=["photos"], dependencies=[Depends(require_api_key)])

_CHUNK = 256 * 1024
THUMBNAIL_SIDE = 256


async def upload_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_CHUNK):
        yield chunk


def _photo_out(photo: Photo, model: str | None = None) -> PhotoOut:
    out = PhotoOut.model_validate(photo)
    out.model = model
    return out


def _current_embedding(
    session: SessionDep, photo_id: uuid.UUID, active_model: str | None
) -> Embedding | None:
    """The active model's vector of the photo, or its newest one if the active model is unknown."""
    query = select(Embedding).where(Embedding.photo_id == photo_id)
    if active_model is not None:
        query = query.where(Embedding.model == active_model)
    return session.scalars(query.order_by(Embedding.created_at.desc()).limit(1)).first()


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PhotoOut,
    responses={
        400: {"model": ErrorOut, "description": "empty file"},
        404: {"model": ErrorOut, "description": "unknown person_id"},
        413: {"model": ErrorOut, "description": "file larger than MAX_UPLOAD_BYTES"},
        415: {"model": ErrorOut, "description": "not a usable image"},
        422: {"model": ErrorOut, "description": "image outside the pixel limits"},
    },
)
async def upload_photo(
    file: Annotated[UploadFile, File(description="The photo: JPEG, PNG, WebP, GIF, BMP or TIFF")],
    settings: SettingsDep,
    session: SessionDep,
    broker: BrokerDep,
    storage: StorageDep,
    person_id: Annotated[uuid.UUID | None, Form()] = None,
) -> PhotoOut:
    """Store the photo, record it as PENDING, then queue it for embedding (after the commit)."""
    if person_id is not None and session.get(Person, person_id) is None:
        UPLOADS.labels("unknown_person").inc()
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"person {person_id} not found")
    try:
        staged = await storage.stage(upload_chunks(file), settings.max_upload_bytes)
    except TooLargeError as exc:
        UPLOADS.labels("too_large").inc()
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=str(exc)) from None
    try:
        if staged.size == 0:
            UPLOADS.labels("empty").inc()
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="the file is empty")
        info = await run_in_threadpool(
            inspect_image,
            staged.path,
            max_pixels=settings.max_image_pixels,
            min_side=settings.min_image_side,
        )
    except ImageError as exc:
        storage.discard(staged)
        outside_limits = isinstance(exc, ImageLimitError)
        UPLOADS.labels("outside_limits" if outside_limits else "not_an_image").inc()
        code = (
            status.HTTP_422_UNPROCESSABLE_CONTENT
            if outside_limits
            else status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
        )
        raise HTTPException(code, detail=str(exc)) from None
    except BaseException:
        storage.discard(staged)
        raise

    key = storage.commit(staged)
    photo_id = uuid.uuid4()
    message = embed_photo_message(settings, photo_id)
    photo = Photo(
        id=photo_id,
        person_id=person_id,
        status=PhotoStatus.PENDING,
        storage_key=key,
        content_hash=staged.sha256,
        content_type=info.content_type,
        size_bytes=staged.size,
        width=info.width,
        height=info.height,
        message_id=message.message_id,
        enqueued_at=utcnow(),
    )
    session.add(photo)
    session.commit()
    UPLOADS.labels("accepted").inc()
    STATUS_TRANSITIONS.labels(PhotoStatus.PENDING).inc()
    try:
        await run_in_threadpool(broker.enqueue, message)
    except RedisError as exc:
        # The row is committed; the sweeper sends the message once Redis answers again.
        log.warning("photo.enqueue_deferred", photo_id=str(photo.id), error=str(exc))
    log.info(
        "photo.uploaded",
        photo_id=str(photo.id),
        message_id=message.message_id,
        size_bytes=staged.size,
        width=info.width,
        height=info.height,
        format=info.format,
    )
    return _photo_out(photo)


@router.get("/{photo_id}", response_model=PhotoOut, responses={404: {"model": ErrorOut}})
def get_photo(photo_id: uuid.UUID, session: SessionDep, active_model: ActiveModelDep) -> PhotoOut:
    """The photo's status (PENDING, PROCESSING, READY, FAILED with `error`), quality and model."""
    photo = _get_or_404(session, photo_id)
    embedding = _current_embedding(session, photo_id, active_model)
    return _photo_out(photo, embedding.model if embedding else None)


def _get_or_404(session: SessionDep, photo_id: uuid.UUID) -> Photo:
    photo = session.get(Photo, photo_id)
    if photo is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"photo {photo_id} not found")
    return photo


def remove_photos(session: Session, storage: PhotoStorage, photos: list[Photo]) -> None:
    """Delete rows (their vectors cascade), then each file no other photo still uses."""
    keys = {photo.storage_key for photo in photos}
    for photo in photos:
        session.delete(photo)
    session.commit()
    still_used = set(session.scalars(select(Photo.storage_key).where(Photo.storage_key.in_(keys))))
    for key in keys - still_used:
        storage.remove(key)


@router.patch("/{photo_id}", response_model=PhotoOut, responses={404: {"model": ErrorOut}})
def update_photo(photo_id: uuid.UUID, change: PhotoPatch, session: SessionDep) -> PhotoOut:
    """Attach the photo to a person (or detach it with `null`)."""
    photo = _get_or_404(session, photo_id)
    if change.person_id is not None and session.get(Person, change.person_id) is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"person {change.person_id} not found"
        )
    photo.person_id = change.person_id
    session.commit()
    return _photo_out(photo)


@router.delete(
    "/{photo_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"model": ErrorOut}}
)
def delete_photo(photo_id: uuid.UUID, session: SessionDep, storage: StorageDep) -> None:
    """Delete the photo, its vectors and (unless another photo has the same bytes) its file."""
    remove_photos(session, storage, [_get_or_404(session, photo_id)])
    log.info("photo.deleted", photo_id=str(photo_id))


@router.get(
    "/{photo_id}/thumbnail",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorOut}},
)
def get_thumbnail(
    photo_id: uuid.UUID, session: SessionDep, storage: StorageDep, settings: SettingsDep
) -> FileResponse:
    """A JPEG at most 256 px on a side, made on first request and kept beside the photo."""
    photo = _get_or_404(session, photo_id)
    path = storage.thumbnail_path(photo.storage_key)
    if not path.is_file():
        try:
            image, _ = load_rgb(
                storage.read_path(photo.storage_key),
                max_pixels=settings.max_image_pixels,
                min_side=1,
                draft_side=THUMBNAIL_SIDE,
            )
        except (ImageError, FileNotFoundError) as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no thumbnail: {exc}") from None
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        image.save(partial, format="JPEG", quality=85)
        partial.replace(path)
    return FileResponse(
        path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
    )


@router.get(
    "/{photo_id}/embedding", response_model=EmbeddingOut, responses={404: {"model": ErrorOut}}
)
def get_photo_embedding(
    photo_id: uuid.UUID, session: SessionDep, active_model: ActiveModelDep
) -> EmbeddingOut:
    """The photo's L2-normalised vector and the model identity that made it; 404 until READY."""
    photo = _get_or_404(session, photo_id)
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

"""`POST /search`: photos ranked by cosine similarity to a text, an image, a photo or a person."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile, status
from fastapi.concurrency import run_in_threadpool

from photoembed.api.deps import (
    ActiveModelDep,
    SessionDep,
    SettingsDep,
    StorageDep,
    require_api_key,
)
from photoembed.api.routes.photos import upload_chunks
from photoembed.api.schemas import ErrorOut, SearchHitOut, SearchOut
from photoembed.clip.embedder import ClipEmbedder
from photoembed.clip.errors import ModelLoadError
from photoembed.images import ImageError, load_rgb
from photoembed.search import QueryVector, person_query, photo_query, search_similar
from photoembed.storage import TooLargeError

router = APIRouter(tags=["search"], dependencies=[Depends(require_api_key)])


def _query_embedder(request: Request) -> ClipEmbedder:
    """Text and image queries need the model in the API process: loaded on the first such query."""
    embedder: ClipEmbedder = request.app.state.query_embedder
    return embedder


async def _embed_query(
    embedder: ClipEmbedder,
    text: str | None,
    file: UploadFile | None,
    settings: SettingsDep,
    storage: StorageDep,
) -> QueryVector:
    try:
        loaded = await run_in_threadpool(embedder.load)
        if text is not None:
            vector = (await run_in_threadpool(embedder.embed_texts, [text]))[0]
            return QueryVector(vector.tolist(), loaded.identity)
        assert file is not None
        staged = await storage.stage(upload_chunks(file), settings.max_upload_bytes)
        try:
            image, _ = await run_in_threadpool(
                load_rgb,
                staged.path,
                max_pixels=settings.max_image_pixels,
                min_side=settings.min_image_side,
                draft_side=settings.decode_draft_side,
            )
        finally:
            storage.discard(staged)
        vector = (await run_in_threadpool(embedder.embed_images, [image]))[0]
        return QueryVector(vector.tolist(), loaded.identity)
    except ModelLoadError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    except TooLargeError as exc:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=str(exc)) from None
    except ImageError as exc:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail=str(exc)) from None


@router.post(
    "/search",
    response_model=SearchOut,
    responses={
        404: {"model": ErrorOut, "description": "unknown or not yet READY photo / person"},
        422: {"model": ErrorOut, "description": "not exactly one query"},
        503: {
            "model": ErrorOut,
            "description": "the model cannot be loaded for text/image queries",
        },
    },
)
async def search(
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    active_model: ActiveModelDep,
    embedder: Annotated[ClipEmbedder, Depends(_query_embedder)],
    text: Annotated[str | None, Form(max_length=500, examples=["a person in a red shirt"])] = None,
    photo_id: Annotated[
        uuid.UUID | None, Form(description="photos that look like this one")
    ] = None,
    person_id: Annotated[
        uuid.UUID | None, Form(description="photos that look like this person's READY photos")
    ] = None,
    file: Annotated[UploadFile | None, File(description="photos that look like this image")] = None,
    limit: Annotated[int, Form(ge=1, le=100)] = 20,
    min_quality: Annotated[float | None, Form(ge=0, le=1)] = None,
    filter_person_id: Annotated[
        uuid.UUID | None, Form(description="only this person's photos")
    ] = None,
) -> SearchOut:
    """Send exactly one of `text`, `photo_id`, `person_id` or `file` (multipart form).

    A person is searched by the normalised mean of their READY photos' vectors. Results are ranked
    by cosine similarity among vectors of the same model as the query.
    """
    given = {
        "text": text is not None and text.strip() != "",
        "photo_id": photo_id is not None,
        "person_id": person_id is not None,
        "image": file is not None and bool(file.filename),
    }
    chosen = [name for name, present in given.items() if present]
    if len(chosen) != 1:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="send exactly one of text, photo_id, person_id or file",
        )
    kind = chosen[0]
    query: QueryVector | None
    if kind == "photo_id":
        assert photo_id is not None
        query = photo_query(session, photo_id, active_model)
        if query is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                detail=f"photo {photo_id} has no vector (unknown or not READY)",
            )
    elif kind == "person_id":
        assert person_id is not None
        query = person_query(session, person_id, active_model)
        if query is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, detail=f"person {person_id} has no READY photos"
            )
    else:
        query = await _embed_query(
            embedder, text if kind == "text" else None, file, settings, storage
        )
    hits = search_similar(
        session, query, limit=limit, min_quality=min_quality, person_id=filter_person_id
    )
    session.commit()
    return SearchOut(
        query=kind,
        model=query.model,
        results=[
            SearchHitOut(
                photo_id=hit.photo_id,
                similarity=hit.similarity,
                person_id=hit.person_id,
                quality_score=hit.quality_score,
                thumbnail_url=f"/photos/{hit.photo_id}/thumbnail",
            )
            for hit in hits
        ],
    )

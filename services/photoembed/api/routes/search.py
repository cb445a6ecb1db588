"""`POST /search`: photos ranked by cosine similarity to a text, an image, a photo or a person.

A JSON body for text, photo and person queries (what API clients send), multipart for a query by
image (the page, curl -F); both take the same fields and give the same answer.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from photoembed.api.auth import Caller, ReadCaller
from photoembed.api.deps import ActiveModelDep, QueryEmbedderDep, SettingsDep, StorageDep
from photoembed.api.queries import QueryEmbedder
from photoembed.api.reads import first_found, person_known_or_404
from photoembed.api.schemas import ErrorOut, SearchHitOut, SearchOut, SearchQuery
from photoembed.api.uploads import FILE_FIELD, receive_form
from photoembed.clip.errors import ModelLoadError
from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.images import ImageError, load_rgb
from photoembed.photos import decode_limits
from photoembed.repository import person_of
from photoembed.search import (
    FaceQuery,
    QueryVector,
    ScanSettings,
    SearchHit,
    face_query,
    person_face_query,
    person_query,
    photo_query,
    search_by_face,
    search_similar,
)
from photoembed.storage import StagedFile

router = APIRouter(tags=["search"])

_FIELDS = set(SearchQuery.model_fields)
SEARCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": SearchQuery.model_json_schema(),
                "examples": {
                    "text": {"value": {"text": "a person in a red shirt", "limit": 4}},
                    "photo": {"value": {"photo_id": "0b3f6a52-4c1e-4d8e-9a51-2f6d1c7e9a10"}},
                    "person": {
                        "value": {
                            "person_id": "5d2c9e1a-7b34-4f0e-8c61-9e0a3b4d2f77",
                            "min_quality": 0.5,
                        }
                    },
                },
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        FILE_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "Photos that look like this image",
                        },
                        "text": {"type": "string", "maxLength": 500},
                        "photo_id": {"type": "string", "format": "uuid"},
                        "person_id": {"type": "string", "format": "uuid"},
                        "face_id": {"type": "string", "format": "uuid"},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                        "min_quality": {"type": "number", "minimum": 0, "maximum": 1},
                        "filter_person_id": {"type": "string", "format": "uuid"},
                    },
                },
                "examples": {"image": {"summary": "curl -F file=@me.jpg -F limit=10 .../search"}},
            },
        },
    }
}


def _invalid(exc: ValidationError) -> HTTPException:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()
    )
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=problems)


async def _read_query(
    request: Request, settings: Settings, storage: StorageDep
) -> tuple[SearchQuery, StagedFile | None]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "" and not await request.body():
        return SearchQuery(), None  # nothing sent: answered below with what a query needs
    if content_type == "application/json":
        try:
            return SearchQuery.model_validate_json(await request.body()), None
        except ValidationError as exc:
            raise _invalid(exc) from None
    if content_type == "application/x-www-form-urlencoded":
        pairs = parse_qsl((await request.body()).decode(errors="replace"), keep_blank_values=True)
        return _form_query(dict(pairs), None, storage), None
    if content_type == "multipart/form-data":
        form = await receive_form(request, storage, settings.max_upload_bytes, _FIELDS)
        return _form_query(form.fields, form.file, storage), form.file
    raise HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        detail="send a JSON body (text, photo_id or person_id) or multipart/form-data (file)",
    )


def _form_query(
    fields: dict[str, str], staged: StagedFile | None, storage: StorageDep
) -> SearchQuery:
    """Form fields as a query; blank fields count as not sent (HTML forms send them empty)."""
    given = {name: value for name, value in fields.items() if value.strip() != ""}
    try:
        return SearchQuery.model_validate(given)
    except ValidationError as exc:
        if staged is not None:
            storage.discard(staged)
        raise _invalid(exc) from None


def _embed_file(
    embedder: QueryEmbedder, settings: Settings, storage: StorageDep, staged: StagedFile
) -> QueryVector:
    try:
        image, _ = load_rgb(staged.read_bytes(), decode_limits(settings))
    finally:
        storage.discard(staged)
    return embedder.embed_image(image)


def _stored_query(
    settings: Settings, caller: Caller, kind: str, query: SearchQuery, active_model: str | None
) -> QueryVector:
    library = caller.library_id
    if kind == "photo_id":
        assert query.photo_id is not None
        photo_id = query.photo_id
        found = first_found(settings, lambda s: photo_query(s, library, photo_id, active_model))
        missing = f"photo {photo_id} has no vector (unknown or not READY)"
    else:
        assert query.person_id is not None
        person_id = query.person_id
        found = first_found(settings, lambda s: person_query(s, library, person_id, active_model))
        missing = f"person {person_id} has no READY photos"
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=missing)
    return found


def _face_query(
    settings: Settings, caller: Caller, kind: str, query: SearchQuery
) -> FaceQuery | None:
    """The faces to search by: the face asked for, or the person's faces (None: the person has
    none, and is searched by CLIP). 404 for a person or face the library does not have."""
    library = caller.library_id
    if kind == "face_id":
        assert query.face_id is not None
        face_id = query.face_id
        found = first_found(settings, lambda s: face_query(s, library, face_id))
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"face {face_id} not found")
        return found
    if kind == "person_id":
        assert query.person_id is not None
        person_id = query.person_id
        # a tuple, since a known person without faces is None inside it
        faces = first_found(
            settings,
            lambda s: (
                (person_face_query(s, library, person_id),)
                if person_of(s, library, person_id)
                else None
            ),
        )
        if faces is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"person {person_id} not found")
        return faces[0]
    return None


def _rank(
    settings: Settings, caller: Caller, vector: QueryVector | FaceQuery, query: SearchQuery
) -> list[SearchHit]:
    if query.filter_person_id is not None:
        person_known_or_404(settings, caller.library_id, query.filter_person_id)
    with session_scope(settings.read_database_url) as session:
        scan = ScanSettings.configured(settings.search_ef_search)
        if isinstance(vector, FaceQuery):
            return search_by_face(
                session,
                caller.library_id,
                vector,
                limit=query.limit,
                min_quality=query.min_quality,
                person_id=query.filter_person_id,
                scan=scan,
            )
        return search_similar(
            session,
            caller.library_id,
            vector,
            limit=query.limit,
            min_quality=query.min_quality,
            person_id=query.filter_person_id,
            scan=scan,
            query_photo=query.photo_id,
        )


@router.post(
    "/search",
    response_model=SearchOut,
    openapi_extra=SEARCH_BODY,
    responses={
        404: {"model": ErrorOut, "description": "unknown or not yet READY photo / person"},
        415: {"model": ErrorOut, "description": "neither JSON nor multipart, or not an image"},
        422: {"model": ErrorOut, "description": "not exactly one query, or a bad field"},
        503: {
            "model": ErrorOut,
            "description": "the model cannot be loaded for text/image queries",
        },
    },
)
async def search(
    request: Request,
    settings: SettingsDep,
    storage: StorageDep,
    active_model: ActiveModelDep,
    embedder: QueryEmbedderDep,
    caller: ReadCaller,
) -> SearchOut:
    """Send exactly one query: JSON `{"text": ...}`, `{"photo_id": ...}`, `{"person_id": ...}`
    or `{"face_id": ...}`, or a multipart form with the image in `file` (the same fields work as
    form fields too).

    A person with known faces is searched by face (`"by": "face"`): photos ranked by their face
    nearest to any of the person's best faces (L2 of identity vectors, `face_distance`); a person
    without faces by the normalised mean CLIP vector of their READY photos (`"by": "clip"`),
    ranked by cosine similarity among vectors of the same model. A `face_id` searches by that
    face. Only the key's library is searched, and only its photos, persons and faces can be
    named (any other id answers 404).
    """
    query, staged = await _read_query(request, settings, storage)
    chosen = query.queries(with_file=staged is not None)
    if len(chosen) != 1:
        if staged is not None:
            storage.discard(staged)
        received = " and ".join(chosen) if chosen else "none of them"
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=(
                f"send exactly one of text, photo_id, person_id, face_id or file; "
                f"received {received}"
            ),
        )
    kind = chosen[0]
    vector: QueryVector | FaceQuery | None = None
    try:
        if kind in ("person_id", "face_id"):
            vector = await run_in_threadpool(_face_query, settings, caller, kind, query)
        if vector is None and kind == "text":
            assert query.text is not None
            vector = await run_in_threadpool(embedder.embed_text, query.text)
        elif vector is None and kind == "file":
            assert staged is not None
            vector = await run_in_threadpool(_embed_file, embedder, settings, storage, staged)
        elif vector is None:
            vector = await run_in_threadpool(
                _stored_query, settings, caller, kind, query, active_model
            )
    except ModelLoadError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    except ImageError as exc:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail=str(exc)) from None
    hits = await run_in_threadpool(_rank, settings, caller, vector, query)
    return SearchOut(
        query="image" if kind == "file" else kind,
        by="face" if isinstance(vector, FaceQuery) else "clip",
        model=vector.model,
        results=[
            SearchHitOut(
                photo_id=hit.photo_id,
                similarity=hit.similarity,
                person_id=hit.person_id,
                quality_score=hit.quality_score,
                thumbnail_url=f"/photos/{hit.photo_id}/thumbnail",
                face_id=hit.face_id,
                face_distance=hit.face_distance,
            )
            for hit in hits
        ],
    )

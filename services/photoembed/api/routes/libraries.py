"""Libraries and their keys (scope `admin`), and who the calling key is (`GET /me`, any key).

An admin key of the default library (and every key of API_KEYS) is the deployment's operator: it
makes libraries and keys for any of them. An admin key of another library sees only its own
library and manages only its keys; another library's id or key answers 404, as one that does not
exist.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Request, status

from photoembed import libraries
from photoembed.api.auth import AdminCaller, AnyCaller, KeyResolver, OperatorCaller
from photoembed.api.deps import SessionDep
from photoembed.api.schemas import (
    CallerOut,
    ErrorOut,
    KeyIn,
    KeyOut,
    KeyPage,
    LibraryIn,
    LibraryOut,
    LibraryPage,
    LibraryRef,
    NewKeyOut,
)
from photoembed.logging import get_logger
from photoembed.models import Library, Scope

log = get_logger(__name__)
router = APIRouter(tags=["libraries"])


@router.get("/me", response_model=CallerOut)
def who_am_i(caller: AnyCaller) -> CallerOut:
    """The calling key's library and scopes (what the page shows and hides by)."""
    return CallerOut(
        library=LibraryRef(id=caller.library_id, name=caller.library_name),
        scopes=[scope.value for scope in Scope if scope in caller.scopes],
        key_id=caller.key_id,
        label=caller.label,
        expires_at=caller.expires_at,
    )


@router.post(
    "/libraries",
    status_code=status.HTTP_201_CREATED,
    response_model=LibraryOut,
    responses={409: {"model": ErrorOut, "description": "a library of that name exists"}},
)
def create_library(body: LibraryIn, session: SessionDep, caller: OperatorCaller) -> LibraryOut:
    """A new, empty library (an admin key of the default library). Give it keys with
    `POST /libraries/{id}/keys`."""
    try:
        library = libraries.create_library(session, body.name)
    except libraries.LibraryExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    log.info("library.created", created_library_id=str(library.id), name=library.name)
    return LibraryOut.model_validate(library)


@router.get("/libraries", response_model=LibraryPage)
def list_libraries(session: SessionDep, caller: AdminCaller) -> LibraryPage:
    """Every library for an admin key of the default library; the key's own for any other."""
    only = None if caller.is_operator else caller.library_id
    return LibraryPage(
        items=[LibraryOut.model_validate(lib) for lib in libraries.libraries(session, only)]
    )


def _library_or_404(session: SessionDep, caller: AdminCaller, library_id: uuid.UUID) -> Library:
    library = session.get(Library, library_id)
    if library is None or not caller.sees_library(library_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"library {library_id} not found")
    return library


@router.post(
    "/libraries/{library_id}/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=NewKeyOut,
    responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
def create_key(
    library_id: uuid.UUID, body: KeyIn, session: SessionDep, caller: AdminCaller
) -> NewKeyOut:
    """A new key of the library. `key`, its secret, is in this answer only: store it now (only
    its hash is kept)."""
    library = _library_or_404(session, caller, library_id)
    try:
        made = libraries.create_key(
            session,
            library.id,
            [Scope(scope) for scope in body.scopes],
            label=body.label,
            expires_at=body.expires_at,
        )
    except libraries.KeyRefused as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    key = made.key
    log.info("key.created", key_id=str(key.id), for_library_id=str(library.id), scopes=key.scopes)
    return NewKeyOut(
        id=key.id,
        key=made.secret,
        scopes=key.scopes,
        label=key.label,
        library_id=key.library_id,
        created_at=key.created_at,
        expires_at=key.expires_at,
    )


@router.get(
    "/libraries/{library_id}/keys", response_model=KeyPage, responses={404: {"model": ErrorOut}}
)
def list_keys(library_id: uuid.UUID, session: SessionDep, caller: AdminCaller) -> KeyPage:
    """The library's keys, revoked ones too (never a secret)."""
    library = _library_or_404(session, caller, library_id)
    return KeyPage(
        items=[KeyOut.model_validate(key) for key in libraries.library_keys(session, library.id)]
    )


@router.delete(
    "/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"model": ErrorOut}}
)
def revoke_key(
    key_id: uuid.UUID, request: Request, session: SessionDep, caller: AdminCaller
) -> None:
    """Revoke a key: refused by this API process at once and by every other within seconds."""
    scope = None if caller.is_operator else caller.library_id
    key = libraries.revoke_key(session, key_id, scope)
    if key is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"key {key_id} not found")
    resolver: KeyResolver = request.app.state.keys
    resolver.forget(key_id)
    log.info("key.revoked", key_id=str(key_id), for_library_id=str(key.library_id))

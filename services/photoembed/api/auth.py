"""Who is calling: a request's API key turned into its library and scopes, in this one place.

A key of API_KEYS acts on the `default` library with every scope, so deployments from before
libraries keep working; they are compared in constant time, against every one of them. Any other
key is looked up by the SHA-256 of its secret. What the database said about a key is kept
KEY_CACHE_SECONDS: a revoked or expired key is refused by every API process within that time, and
a request with a key seen a moment ago costs no query.

Routes take the caller of the scope they need (`ReadCaller`, `UploadCaller`, `ManageCaller`,
`AdminCaller`) and pass `caller.library_id` to every query. A key without the scope gets 403
naming it; whatever another library holds answers 404, exactly as an id that does not exist.
"""

from __future__ import annotations

import hmac
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import OperationalError

from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.libraries import KeyHolder, key_holder, secret_hash
from photoembed.models import DEFAULT_LIBRARY_ID, DEFAULT_LIBRARY_NAME, Scope, utcnow

KEY_CACHE_SECONDS = 4.0
KEY_CACHE_SIZE = 10_000
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class Caller:
    library_id: uuid.UUID
    library_name: str
    scopes: frozenset[Scope]
    key_id: uuid.UUID | None  # None: a key of API_KEYS
    label: str | None
    expires_at: datetime | None = None

    @property
    def is_operator(self) -> bool:
        """An admin of the default library administers every library (keys of API_KEYS are)."""
        return Scope.ADMIN in self.scopes and self.library_id == DEFAULT_LIBRARY_ID

    def sees_library(self, library_id: uuid.UUID) -> bool:
        """Whether this admin may see the library and its keys: its own, or any for an operator."""
        return self.is_operator or library_id == self.library_id


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def _database_down() -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail="cannot check the API key now: the database does not answer",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class KeyResolver:
    """The API process's view of the keys: API_KEYS, and the database's keys cached briefly."""

    def __init__(self, settings: Settings) -> None:
        self._configured = [key.encode() for key in settings.api_keys]
        self._database_url = settings.database_url
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, KeyHolder | None]] = OrderedDict()

    def is_configured(self, secret: str) -> bool:
        """Whether the secret is one of API_KEYS: compared with every one, in constant time."""
        offered = secret.encode()
        matched = False
        for key in self._configured:
            matched |= hmac.compare_digest(offered, key)
        return matched

    def cached(self, digest: str) -> tuple[bool, KeyHolder | None]:
        """(known, holder): whether the database's answer for this key is fresh, and what it was."""
        with self._lock:
            entry = self._cache.get(digest)
            if entry is None or time.monotonic() - entry[0] > KEY_CACHE_SECONDS:
                return False, None
            return True, entry[1]

    def look_up(self, secret: str) -> KeyHolder | None:
        """The database's answer for the key, kept for KEY_CACHE_SECONDS."""
        with session_scope(self._database_url) as session:
            holder = key_holder(session, secret)
        with self._lock:
            self._cache[secret_hash(secret)] = (time.monotonic(), holder)
            self._cache.move_to_end(secret_hash(secret))
            while len(self._cache) > KEY_CACHE_SIZE:
                self._cache.popitem(last=False)
        return holder

    def forget(self, key_id: uuid.UUID) -> None:
        """Drop what is cached of a key (revoked here: refused at once in this process)."""
        with self._lock:
            for digest, (_, holder) in list(self._cache.items()):
                if holder is not None and holder.key_id == key_id:
                    del self._cache[digest]


_bearer = HTTPBearer(auto_error=False, description="An API key (a library's, or one of API_KEYS)")


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The library and scopes of the request's key; 401 without a valid one."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    secret = credentials.credentials
    resolver: KeyResolver = request.app.state.keys
    try:
        if resolver.is_configured(secret):
            caller = Caller(
                library_id=DEFAULT_LIBRARY_ID,
                library_name=DEFAULT_LIBRARY_NAME,
                scopes=frozenset(Scope),
                key_id=None,
                label="API_KEYS",
            )
        else:
            known, holder = resolver.cached(secret_hash(secret))
            if not known:
                holder = await run_in_threadpool(resolver.look_up, secret)
            caller = _valid(holder)
    except OperationalError:
        raise _database_down() from None
    structlog.contextvars.bind_contextvars(library_id=str(caller.library_id))
    return caller


def _valid(holder: KeyHolder | None) -> Caller:
    if holder is None:
        raise _unauthorized("invalid API key")
    if holder.revoked_at is not None:
        raise _unauthorized("this API key was revoked")
    if holder.expires_at is not None and holder.expires_at <= utcnow():
        raise _unauthorized(f"this API key expired at {holder.expires_at.isoformat()}")
    return Caller(
        library_id=holder.library_id,
        library_name=holder.library_name,
        scopes=holder.scopes,
        key_id=holder.key_id,
        label=holder.label,
        expires_at=holder.expires_at,
    )


AnyCaller = Annotated[Caller, Depends(get_caller)]


@dataclass(frozen=True)
class RequiresScope:
    """A dependency: the caller, if its key has `scope`; 403 naming the scope otherwise. With
    `operator`, also an admin of the default library (what concerns every library: making
    libraries, the deployment's metrics). The OpenAPI schema names each route's (`x-scope`)."""

    scope: Scope
    operator: bool = False

    async def __call__(self, caller: AnyCaller) -> Caller:
        if self.scope not in caller.scopes:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"this API key lacks the '{self.scope}' scope "
                f"(it has: {', '.join(sorted(caller.scopes)) or 'none'})",
            )
        if self.operator and not caller.is_operator:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail="this needs an admin key of the 'default' library (or one of API_KEYS); "
                "an admin key of another library administers only that library's keys",
            )
        return caller

    @property
    def described(self) -> str:
        return f"{self.scope} (of the default library)" if self.operator else str(self.scope)


operator = RequiresScope(Scope.ADMIN, operator=True)
ReadCaller = Annotated[Caller, Depends(RequiresScope(Scope.READ))]
UploadCaller = Annotated[Caller, Depends(RequiresScope(Scope.UPLOAD))]
ManageCaller = Annotated[Caller, Depends(RequiresScope(Scope.MANAGE))]
AdminCaller = Annotated[Caller, Depends(RequiresScope(Scope.ADMIN))]
OperatorCaller = Annotated[Caller, Depends(operator)]


def route_scope(dependant: Dependant, extra: Sequence[Any] = ()) -> RequiresScope | None:
    """The scope a route needs, among its dependencies (and `extra`, its router's)."""
    for depends in extra:
        if isinstance(depends.dependency, RequiresScope):
            return depends.dependency
    waiting = [dependant]
    while waiting:
        dependant = waiting.pop()
        if isinstance(dependant.call, RequiresScope):
            return dependant.call
        waiting.extend(dependant.dependencies)
    return None

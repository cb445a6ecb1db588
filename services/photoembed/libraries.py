"""Libraries and their API keys, made the same way by an admin over HTTP and an operator on the
command line (`photoembed libraries|keys`).

A key's secret is `pe_` and 43 URL-safe characters (256 random bits); only its SHA-256 is stored,
and the secret is shown once, in the answer that made it. A high-entropy secret needs no slow hash:
nobody can guess one, so the stored hash gives nothing away (the practice of GitHub's and Stripe's
tokens).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from photoembed.models import ApiKey, Library, Scope, utcnow

KEY_PREFIX = "pe_"
NAME_MAX = 100


class LibraryExists(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"a library named {name!r} exists already")


class KeyRefused(ValueError):
    """A key that cannot be made as asked (no scopes, an unknown one, an expiry in the past)."""


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(names: Iterable[str]) -> list[Scope]:
    """The scopes named, each once, in the order read, upload, manage, admin."""
    wanted = {name.strip().lower() for name in names if name.strip()}
    unknown = wanted - {scope.value for scope in Scope}
    if unknown:
        raise KeyRefused(
            f"unknown scope(s) {', '.join(sorted(unknown))}: "
            f"use {', '.join(scope.value for scope in Scope)}"
        )
    if not wanted:
        raise KeyRefused(f"a key needs at least one scope: {', '.join(s.value for s in Scope)}")
    return [scope for scope in Scope if scope.value in wanted]


def check_library_name(name: str) -> str:
    """The name, trimmed; ValueError for an empty, long or unprintable one."""
    name = name.strip()
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise ValueError(f"a library's name is 1 to {NAME_MAX} printable characters")
    return name


def create_library(session: Session, name: str) -> Library:
    """A new library (committed). Names are unique whatever their case."""
    name = check_library_name(name)
    if find_library(session, name) is not None:
        raise LibraryExists(name)
    library = Library(id=uuid.uuid4(), name=name, created_at=utcnow())
    session.add(library)
    try:
        session.commit()
    except IntegrityError:  # made by someone else just now
        session.rollback()
        raise LibraryExists(name) from None
    return library


def find_library(session: Session, name_or_id: str | uuid.UUID) -> Library | None:
    """The library of this id, or of this name (any case)."""
    if isinstance(name_or_id, uuid.UUID):
        return session.get(Library, name_or_id)
    try:
        return session.get(Library, uuid.UUID(name_or_id))
    except ValueError:
        pass
    return session.scalars(
        select(Library).where(func.lower(Library.name) == name_or_id.strip().lower())
    ).one_or_none()


def libraries(session: Session, only: uuid.UUID | None = None) -> list[Library]:
    """Every library by name, or only the one of id `only`."""
    query = select(Library).order_by(func.lower(Library.name))
    if only is not None:
        query = query.where(Library.id == only)
    return list(session.scalars(query))


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    secret: str  # shown once


def create_key(
    session: Session,
    library_id: uuid.UUID,
    scopes: list[Scope],
    label: str | None = None,
    expires_at: datetime | None = None,
) -> NewKey:
    """A new key of the library (committed), and its secret."""
    if not scopes:
        raise KeyRefused("a key needs at least one scope")
    if expires_at is not None and expires_at.tzinfo is None:
        raise KeyRefused("expires_at needs a time zone (for example 2027-01-31T00:00:00Z)")
    if expires_at is not None and expires_at <= utcnow():
        raise KeyRefused(f"expires_at {expires_at.isoformat()} is in the past")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=uuid.uuid4(),
        library_id=library_id,
        label=label,
        scopes=[scope.value for scope in scopes],
        secret_hash=secret_hash(secret),
        created_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(key)
    session.commit()
    return NewKey(key, secret)


def library_keys(session: Session, library_id: uuid.UUID | None = None) -> list[ApiKey]:
    """The keys of a library (or of all), oldest first; revoked ones too, marked so."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if library_id is not None:
        query = query.where(ApiKey.library_id == library_id)
    return list(session.scalars(query))


def revoke_key(
    session: Session, key_id: uuid.UUID, library_id: uuid.UUID | None = None
) -> ApiKey | None:
    """Revoke the key (committed; revoking twice keeps the first time). With `library_id`, only a
    key of that library: None for any other, as for one that does not exist."""
    key = session.get(ApiKey, key_id)
    if key is None or (library_id is not None and key.library_id != library_id):
        return None
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.commit()
    return key


@dataclass(frozen=True)
class KeyHolder:
    """What a key stored in the database may do, and until when."""

    key_id: uuid.UUID
    label: str | None
    library_id: uuid.UUID
    library_name: str
    scopes: frozenset[Scope]
    expires_at: datetime | None
    revoked_at: datetime | None


def key_holder(session: Session, secret: str) -> KeyHolder | None:
    """The key whose secret this is (revoked and expired ones too: the caller says why it refuses
    them), or None. Marks it used, at most once a minute (the caller commits)."""
    row = session.execute(
        select(ApiKey, Library.name)
        .join(Library, Library.id == ApiKey.library_id)
        .where(ApiKey.secret_hash == secret_hash(secret))
    ).one_or_none()
    if row is None:
        return None
    key, library_name = row
    session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key.id,
            (ApiKey.last_used_at.is_(None))
            | (ApiKey.last_used_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 1)),
        )
        .values(last_used_at=func.now())
    )
    return KeyHolder(
        key_id=key.id,
        label=key.label,
        library_id=key.library_id,
        library_name=library_name,
        scopes=frozenset(Scope(scope) for scope in key.scopes),
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
    )

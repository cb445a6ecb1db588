"""The queries a photo goes through, in one place: claim, finish, fail, hand back, sweep, retry.

Every status change is conditional on the status it leaves, so that a late or repeated caller
(at-least-once delivery, two workers, the sweeper) changes nothing it should not.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, true, tuple_, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from photoembed.images import DECODE_VERSION
from photoembed.models import Embedding, Face, FacesStatus, Person, Photo, PhotoStatus

ERROR_LENGTH = 2000
IMAGE_ONLY_VERSION = 1  # quality_score of the image alone (photoembed.faces.quality)


@dataclass(frozen=True)
class Stage:
    """The columns one stage of a photo's processing is claimed with: the CLIP stage (`status`)
    and the face stage (`faces_status`) share one claim."""

    status: InstrumentedAttribute[Any]
    attempts: InstrumentedAttribute[int]
    claimed_at: InstrumentedAttribute[datetime | None]
    claimed_by: InstrumentedAttribute[str | None]


PHOTO_STAGE = Stage(Photo.status, Photo.attempts, Photo.claimed_at, Photo.claimed_by)
FACES_STAGE = Stage(
    Photo.faces_status, Photo.faces_attempts, Photo.faces_claimed_at, Photo.faces_claimed_by
)


@dataclass(frozen=True)
class ClaimedPhoto:
    id: uuid.UUID
    library_id: uuid.UUID
    storage_key: str
    attempts: int


def photo_of(session: Session, library_id: uuid.UUID, photo_id: uuid.UUID) -> Photo | None:
    """The photo if it belongs to the library; None for another library's, as for none."""
    photo = session.get(Photo, photo_id)
    return photo if photo is not None and photo.library_id == library_id else None


def person_of(session: Session, library_id: uuid.UUID, person_id: uuid.UUID) -> Person | None:
    """The person if they belong to the library; None for another library's, as for none."""
    person = session.get(Person, person_id)
    return person if person is not None and person.library_id == library_id else None


def face_of(session: Session, library_id: uuid.UUID, face_id: uuid.UUID) -> Face | None:
    """The face if it belongs to the library; None for another library's, as for none."""
    face = session.get(Face, face_id)
    return face if face is not None and face.library_id == library_id else None


def claim(
    session: Session,
    stage: Stage,
    photo_id: uuid.UUID,
    message_id: str,
    lease_seconds: int,
) -> ClaimedPhoto | None:
    """Take the photo's stage if it is PENDING, or PROCESSING under an expired lease, or
    PROCESSING under this same message (a redelivery after the worker died, or a retry whose
    release failed).

    Every claim counts as an attempt, whatever ends it, so that attempts are bounded.
    """
    claimable = or_(
        stage.status == PhotoStatus.PENDING,
        and_(
            stage.status == PhotoStatus.PROCESSING,
            or_(
                stage.claimed_by == message_id,
                stage.claimed_at < func.now() - timedelta(seconds=lease_seconds),
            ),
        ),
    )
    row = session.execute(
        update(Photo)
        .where(Photo.id == photo_id, claimable)
        .values(
            {
                stage.status: PhotoStatus.PROCESSING,
                stage.attempts: stage.attempts + 1,
                stage.claimed_at: func.now(),
                stage.claimed_by: message_id,
            }
        )
        .returning(Photo.library_id, Photo.storage_key, stage.attempts)
    ).one_or_none()
    if row is None:
        return None
    return ClaimedPhoto(id=photo_id, library_id=row[0], storage_key=row[1], attempts=row[2])


def claim_photo(
    session: Session, photo_id: uuid.UUID, message_id: str, lease_seconds: int
) -> ClaimedPhoto | None:
    """The CLIP stage's claim (see `claim`)."""
    return claim(session, PHOTO_STAGE, photo_id, message_id, lease_seconds)


def mark_ready(
    session: Session, photo_id: uuid.UUID, quality: float, faces_message_id: str | None
) -> bool:
    """READY with its (image-only) quality score, if this worker still holds it (PROCESSING);
    with `faces_message_id`, its face stage PENDING under that message (sent after the commit)."""
    faces = (
        {
            "faces_status": FacesStatus.PENDING,
            "faces_attempts": 0,
            "faces_error": None,
            "faces_message_id": faces_message_id,
            "faces_enqueued_at": func.now(),
        }
        if faces_message_id
        else {}
    )
    result = session.execute(
        update(Photo)
        .where(Photo.id == photo_id, Photo.status == PhotoStatus.PROCESSING)
        .values(
            status=PhotoStatus.READY,
            quality_score=quality,
            image_quality=quality,
            quality_version=IMAGE_ONLY_VERSION,
            error=None,
            processed_at=func.now(),
            updated_at=func.now(),
            **faces,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_failed(
    session: Session, photo_id: uuid.UUID, error: str, *, from_status: PhotoStatus
) -> bool:
    """FAILED with a readable error, if it is still in `from_status`."""
    result = session.execute(
        update(Photo)
        .where(Photo.id == photo_id, Photo.status == from_status)
        .values(
            status=PhotoStatus.FAILED,
            error=error[:ERROR_LENGTH],
            processed_at=func.now(),
            updated_at=func.now(),
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def hand_back(session: Session, photo_id: uuid.UUID, error: str) -> None:
    """PENDING again after an attempt that failed for a transient reason, so that the retry can
    claim it; the attempt stays counted and the reason stays visible until the photo finishes."""
    session.execute(
        update(Photo)
        .where(Photo.id == photo_id, Photo.status == PhotoStatus.PROCESSING)
        .values(
            status=PhotoStatus.PENDING,
            claimed_at=None,
            claimed_by=None,
            error=error[:ERROR_LENGTH],
            updated_at=func.now(),
        )
    )


def record_message(session: Session, photo_id: uuid.UUID, message_id: str) -> None:
    """The message now carrying the photo (a re-send by the sweeper or a retry)."""
    session.execute(
        update(Photo)
        .where(Photo.id == photo_id)
        .values(message_id=message_id, enqueued_at=func.now())
    )


def lost_pending(
    session: Session, grace_seconds: int, limit: int
) -> list[tuple[uuid.UUID, str | None]]:
    """PENDING photos sent longer ago than the grace period (or never sent), oldest first."""
    rows = session.execute(
        select(Photo.id, Photo.message_id)
        .where(
            Photo.status == PhotoStatus.PENDING,
            or_(
                Photo.enqueued_at.is_(None),
                Photo.enqueued_at < func.now() - timedelta(seconds=grace_seconds),
            ),
        )
        .order_by(Photo.created_at)
        .limit(limit)
    ).all()
    return [(row.id, row.message_id) for row in rows]


def expired_leases(session: Session, lease_seconds: int, limit: int) -> list[uuid.UUID]:
    """PROCESSING photos whose claim is older than the lease: their worker died."""
    return list(
        session.scalars(
            select(Photo.id)
            .where(
                Photo.status == PhotoStatus.PROCESSING,
                Photo.claimed_at < func.now() - timedelta(seconds=lease_seconds),
            )
            .order_by(Photo.claimed_at)
            .limit(limit)
        )
    )


def give_up_overdue(session: Session, give_up_after_seconds: int, limit: int) -> list[uuid.UUID]:
    """Fail photos still unfinished (PENDING or PROCESSING) this long after they were submitted,
    whatever kept them going round; the error keeps the last reason seen."""
    overdue = (
        select(Photo.id)
        .where(
            Photo.status.in_([PhotoStatus.PENDING, PhotoStatus.PROCESSING]),
            Photo.submitted_at < func.now() - timedelta(seconds=give_up_after_seconds),
        )
        .order_by(Photo.submitted_at)
        .limit(limit)
        .scalar_subquery()
    )
    reason = (
        f"gave up: not finished within {give_up_after_seconds} s of being submitted "
        f"(GIVE_UP_AFTER_SECONDS)"
    )
    last = func.coalesce(func.concat("; last error: ", Photo.error), "")
    return list(
        session.scalars(
            update(Photo)
            .where(
                Photo.id.in_(overdue),
                Photo.status.in_([PhotoStatus.PENDING, PhotoStatus.PROCESSING]),
            )
            .values(
                status=PhotoStatus.FAILED,
                error=func.left(func.concat(reason, last), ERROR_LENGTH),
                processed_at=func.now(),
                updated_at=func.now(),
            )
            .returning(Photo.id)
        )
    )


def resubmit_failed(session: Session, photo_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """FAILED photos back to PENDING for a new round of attempts (the caller enqueues after the
    commit). Returns those that were FAILED."""
    return list(
        session.scalars(
            update(Photo)
            .where(Photo.id.in_(photo_ids), Photo.status == PhotoStatus.FAILED)
            .values(
                status=PhotoStatus.PENDING,
                attempts=0,
                error=None,
                claimed_at=None,
                claimed_by=None,
                processed_at=None,
                submitted_at=func.now(),
                updated_at=func.now(),
            )
            .returning(Photo.id)
        )
    )


def failed_photos(
    session: Session, *, since: datetime | None, error_contains: str | None, limit: int
) -> list[uuid.UUID]:
    """FAILED photos, oldest first, optionally failed since a time or with a word in the error."""
    query = select(Photo.id).where(Photo.status == PhotoStatus.FAILED)
    if since is not None:
        query = query.where(Photo.processed_at >= since)
    if error_contains:
        query = query.where(Photo.error.icontains(error_contains, autoescape=True))
    return list(session.scalars(query.order_by(Photo.processed_at, Photo.id).limit(limit)))


def status_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Photo.status, func.count()).group_by(Photo.status)).all()
    counts = {status.value: 0 for status in PhotoStatus}
    counts.update({row[0]: int(row[1]) for row in rows})
    return counts


def oldest_pending_age_seconds(session: Session) -> float:
    """Seconds since the oldest PENDING photo was submitted; 0 when nothing waits."""
    age = session.execute(
        select(func.extract("epoch", func.now() - func.min(Photo.submitted_at))).where(
            Photo.status == PhotoStatus.PENDING
        )
    ).scalar_one()
    return float(age or 0.0)


def _current_vector(model: str) -> ColumnElement[bool]:
    """The photo has a vector of `model` made by today's decode (older ones are refreshed)."""
    return exists().where(
        Embedding.photo_id == Photo.id,
        Embedding.model == model,
        Embedding.decode_version >= DECODE_VERSION,
    )


def storage_key_missing_vector(session: Session, photo_id: uuid.UUID, model: str) -> str | None:
    """The photo's storage key if it exists and has no current vector of `model` yet."""
    key: str | None = session.scalars(
        select(Photo.storage_key).where(Photo.id == photo_id, ~_current_vector(model))
    ).one_or_none()
    return key


def photos_page(
    session: Session,
    library_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
    status: PhotoStatus | None = None,
    person_id: uuid.UUID | None = None,
) -> list[Photo]:
    """The library's photos, newest first, `limit` + 1 rows (the extra one says whether there is
    a next page), after a (created_at, id) keyset cursor: rows added meanwhile never shift the
    pages."""
    query = select(Photo).where(Photo.library_id == library_id)
    if status is not None:
        query = query.where(Photo.status == status)
    if person_id is not None:
        query = query.where(or_(Photo.person_id == person_id, _has_face_of(person_id)))
    if after is not None:
        query = query.where(tuple_(Photo.created_at, Photo.id) < tuple_(*after))
    query = query.order_by(Photo.created_at.desc(), Photo.id.desc()).limit(limit + 1)
    return list(session.scalars(query))


def _has_face_of(person_id: uuid.UUID) -> ColumnElement[bool]:
    return exists().where(Face.photo_id == Photo.id, Face.person_id == person_id)


def person_sort_key() -> ColumnElement[str]:
    """Persons sort by name; unnamed ones (made by the grouping) first, to be named."""
    return func.coalesce(Person.name, "")


def persons_page(
    session: Session,
    library_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[str, uuid.UUID] | None,
    name: str | None = None,
) -> list[Person]:
    """The library's persons by name, then id, `limit` + 1 rows after a (name, id) keyset cursor;
    only those of exactly `name` if given."""
    query = select(Person).where(Person.library_id == library_id)
    if name is not None:
        query = query.where(Person.name == name)
    if after is not None:
        query = query.where(tuple_(person_sort_key(), Person.id) > tuple_(*after))
    return list(session.scalars(query.order_by(person_sort_key(), Person.id).limit(limit + 1)))


@dataclass(frozen=True)
class PersonFaces:
    face_count: int
    cover_face_id: uuid.UUID | None


def person_faces(session: Session, person_ids: list[uuid.UUID]) -> dict[uuid.UUID, PersonFaces]:
    """Each person's number of faces and best-quality face."""
    if not person_ids:
        return {}
    counted = (
        select(
            Face.person_id,
            func.count().over(partition_by=Face.person_id).label("faces"),
            func.row_number()
            .over(partition_by=Face.person_id, order_by=(Face.quality.desc(), Face.id))
            .label("rank"),
            Face.id,
        )
        .where(Face.person_id.in_(person_ids))
        .subquery()
    )
    rows = session.execute(
        select(counted.c.person_id, counted.c.faces, counted.c.id).where(counted.c.rank == 1)
    ).all()
    return {row.person_id: PersonFaces(int(row.faces), row.id) for row in rows}


def _missing_vector(model: str, all_statuses: bool, skip: list[uuid.UUID]) -> ColumnElement[bool]:
    """READY photos (or all, with `all_statuses`) that have no current vector of `model`, but
    `skip`."""
    return and_(
        true() if all_statuses else Photo.status == PhotoStatus.READY,
        ~_current_vector(model),
        Photo.id.not_in(skip) if skip else true(),
    )


def count_missing_vectors(session: Session, model: str, all_statuses: bool) -> int:
    statement = (
        select(func.count()).select_from(Photo).where(_missing_vector(model, all_statuses, []))
    )
    return int(session.execute(statement).scalar_one())


def photos_missing_vectors(
    session: Session, model: str, all_statuses: bool, skip: list[uuid.UUID], limit: int
) -> list[tuple[uuid.UUID, str]]:
    """Photos without a vector of `model`, a library at a time, oldest first: (id, storage key)."""
    rows = session.execute(
        select(Photo.id, Photo.storage_key)
        .where(_missing_vector(model, all_statuses, skip))
        .order_by(Photo.library_id, Photo.created_at, Photo.id)
        .limit(limit)
    ).all()
    return [(row.id, row.storage_key) for row in rows]


MAX_HASHES_PER_CHECK = 1000


def photos_by_hash(
    session: Session, library_id: uuid.UUID, hashes: list[str]
) -> dict[str, uuid.UUID]:
    """The library's photo for each of `hashes` (SHA-256 of the bytes) that it has, whatever its
    status: the oldest one where several have the same bytes. Another library's photos are never
    counted: the answer must not tell whether anybody else has a photo."""
    rows = session.execute(
        select(Photo.content_hash, Photo.id)
        .where(Photo.library_id == library_id, Photo.content_hash.in_(hashes))
        .order_by(Photo.content_hash, Photo.created_at)
        .distinct(Photo.content_hash)
    ).all()
    return {row.content_hash: row.id for row in rows}


def backlog(session: Session) -> int:
    """Photos waiting for the CLIP stage or in it now."""
    return int(
        session.execute(
            select(func.count())
            .select_from(Photo)
            .where(Photo.status.in_([PhotoStatus.PENDING, PhotoStatus.PROCESSING]))
        ).scalar_one()
    )

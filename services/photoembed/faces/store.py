"""The face stage's queries: claim a photo's faces, store them, fail, hand back, find lost work.

The same rules as the CLIP stage (photoembed.repository): every change of `faces_status` is
conditional on the status it leaves, every claim counts as an attempt, and the faces, the DONE and
the photo's new quality score commit together, so a redelivered message never stores a face twice.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from photoembed.faces.contract import FaceModelInfo, FoundFace
from photoembed.faces.quality import QUALITY_VERSION, photo_quality
from photoembed.models import Face, FacesStatus, Photo, PhotoStatus
from photoembed.repository import ERROR_LENGTH, FACES_STAGE, ClaimedPhoto, claim


def claim_faces(
    session: Session, photo_id: uuid.UUID, message_id: str, lease_seconds: int
) -> ClaimedPhoto | None:
    """The face stage's claim, on the same rules as the CLIP stage's (`repository.claim`)."""
    return claim(session, FACES_STAGE, photo_id, message_id, lease_seconds)


def store_faces(
    session: Session,
    photo_id: uuid.UUID,
    message_id: str,
    model: FaceModelInfo,
    faces: list[FoundFace],
) -> list[Face] | None:
    """The faces and DONE, if this message still holds the photo's faces; None otherwise. The
    photo's quality score becomes version 2 (its best face's quality counted)."""
    photo = session.scalars(
        select(Photo)
        .where(
            Photo.id == photo_id,
            Photo.faces_status == FacesStatus.PROCESSING,
            Photo.faces_claimed_by == message_id,
        )
        .with_for_update()
    ).one_or_none()
    if photo is None:
        return None
    rows = [
        Face(
            id=uuid.uuid4(),
            photo_id=photo_id,
            library_id=photo.library_id,
            model=model.identity,
            detector=model.detector,
            face_index=index,
            box_x=round(face.box[0]),
            box_y=round(face.box[1]),
            box_w=round(face.box[2]),
            box_h=round(face.box[3]),
            landmarks=[[round(x, 1), round(y, 1)] for x, y in face.landmarks],
            score=round(face.score, 4),
            quality=face.quality,
            dim=len(face.vector),
            vector=face.vector.tolist(),
        )
        for index, face in enumerate(faces)
    ]
    session.add_all(rows)
    best = max((face.quality for face in faces), default=None)
    photo.faces_status = FacesStatus.DONE
    photo.faces_error = None
    photo.face_count = len(rows)
    photo.faces_claimed_at = None
    photo.faces_claimed_by = None
    if photo.image_quality is not None:
        photo.quality_score = photo_quality(photo.image_quality, best)
        photo.quality_version = QUALITY_VERSION
    session.flush()
    return rows


def fail_faces(session: Session, photo_id: uuid.UUID, error: str) -> bool:
    result = session.execute(
        update(Photo)
        .where(Photo.id == photo_id, Photo.faces_status == FacesStatus.PROCESSING)
        .values(
            faces_status=FacesStatus.FAILED,
            faces_error=error[:ERROR_LENGTH],
            faces_claimed_at=None,
            faces_claimed_by=None,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def hand_back_faces(session: Session, photo_id: uuid.UUID, error: str) -> None:
    session.execute(
        update(Photo)
        .where(Photo.id == photo_id, Photo.faces_status == FacesStatus.PROCESSING)
        .values(
            faces_status=FacesStatus.PENDING,
            faces_error=error[:ERROR_LENGTH],
            faces_claimed_at=None,
            faces_claimed_by=None,
        )
    )


def _without_faces() -> ColumnElement[bool]:
    """READY photos whose face stage never ran (uploaded before it, or with faces off) or FAILED."""
    return and_(
        Photo.status == PhotoStatus.READY,
        or_(Photo.faces_status.is_(None), Photo.faces_status == FacesStatus.FAILED),
    )


def request_faces(session: Session, photo_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """PENDING for the face stage (a fresh round of attempts) for those of `photo_ids` without
    faces. The caller sends them after the commit."""
    return list(
        session.scalars(
            update(Photo)
            .where(Photo.id.in_(photo_ids), _without_faces())
            .values(faces_status=FacesStatus.PENDING, faces_attempts=0, faces_error=None)
            .returning(Photo.id)
        )
    )


def record_faces_message(session: Session, photo_id: uuid.UUID, message_id: str) -> None:
    session.execute(
        update(Photo)
        .where(Photo.id == photo_id)
        .values(faces_message_id=message_id, faces_enqueued_at=func.now())
    )


def count_photos_without_faces(session: Session) -> int:
    return int(
        session.execute(
            select(func.count()).select_from(Photo).where(_without_faces())
        ).scalar_one()
    )


def photos_without_faces(session: Session, limit: int, after: uuid.UUID | None) -> list[uuid.UUID]:
    """READY photos without faces, by id (a resumable walk)."""
    query = select(Photo.id).where(_without_faces())
    if after is not None:
        query = query.where(Photo.id > after)
    return list(session.scalars(query.order_by(Photo.id).limit(limit)))


def lost_faces(
    session: Session, grace_seconds: int, lease_seconds: int, limit: int
) -> list[tuple[uuid.UUID, str | None]]:
    """Face work whose message may be gone: PENDING sent longer ago than the grace period (or
    never sent), and PROCESSING past its lease (message id None: re-send whatever Redis holds)."""
    rows = session.execute(
        select(Photo.id, Photo.faces_message_id, Photo.faces_status)
        .where(
            or_(
                and_(
                    Photo.faces_status == FacesStatus.PENDING,
                    or_(
                        Photo.faces_enqueued_at.is_(None),
                        Photo.faces_enqueued_at < func.now() - timedelta(seconds=grace_seconds),
                    ),
                ),
                and_(
                    Photo.faces_status == FacesStatus.PROCESSING,
                    Photo.faces_claimed_at < func.now() - timedelta(seconds=lease_seconds),
                ),
            )
        )
        .order_by(Photo.created_at)
        .limit(limit)
    ).all()
    return [
        (row.id, row.faces_message_id if row.faces_status == FacesStatus.PENDING else None)
        for row in rows
    ]


def oldest_faces_pending_age_seconds(session: Session) -> float:
    """Seconds since the oldest PENDING face stage was sent; 0 when none waits."""
    age = session.execute(
        select(func.extract("epoch", func.now() - func.min(Photo.faces_enqueued_at))).where(
            Photo.faces_status == FacesStatus.PENDING
        )
    ).scalar_one()
    return float(age or 0.0)

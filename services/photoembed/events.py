"""Events: what a library's customers are told (a photo READY, FAILED or deleted, its faces done,
a person renamed, merged or deleted), written in the transaction that makes the change: a
transactional outbox. A crash at any point loses none: the change and its event commit together.

Readers see them in one order. A transaction takes its place in the outbox when it commits, not
when it began, so `position` is given after the commit, by `sequence`: one sequencer at a time
(an advisory lock) numbers the events it can see, after the highest number given so far. A reader
that has seen position n can never later find an event numbered below n appear: a stream resumed
after n (`Last-Event-ID`) misses nothing and repeats nothing. The API's stream and the webhooks'
pump both call it; whoever comes first numbers.

An event's body is what a webhook receives and what the stream sends: `{"id", "type",
"library_id", "occurred_at", "data"}`, `data` small (ids and statuses: never image bytes, never
vectors).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from photoembed.models import Event, EventType

SEQUENCE_LOCK = "hashtext('photoembed:events')"
SEQUENCE_BATCH = 10_000


def record(
    session: Session, library_id: uuid.UUID, event_type: EventType, data: dict[str, Any]
) -> uuid.UUID:
    """An event of the library, in the caller's transaction."""
    event_id = uuid.uuid4()
    session.execute(
        text(
            "INSERT INTO events (id, library_id, type, data) "
            "VALUES (:id, :library, :type, CAST(:data AS jsonb))"
        ),
        {"id": event_id, "library": library_id, "type": event_type.value, "data": json.dumps(data)},
    )
    return event_id


def record_for_photos(
    session: Session,
    event_type: EventType,
    photo_ids: Sequence[uuid.UUID],
    extra: dict[str, Any] | None = None,
) -> None:
    """An event for each photo, in the caller's transaction, its data read from the photo's row as
    it is now: `photo_id`, `status`, `quality_score`, `error`, `faces_status`, `face_count`,
    `faces_error`, `person_id` (those not null), and `extra`."""
    if not photo_ids:
        return
    session.execute(
        text(
            """
            INSERT INTO events (id, library_id, type, data)
            SELECT gen_random_uuid(), library_id, :type,
                   jsonb_strip_nulls(jsonb_build_object(
                       'photo_id', id, 'status', status, 'quality_score', quality_score,
                       'error', error, 'faces_status', faces_status, 'face_count', face_count,
                       'faces_error', faces_error, 'person_id', person_id))
                   || CAST(:extra AS jsonb)
              FROM photos WHERE id = ANY(:ids)
            """
        ),
        {"type": event_type.value, "ids": list(photo_ids), "extra": json.dumps(extra or {})},
    )


def sequence(session: Session, *, wait: bool = True) -> int:
    """Number the committed events that have no position yet, in the caller's transaction (commit
    it at once: the numbers are seen when it commits, and the lock is held until then). Without
    `wait`, gives up at once if another sequencer is at it. Returns how many were numbered."""
    take = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
    got = session.execute(text(f"SELECT {take}({SEQUENCE_LOCK})")).scalar()
    if got is False:
        return 0
    numbered = session.execute(
        text(
            """
            WITH todo AS (
                SELECT id, row_number() OVER (ORDER BY occurred_at, id) AS n
                  FROM events WHERE position IS NULL
                 ORDER BY occurred_at, id LIMIT :batch),
                 top AS (SELECT coalesce(max(position), 0) AS position FROM events)
            UPDATE events e SET position = top.position + todo.n
              FROM todo, top WHERE e.id = todo.id
            """
        ),
        {"batch": SEQUENCE_BATCH},
    )
    return int(numbered.rowcount)  # type: ignore[attr-defined]


def body(event: Event) -> dict[str, Any]:
    """What a webhook receives and the stream sends."""
    return {
        "id": str(event.id),
        "type": event.type,
        "library_id": str(event.library_id),
        "occurred_at": event.occurred_at.isoformat(),
        "data": event.data,
    }


def after(session: Session, library_id: uuid.UUID, position: int, limit: int = 500) -> list[Event]:
    """The library's events numbered after `position`, in order."""
    return list(
        session.scalars(
            select(Event)
            .where(
                Event.library_id == library_id,
                Event.position > position,
            )
            .order_by(Event.position)
            .limit(limit)
        )
    )


def last_position(session: Session, library_id: uuid.UUID) -> int:
    """The library's newest numbered event's position (0 when none)."""
    found = session.scalar(
        select(Event.position)
        .where(Event.library_id == library_id, Event.position.is_not(None))
        .order_by(Event.position.desc())
        .limit(1)
    )
    return int(found or 0)


def position_of(session: Session, library_id: uuid.UUID, event_id: uuid.UUID) -> int | None:
    """The position of the library's event, None if unknown (pruned, another library's, or not
    yet numbered)."""
    found = session.scalar(
        select(Event.position).where(Event.id == event_id, Event.library_id == library_id)
    )
    return int(found) if found is not None else None


def first_position(session: Session, library_id: uuid.UUID, since: datetime) -> int:
    """The position just before the library's first event at or after `since`."""
    found = session.scalar(
        select(Event.position)
        .where(
            Event.library_id == library_id,
            Event.occurred_at >= since,
            Event.position.is_not(None),
        )
        .order_by(Event.position)
        .limit(1)
    )
    return int(found) - 1 if found is not None else last_position(session, library_id)


def prune(session: Session, retention_days: int, batch: int = 10_000) -> int:
    """Delete events older than the retention (their deliveries go with them); one batch."""
    result = session.execute(
        text(
            "DELETE FROM events WHERE id IN (SELECT id FROM events "
            "WHERE occurred_at < now() - make_interval(days => :days) LIMIT :batch)"
        ),
        {"days": retention_days, "batch": batch},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class OutboxFigures:
    """What the API's metrics say of the outbox and the webhooks."""

    events: int
    oldest_undelivered_s: float
    webhooks: dict[str, int]


def outbox_figures(session: Session) -> OutboxFigures:
    """The events kept; the age of the oldest event an enabled endpoint wants and has not had
    yet (not yet handed over by the pump, or a delivery waiting or being sent); the endpoints
    by state (active, failing, disabled)."""
    count = session.execute(text("SELECT count(*) FROM events")).scalar_one()
    oldest = session.execute(
        text(
            """
            SELECT extract(epoch FROM now() - least(
                (SELECT min(e.occurred_at) FROM webhook_deliveries d
                   JOIN events e ON e.id = d.event_id
                   JOIN webhooks w ON w.id = d.webhook_id AND w.disabled_at IS NULL
                  WHERE d.status IN ('PENDING', 'SENDING')),
                (SELECT min(e.occurred_at) FROM events e
                   JOIN webhooks w ON w.library_id = e.library_id AND e.type = ANY(w.events)
                    AND w.disabled_at IS NULL
                  WHERE e.position IS NULL OR e.position > coalesce(
                        (SELECT position FROM event_cursors WHERE name = 'webhooks'), 0))))
            """
        )
    ).scalar_one()
    states = {"active": 0, "failing": 0, "disabled": 0}
    for state, number in session.execute(
        text(
            "SELECT CASE WHEN disabled_at IS NOT NULL THEN 'disabled' "
            "WHEN failing_since IS NOT NULL THEN 'failing' ELSE 'active' END, count(*) "
            "FROM webhooks GROUP BY 1"
        )
    ):
        states[state] = int(number)
    return OutboxFigures(int(count), float(oldest or 0.0), states)

"""A library's webhook endpoints: made, listed, deleted, their deliveries read, events replayed.
The API's routes call these; they commit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from photoembed import events
from photoembed.config import Settings
from photoembed.models import Event, EventType, Webhook, WebhookDelivery, utcnow
from photoembed.webhooks import addresses, secrets


class UnknownEvent(LookupError):
    def __init__(self, event_id: uuid.UUID) -> None:
        super().__init__(f"event {event_id} not found (unknown, pruned, or another library's)")


def event_types(names: list[str]) -> list[str]:
    """The event types asked for, each once, in the order they are listed; ValueError names an
    unknown one."""
    known = [kind.value for kind in EventType]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown event type(s) {', '.join(unknown)}: use {', '.join(known)}")
    if not names:
        raise ValueError(f"name at least one event type: {', '.join(known)}")
    return [kind for kind in known if kind in names]


@dataclass(frozen=True)
class NewWebhook:
    webhook: Webhook
    secret: str  # shown once


def create(
    session: Session, settings: Settings, library_id: uuid.UUID, url: str, wanted: list[str]
) -> NewWebhook:
    """A new endpoint of the library (committed). Raises addresses.AddressRefused for a URL that
    may not be called, secrets.EncryptionUnavailable without ENCRYPTION_KEY."""
    addresses.check(url, settings.webhook_allow_private)
    secret = secrets.new_secret()
    webhook = Webhook(
        id=uuid.uuid4(),
        library_id=library_id,
        url=url,
        events=event_types(wanted),
        secret_encrypted=secrets.encrypt(settings, secret),
        created_at=utcnow(),
    )
    session.add(webhook)
    session.commit()
    return NewWebhook(webhook, secret)


def of_library(session: Session, library_id: uuid.UUID, webhook_id: uuid.UUID) -> Webhook | None:
    """The library's endpoint; None for another library's, as for none."""
    webhook = session.get(Webhook, webhook_id)
    return webhook if webhook is not None and webhook.library_id == library_id else None


def listed(session: Session, library_id: uuid.UUID) -> list[Webhook]:
    return list(
        session.scalars(
            select(Webhook)
            .where(Webhook.library_id == library_id)
            .order_by(Webhook.created_at, Webhook.id)
        )
    )


def delete(session: Session, webhook: Webhook) -> None:
    """The endpoint and its deliveries (committed): nothing more is sent to it."""
    session.delete(webhook)
    session.commit()


def deliveries(
    session: Session, webhook: Webhook, limit: int, before: tuple[datetime, uuid.UUID] | None
) -> list[tuple[WebhookDelivery, str]]:
    """The endpoint's deliveries, newest first, `limit` + 1 of them after a keyset cursor, each
    with its event's type."""
    query = (
        select(WebhookDelivery, Event.type)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.webhook_id == webhook.id)
    )
    if before is not None:
        query = query.where(
            (WebhookDelivery.created_at, WebhookDelivery.id) < before  # type: ignore[operator]
        )
    query = query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
    return [(row[0], row[1]) for row in session.execute(query.limit(limit + 1))]


def replay(session: Session, webhook: Webhook, since: datetime | uuid.UUID) -> int:
    """Send the library's events of the endpoint's types again, from `since` (a time: the events
    at or after it; an event id: the events after it), each under its own webhook-id as the first
    time; a disabled endpoint is enabled again. Returns how many events are queued (committed)."""
    events.sequence(session)
    if isinstance(since, uuid.UUID):
        position = events.position_of(session, webhook.library_id, since)
        if position is None:
            raise UnknownEvent(since)
    else:
        position = events.first_position(session, webhook.library_id, since)
    queued = session.execute(
        text(
            """
            INSERT INTO webhook_deliveries (id, webhook_id, event_id, status, next_attempt_at)
            SELECT gen_random_uuid(), :webhook, e.id, 'PENDING', now()
              FROM events e
             WHERE e.library_id = :library AND e.position > :position
               AND e.type = ANY(:types)
            ON CONFLICT (webhook_id, event_id) DO UPDATE
               SET status = 'PENDING', next_attempt_at = now(), attempts = 0,
                   first_attempt_at = NULL, claimed_at = NULL, delivered_at = NULL
            """
        ),
        {
            "webhook": webhook.id,
            "library": webhook.library_id,
            "position": position,
            "types": list(webhook.events),
        },
    ).rowcount  # type: ignore[attr-defined]
    session.execute(
        update(Webhook)
        .where(Webhook.id == webhook.id)
        .values(disabled_at=None, disabled_reason=None, failing_since=None)
    )
    session.commit()
    return int(queued)


def described(webhook: Webhook) -> dict[str, Any]:
    """An endpoint as listed: never its secret."""
    return {
        "id": webhook.id,
        "url": webhook.url,
        "events": list(webhook.events),
        "created_at": webhook.created_at,
        "failing_since": webhook.failing_since,
        "disabled_at": webhook.disabled_at,
        "disabled_reason": webhook.disabled_reason,
    }

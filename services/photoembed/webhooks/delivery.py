"""One send of one event to one endpoint, and what its answer means.

Every send of an event carries the same `webhook-id` (the event's id) and the same body, signed
anew with the time of the send. A 2xx ends it. 410 Gone disables the endpoint (the receiver asked
to stop). Anything else (another status, a timeout, a refused connection, an answer too slow or too
large) is retried after BACKOFF_SECONDS (the first within 10 s, then up to an hour apart), until the
delivery has been tried for WEBHOOK_RETRY_HOURS; an endpoint that has failed every send for
WEBHOOK_DISABLE_AFTER_HOURS is disabled (the alert PhotoembedWebhookDisabled reads it). Redirects
are not followed, and an answer is read for at most WEBHOOK_TIMEOUT_SECONDS and
WEBHOOK_MAX_RESPONSE_BYTES.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from photoembed import events
from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.logging import get_logger
from photoembed.metrics import WEBHOOK_DELIVERIES
from photoembed.models import DeliveryStatus, Event, Webhook, WebhookDelivery, utcnow
from photoembed.webhooks import addresses, secrets, signing

log = get_logger(__name__)

BACKOFF_SECONDS = (5, 30, 120, 600, 1800, 3600)  # then every hour
ERROR_LENGTH = 500


def backoff(attempts: int) -> int:
    """Seconds before the next try, after `attempts` failed ones."""
    return BACKOFF_SECONDS[min(max(attempts, 1), len(BACKOFF_SECONDS)) - 1]


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300 and not self.error


_client: httpx.Client | None = None
_client_lock = threading.Lock()


def client(settings: Settings) -> httpx.Client:
    """The process's one HTTP client (making one costs ~15 ms of CPU: its TLS context). No
    connection is kept for reuse: a pooled connection is keyed by the address it went to, and a
    name sharing that address must not get a TLS session made for another name."""
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(
                timeout=settings.webhook_timeout_seconds,
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        return _client


def encoded(event: Event) -> bytes:
    """The body: the same bytes at every send of the event."""
    return json.dumps(events.body(event), separators=(",", ":")).encode()


def post(settings: Settings, url: str, secret: str, event: Event) -> Answer:
    """Sign and POST the event to `url`, at an address checked now; never raises."""
    try:
        target = addresses.check(url, settings.webhook_allow_private)
    except addresses.AddressRefused as exc:
        return Answer(None, f"not sent: {exc}")
    body = encoded(event)
    sent_headers = signing.headers(secret, str(event.id), int(time.time()), body)
    limit = settings.webhook_timeout_seconds
    deadline = time.monotonic() + limit
    try:
        with client(settings).stream(
            "POST",
            target.connect_url(),
            content=body,
            headers={**sent_headers, "host": target.host_header},
            timeout=limit,
            extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
        ) as response:
            read = 0
            for chunk in response.iter_raw():
                read += len(chunk)
                if read > settings.webhook_max_response_bytes:
                    return Answer(response.status_code, "answer larger than the limit, cut off")
                if time.monotonic() > deadline:
                    return Answer(response.status_code, f"answer slower than {limit:g} s, cut off")
            return Answer(response.status_code, None)
    except httpx.TimeoutException:
        return Answer(None, f"no answer within {limit:g} s")
    except httpx.HTTPError as exc:
        return Answer(None, f"{type(exc).__name__}: {exc}"[:ERROR_LENGTH])


def deliver(settings: Settings, delivery_id: uuid.UUID) -> str:
    """Send one delivery the pump handed over (SENDING), and record what came of it. Returns the
    outcome: delivered, retrying, gone (410), gave_up, or skipped (not SENDING any more)."""
    with session_scope(settings.database_url) as session:
        row = session.execute(
            select(WebhookDelivery, Webhook, Event)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .join(Event, Event.id == WebhookDelivery.event_id)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == DeliveryStatus.SENDING,
            )
        ).one_or_none()
        if row is None:
            return "skipped"
        delivery, webhook, event = row
        session.expunge_all()
    if webhook.disabled_at is not None:
        with session_scope(settings.database_url) as session:
            _set(session, delivery.id, status=DeliveryStatus.PENDING, claimed_at=None)
        return "skipped"
    try:
        secret = secrets.decrypt(settings, webhook.secret_encrypted)
    except secrets.EncryptionUnavailable as exc:
        log.error("webhook.secret_unavailable", webhook_id=str(webhook.id), error=str(exc))
        answer = Answer(None, f"not sent: {exc}")
    else:
        answer = post(settings, webhook.url, secret, event)
    with session_scope(settings.database_url) as session:
        outcome = _record(session, settings, delivery, webhook, answer)
    WEBHOOK_DELIVERIES.labels(outcome).inc()
    log.info(
        "webhook.sent",
        webhook_id=str(webhook.id),
        event_id=str(event.id),
        event_type=event.type,
        library_id=str(event.library_id),
        attempt=delivery.attempts + 1,
        status_code=answer.status_code,
        error=answer.error,
        outcome=outcome,
    )
    return outcome


def _set(session: Session, delivery_id: uuid.UUID, **values: object) -> None:
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(values))


def _record(
    session: Session,
    settings: Settings,
    delivery: WebhookDelivery,
    webhook: Webhook,
    answer: Answer,
) -> str:
    now = utcnow()
    first = delivery.first_attempt_at or now
    attempt = {
        "attempts": delivery.attempts + 1,
        "first_attempt_at": first,
        "last_attempt_at": now,
        "last_status_code": answer.status_code,
        "last_error": answer.error,
        "claimed_at": None,
    }
    if answer.delivered:
        _set(session, delivery.id, status=DeliveryStatus.DELIVERED, delivered_at=now, **attempt)
        # only when it was failing: every delivery of an endpoint updating its row would queue
        # the sends behind one row lock
        session.execute(
            update(Webhook)
            .where(Webhook.id == webhook.id, Webhook.failing_since.is_not(None))
            .values(failing_since=None)
        )
        return "delivered"
    if answer.status_code == 410:
        _set(session, delivery.id, status=DeliveryStatus.FAILED, **attempt)
        _disable(session, webhook, "the receiver answered 410 Gone")
        return "gone"
    if now - first >= timedelta(hours=settings.webhook_retry_hours):
        _set(session, delivery.id, status=DeliveryStatus.FAILED, **attempt)
        outcome = "gave_up"
    else:
        next_at = now + timedelta(seconds=backoff(delivery.attempts + 1))
        _set(
            session, delivery.id, status=DeliveryStatus.PENDING, next_attempt_at=next_at, **attempt
        )
        outcome = "retrying"
    failing_since = webhook.failing_since or now
    if now - failing_since >= timedelta(hours=settings.webhook_disable_after_hours):
        said = f"status {answer.status_code}" if answer.status_code else answer.error
        _disable(
            session,
            webhook,
            f"every send failed for {settings.webhook_disable_after_hours} hours (last: {said})",
        )
    else:
        session.execute(
            update(Webhook)
            .where(Webhook.id == webhook.id, Webhook.failing_since.is_(None))
            .values(failing_since=now)
        )
    return outcome


def _disable(session: Session, webhook: Webhook, reason: str) -> None:
    session.execute(
        update(Webhook)
        .where(Webhook.id == webhook.id, Webhook.disabled_at.is_(None))
        .values(disabled_at=utcnow(), disabled_reason=reason[:ERROR_LENGTH])
    )
    log.error("webhook.disabled", webhook_id=str(webhook.id), reason=reason)

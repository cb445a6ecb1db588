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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

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
# A lot handed over together stops sending after this long (the pump takes a claim back after
# pump.CLAIM_LEASE_S, 30 s): what is left goes back, unsent.
SEND_BUDGET_S = 15


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


@dataclass(frozen=True)
class Sent:
    """One send of a lot: what was sent where, what came back, and when."""

    delivery: WebhookDelivery
    webhook: Webhook
    event: Event
    answer: Answer
    at: datetime


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


def deliver(settings: Settings, delivery_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Send the deliveries the pump handed over together (SENDING, of one endpoint), one after
    the other in the order of their events, and record what came of them in one transaction.
    Returns each one's outcome: delivered, retrying, gone (410), gave_up, or skipped (not
    SENDING any more, its endpoint disabled, or handed back unsent: sending the whole lot would
    outlast the claim, and the pump would hand them over again)."""
    with session_scope(settings.database_url) as session:
        rows = session.execute(
            select(WebhookDelivery, Webhook, Event)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .join(Event, Event.id == WebhookDelivery.event_id)
            .where(
                WebhookDelivery.id.in_(delivery_ids),
                WebhookDelivery.status == DeliveryStatus.SENDING,
            )
            .order_by(Event.position)
        ).all()
        session.expunge_all()
    outcomes = dict.fromkeys(delivery_ids, "skipped")
    sent: list[Sent] = []
    handed_back: list[uuid.UUID] = []
    gone: set[uuid.UUID] = set()  # endpoints that answered 410 in this lot
    stop_sending_at = time.monotonic() + SEND_BUDGET_S
    for delivery, webhook, event in rows:
        if webhook.disabled_at or webhook.id in gone or time.monotonic() > stop_sending_at:
            handed_back.append(delivery.id)
            continue
        answer = _send(settings, webhook, event)
        sent.append(Sent(delivery, webhook, event, answer, utcnow()))
        if answer.status_code == 410:
            gone.add(webhook.id)
    attempts = []
    for send in sent:
        values, outcomes[send.delivery.id] = _attempt(settings, send)
        attempts.append(values)
    last_sends = {send.webhook.id: send for send in sent}
    with session_scope(settings.database_url) as session:
        if handed_back:
            _hand_back(session, handed_back)
        if attempts:
            session.execute(update(WebhookDelivery), attempts)
        for last in last_sends.values():
            _update_endpoint(session, settings, last)
    for send in sent:
        outcome = outcomes[send.delivery.id]
        WEBHOOK_DELIVERIES.labels(outcome).inc()
        log.info(
            "webhook.sent",
            webhook_id=str(send.webhook.id),
            event_id=str(send.event.id),
            event_type=send.event.type,
            library_id=str(send.event.library_id),
            attempt=send.delivery.attempts + 1,
            status_code=send.answer.status_code,
            error=send.answer.error,
            outcome=outcome,
        )
    return outcomes


def _send(settings: Settings, webhook: Webhook, event: Event) -> Answer:
    try:
        secret = secrets.decrypt(settings, webhook.secret_encrypted)
    except secrets.EncryptionUnavailable as exc:
        log.error("webhook.secret_unavailable", webhook_id=str(webhook.id), error=str(exc))
        return Answer(None, f"not sent: {exc}")
    return post(settings, webhook.url, secret, event)


def _hand_back(session: Session, delivery_ids: list[uuid.UUID]) -> None:
    """Unsent: due again now, no attempt counted (the pump hands them over at its next round,
    or once their endpoint is enabled again)."""
    session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id.in_(delivery_ids),
            WebhookDelivery.status == DeliveryStatus.SENDING,
        )
        .values(status=DeliveryStatus.PENDING, claimed_at=None, next_attempt_at=utcnow())
    )


def _attempt(settings: Settings, send: Sent) -> tuple[dict[str, object], str]:
    """The delivery's row after this send (every column named, for one bulk UPDATE), and the
    outcome."""
    delivery, answer, now = send.delivery, send.answer, send.at
    first = delivery.first_attempt_at or now
    values: dict[str, object] = {
        "id": delivery.id,
        "attempts": delivery.attempts + 1,
        "first_attempt_at": first,
        "last_attempt_at": now,
        "last_status_code": answer.status_code,
        "last_error": answer.error,
        "claimed_at": None,
        "delivered_at": None,
        "next_attempt_at": delivery.next_attempt_at,
    }
    if answer.delivered:
        return {**values, "status": DeliveryStatus.DELIVERED, "delivered_at": now}, "delivered"
    if answer.status_code == 410:
        return {**values, "status": DeliveryStatus.FAILED}, "gone"
    if now - first >= timedelta(hours=settings.webhook_retry_hours):
        return {**values, "status": DeliveryStatus.FAILED}, "gave_up"
    next_at = now + timedelta(seconds=backoff(delivery.attempts + 1))
    return {**values, "status": DeliveryStatus.PENDING, "next_attempt_at": next_at}, "retrying"


def _update_endpoint(session: Session, settings: Settings, last_send: Sent) -> None:
    """After a lot of sends to one endpoint, by the last answer: 410 disables it; a success
    ends its failing; a failure starts it, or disables the endpoint failing for too long.
    Its row is written only when that changes something (every lot updating it would queue the
    sends behind one row lock)."""
    webhook, last, now = last_send.webhook, last_send.answer, last_send.at
    if last.status_code == 410:
        _disable(session, webhook, "the receiver answered 410 Gone")
    elif last.delivered:
        session.execute(
            update(Webhook)
            .where(Webhook.id == webhook.id, Webhook.failing_since.is_not(None))
            .values(failing_since=None)
        )
    elif now - (webhook.failing_since or now) >= timedelta(
        hours=settings.webhook_disable_after_hours
    ):
        said = f"status {last.status_code}" if last.status_code else last.error
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


def _disable(session: Session, webhook: Webhook, reason: str) -> None:
    session.execute(
        update(Webhook)
        .where(Webhook.id == webhook.id, Webhook.disabled_at.is_(None))
        .values(disabled_at=utcnow(), disabled_reason=reason[:ERROR_LENGTH])
    )
    log.error("webhook.disabled", webhook_id=str(webhook.id), reason=reason)

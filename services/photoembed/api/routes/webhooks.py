"""A library's webhook endpoints (scope `manage`): make one (its secret shown once), list them,
delete one, read its deliveries, replay events to it. Sending is the worker's (`webhooks`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, status

from photoembed.api.auth import ManageCaller
from photoembed.api.deps import SessionDep, SettingsDep
from photoembed.api.pagination import CursorQuery, LimitQuery, encode_cursor, time_cursor
from photoembed.api.schemas import (
    DeliveryOut,
    DeliveryPage,
    ErrorOut,
    ReplayIn,
    ReplayOut,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WebhookPage,
)
from photoembed.logging import get_logger
from photoembed.models import Webhook
from photoembed.webhooks import endpoints
from photoembed.webhooks.addresses import AddressRefused
from photoembed.webhooks.secrets import EncryptionUnavailable

log = get_logger(__name__)
router = APIRouter(prefix="/webhooks", tags=["webhooks"])


def _webhook_or_404(session: SessionDep, caller: ManageCaller, webhook_id: uuid.UUID) -> Webhook:
    webhook = endpoints.of_library(session, caller.library_id, webhook_id)
    if webhook is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"webhook {webhook_id} not found")
    return webhook


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    responses={
        422: {"model": ErrorOut, "description": "a URL that may not be called, unknown events"},
        503: {"model": ErrorOut, "description": "ENCRYPTION_KEY is not set"},
    },
)
def create_webhook(
    body: WebhookIn, session: SessionDep, settings: SettingsDep, caller: ManageCaller
) -> WebhookCreated:
    """Send the library's events of these types to `url`, signed (Standard Webhooks) with the
    `secret` of this answer, which is not shown again. The URL must resolve to public addresses
    only (an operator may allow others: WEBHOOK_ALLOW_PRIVATE)."""
    try:
        made = endpoints.create(session, settings, caller.library_id, body.url, body.events)
    except AddressRefused as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    except EncryptionUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    log.info("webhook.created", webhook_id=str(made.webhook.id), events=made.webhook.events)
    return WebhookCreated(**endpoints.described(made.webhook), secret=made.secret)


@router.get("", response_model=WebhookPage)
def list_webhooks(session: SessionDep, caller: ManageCaller) -> WebhookPage:
    """The library's endpoints (never their secrets), whether they are failing or disabled."""
    return WebhookPage(
        items=[
            WebhookOut(**endpoints.described(webhook))
            for webhook in endpoints.listed(session, caller.library_id)
        ]
    )


@router.delete(
    "/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"model": ErrorOut}}
)
def delete_webhook(webhook_id: uuid.UUID, session: SessionDep, caller: ManageCaller) -> None:
    """The endpoint and its deliveries: nothing more is sent to it."""
    endpoints.delete(session, _webhook_or_404(session, caller, webhook_id))
    log.info("webhook.deleted", webhook_id=str(webhook_id))


@router.get(
    "/{webhook_id}/deliveries", response_model=DeliveryPage, responses={404: {"model": ErrorOut}}
)
def list_deliveries(
    webhook_id: uuid.UUID,
    session: SessionDep,
    caller: ManageCaller,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> DeliveryPage:
    """The endpoint's deliveries, newest first: attempts, the last answer, the next try."""
    webhook = _webhook_or_404(session, caller, webhook_id)
    rows = endpoints.deliveries(session, webhook, limit, time_cursor(cursor))
    page = rows[:limit]
    last = page[-1][0] if page else None
    return DeliveryPage(
        items=[
            DeliveryOut(
                id=delivery.id,
                event_id=delivery.event_id,
                event_type=event_type,
                status=delivery.status,
                attempts=delivery.attempts,
                last_status_code=delivery.last_status_code,
                last_error=delivery.last_error,
                next_attempt_at=delivery.next_attempt_at if delivery.status == "PENDING" else None,
                created_at=delivery.created_at,
                last_attempt_at=delivery.last_attempt_at,
                delivered_at=delivery.delivered_at,
            )
            for delivery, event_type in page
        ],
        next_cursor=encode_cursor(last.created_at, last.id)
        if last is not None and len(rows) > limit
        else None,
    )


def _since(value: str) -> datetime | uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"since is neither an event id nor an ISO time: {value!r}",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.post(
    "/{webhook_id}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReplayOut,
    responses={404: {"model": ErrorOut, "description": "unknown webhook, or unknown event id"}},
)
def replay(
    webhook_id: uuid.UUID, body: ReplayIn, session: SessionDep, caller: ManageCaller
) -> ReplayOut:
    """Send the library's events of the endpoint's types again, from `since` (a time, or after an
    event id), each under the webhook-id it first had; a disabled endpoint is enabled again.
    Events are kept EVENTS_RETENTION_DAYS."""
    webhook = _webhook_or_404(session, caller, webhook_id)
    try:
        queued = endpoints.replay(session, webhook, _since(body.since))
    except endpoints.UnknownEvent as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    log.info("webhook.replayed", webhook_id=str(webhook_id), since=body.since, queued=queued)
    return ReplayOut(queued=queued)

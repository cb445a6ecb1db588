"""`GET /events`: the library's events as a live stream (Server-Sent Events), read from the outbox.

Each message is `id: <event id>`, `event: <type>` and `data: <the event as JSON>` (the body a
webhook gets). A client that reconnects with `Last-Event-ID` gets every event after that one,
each once, in order (`photoembed.events`: positions are given after commit); one whose id is no
longer in the outbox (older than EVENTS_RETENTION_DAYS) is told so by an `event: gap` message and
goes on from now. A comment every HEARTBEAT_SECONDS keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from photoembed import events
from photoembed.api.auth import ReadCaller
from photoembed.api.deps import SettingsDep
from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.models import Event

router = APIRouter(tags=["events"])

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15
RETRY_MS = 2000  # what a browser's EventSource waits before it reconnects


def _start(
    settings: Settings, library_id: uuid.UUID, last_event_id: str | None
) -> tuple[int, bool]:
    """Where the stream starts: after the event named, or now; and whether that left a gap."""
    with session_scope(settings.database_url) as session:
        events.sequence(session, wait=False)
    with session_scope(settings.database_url) as session:
        if last_event_id:
            try:
                position = events.position_of(session, library_id, uuid.UUID(last_event_id))
            except ValueError:
                position = None
            if position is not None:
                return position, False
        return events.last_position(session, library_id), bool(last_event_id)


def _next(settings: Settings, library_id: uuid.UUID, position: int) -> list[Event]:
    with session_scope(settings.database_url) as session:
        events.sequence(session, wait=False)
    with session_scope(settings.database_url) as session:
        return events.after(session, library_id, position)


def message(event: Event) -> str:
    return f"id: {event.id}\nevent: {event.type}\ndata: {json.dumps(events.body(event))}\n\n"


async def _stream(
    request: Request,
    settings: Settings,
    library_id: uuid.UUID,
    position: int,
    gap: bool,
    wanted: set[str] | None,
) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    if gap:
        said = {
            "reason": "Last-Event-ID is not in the outbox (unknown, or older than "
            "EVENTS_RETENTION_DAYS): what happened before now must be read from the API"
        }
        yield f"event: gap\ndata: {json.dumps(said)}\n\n"  # fmt: skip
    beat = time.monotonic()
    while not await request.is_disconnected():
        batch = await run_in_threadpool(_next, settings, library_id, position)
        for event in batch:
            assert event.position is not None
            position = event.position
            if wanted is None or event.type in wanted:
                yield message(event)
                beat = time.monotonic()
        if batch:
            continue
        if time.monotonic() - beat >= HEARTBEAT_SECONDS:
            yield ": keep-alive\n\n"
            beat = time.monotonic()
        await anyio.sleep(POLL_SECONDS)


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def stream_events(
    request: Request,
    settings: SettingsDep,
    caller: ReadCaller,
    last_event_id: Annotated[
        str | None, Header(description="Resume after this event (browsers send it themselves)")
    ] = None,
    types: str | None = None,
) -> StreamingResponse:
    """The key's library's events as they happen (Server-Sent Events): `photo.ready`,
    `photo.failed`, `photo.deleted`, `faces.done`, `faces.failed`, `person.updated`; `types`
    (comma-separated) keeps only those. Each message's `data` is the event as a webhook gets it;
    reconnect with `Last-Event-ID` to miss nothing."""
    position, gap = await run_in_threadpool(_start, settings, caller.library_id, last_event_id)
    wanted = {name.strip() for name in types.split(",") if name.strip()} if types else None
    return StreamingResponse(
        _stream(request, settings, caller.library_id, position, gap, wanted),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

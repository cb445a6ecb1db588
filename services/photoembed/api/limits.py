"""An ASGI middleware that refuses request bodies over the upload limit so that clients read why.

A server that answers 413 and closes while the client is still sending makes the kernel reset the
connection, and most clients (Python requests, urllib, a browser's fetch) then report the reset,
never the answer. So the 413 waits until the rest of the body has been read and thrown away (never
kept in memory or on disk), up to a generous cap. A client that asked `Expect: 100-continue`
(curl does for large bodies) is answered at once and sends nothing more.
"""

from __future__ import annotations

import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Beyond this much discarded body (or time), stop reading and let the connection go.
DRAIN_MAX_BYTES = 1 << 30
DRAIN_MAX_SECONDS = 120.0


class BodyTooLarge(BaseException):
    """Not an Exception: Starlette's error middleware would turn an Exception into a 500 before
    this middleware could answer 413."""


async def drain(receive: Receive) -> None:
    """Read and discard what is left of the request body."""
    discarded, deadline = 0, time.monotonic() + DRAIN_MAX_SECONDS
    while discarded < DRAIN_MAX_BYTES and time.monotonic() < deadline:
        message = await receive()
        if message["type"] != "http.request":
            return
        discarded += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class BodySizeLimit:
    """Answers 413 when Content-Length or the bytes actually received exceed `max_bytes`, and
    holds back any 413 the application sends until the body has been drained."""

    def __init__(self, app: ASGIApp, max_bytes: int, shown_limit: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.shown_limit = shown_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if headers.get(b"expect", b"").lower() != b"100-continue":
                await drain(receive)
            await self._reject(send)
            return
        received = 0
        body_done = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise BodyTooLarge
            else:
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started, body_done
            if message["type"] == "http.response.start":
                started = True
                if message["status"] == 413 and not body_done:
                    await drain(receive)
                    body_done = True
                    message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await drain(receive)
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        payload = json.dumps(
            {
                "detail": f"the upload is larger than the limit of {self.shown_limit} bytes "
                f"(MAX_UPLOAD_BYTES)"
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

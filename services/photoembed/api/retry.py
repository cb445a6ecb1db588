"""An ASGI middleware that runs a read once more when the database connection died under it.

The pool's pre-ping catches a connection that died between requests; one that dies during a
request (the server restarted or switched over between the pre-ping and the query) ends in the
`database_unavailable` 503. A GET or HEAD is safe to repeat, so it is run once more, on a new
connection, before the caller sees that 503. Writes are not repeated: their caller gets the 503
and its Retry-After, and decides.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from photoembed.logging import get_logger

log = get_logger(__name__)

# Set in the request's state by the handler that turns a lost database into a 503.
DATABASE_UNAVAILABLE = "database_unavailable"


class RetryReadOnce:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        dropped = False

        async def send_unless_database_failed(message: Message) -> None:
            nonlocal dropped
            if message["type"] == "http.response.start" and state.get(DATABASE_UNAVAILABLE):
                dropped = True
            if not dropped:
                await send(message)

        await self.app(scope, receive, send_unless_database_failed)
        if dropped:
            state.pop(DATABASE_UNAVAILABLE)
            log.info("api.read_retried", path=scope["path"])
            await self.app(scope, receive, send)

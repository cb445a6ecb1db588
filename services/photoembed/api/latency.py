"""An ASGI middleware that times every HTTP request into REQUEST_SECONDS (method, route, status).

A plain ASGI class rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware starts a
task group for every chunk of a request body it passes on, which cost an upload more CPU than
parsing its multipart body.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from photoembed.metrics import REQUEST_SECONDS


class RequestLatency:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the application answers

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            # The router leaves the matched route in the scope.
            route = scope.get("route")
            REQUEST_SECONDS.labels(
                scope["method"], getattr(route, "path", "unmatched"), str(status)
            ).observe(time.perf_counter() - started)

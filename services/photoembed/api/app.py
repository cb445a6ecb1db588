"""The FastAPI application: `create_app(settings)` wires the routes to the shared services."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles

from photoembed.api.limits import BodySizeLimit
from photoembed.api.routes import health, metrics, persons, photos, search, ui
from photoembed.api.routes.ui import STATIC_DIR
from photoembed.clip.embedder import ClipEmbedder
from photoembed.config import Settings
from photoembed.metrics import REQUEST_SECONDS
from photoembed.queue import build_broker
from photoembed.storage import PhotoStorage

RequestHandler = Callable[[Request], Awaitable[Response]]

# Room for the multipart envelope around the file and the small form fields.
_MULTIPART_OVERHEAD = 64 * 1024


def create_app(settings: Settings) -> FastAPI:
    settings.check_api_keys()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.broker.close()

    app = FastAPI(
        title="photo-embed",
        summary="Person photos in, QuickGELU-correct CLIP embeddings out.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.broker = build_broker(settings)
    app.state.storage = PhotoStorage(settings.storage_dir)
    app.state.query_embedder = ClipEmbedder(settings)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + _MULTIPART_OVERHEAD)

    @app.middleware("http")
    async def observe_latency(request: Request, call_next: RequestHandler) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        REQUEST_SECONDS.labels(
            request.method, getattr(route, "path", "unmatched"), str(response.status_code)
        ).observe(time.perf_counter() - started)
        return response

    app.include_router(health.router)
    app.include_router(photos.router)
    app.include_router(persons.router)
    app.include_router(search.router)
    app.include_router(metrics.router)
    app.include_router(ui.router)
    app.mount("/ui", StaticFiles(directory=STATIC_DIR), name="ui")
    return app

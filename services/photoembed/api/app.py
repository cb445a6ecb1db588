"""The FastAPI application: `create_app(settings)` wires the routes to the shared services.

Importing this never imports torch: the model is needed only by text and image searches, and is
loaded on the first one (`api.queries`). The configured model's identity, which reads need, is
worked out in a child process at startup (`api.active_model`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from photoembed.api.active_model import ActiveModel
from photoembed.api.auth import KeyResolver
from photoembed.api.latency import RequestLatency
from photoembed.api.limits import BodySizeLimit
from photoembed.api.queries import QueryEmbedder
from photoembed.api.routes import (
    faces,
    health,
    libraries,
    metrics,
    persons,
    photos,
    search,
    ui,
)
from photoembed.api.routes.ui import STATIC_DIR
from photoembed.config import Settings, get_settings
from photoembed.db import set_pool_size
from photoembed.logging import configure_logging
from photoembed.photos import storage_for
from photoembed.queue import build_broker

# Room for the multipart envelope around the file and the small form fields.
_MULTIPART_OVERHEAD = 64 * 1024


def create_app(settings: Settings) -> FastAPI:
    settings.check_api_keys()
    set_pool_size(settings.api_threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Sync routes run in this many threads, each holding at most one pooled connection.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        app.state.active_model.start()
        yield
        app.state.broker.close()

    app = FastAPI(
        title="photo-embed",
        summary="Person photos in, QuickGELU-correct CLIP embeddings out.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.keys = KeyResolver(settings)
    app.state.broker = build_broker(settings)
    app.state.storage = storage_for(settings)
    app.state.active_model = ActiveModel(settings)
    app.state.query_embedder = QueryEmbedder(settings)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_upload_bytes + _MULTIPART_OVERHEAD,
        shown_limit=settings.max_upload_bytes,
    )
    app.add_middleware(RequestLatency)

    app.include_router(health.router)
    app.include_router(photos.router)
    app.include_router(persons.router)
    app.include_router(faces.router)
    app.include_router(search.router)
    app.include_router(libraries.router)
    app.include_router(metrics.router)
    app.include_router(ui.router)
    app.mount("/ui", StaticFiles(directory=STATIC_DIR), name="ui")
    return app


def create_app_from_env() -> FastAPI:
    """The factory each of uvicorn's worker processes calls (API_WORKERS > 1)."""
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)

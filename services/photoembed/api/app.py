"""The FastAPI application: `create_app(settings)` wires the routes to the shared services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from photoembed.api.limits import BodySizeLimit
from photoembed.api.routes import health, photos
from photoembed.config import Settings
from photoembed.queue import build_broker
from photoembed.storage import PhotoStorage

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
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + _MULTIPART_OVERHEAD)
    app.include_router(health.router)
    app.include_router(photos.router)
    return app

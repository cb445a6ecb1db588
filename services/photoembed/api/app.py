"""The FastAPI application: `create_app(settings)` wires the routes to the shared services.

Importing this never imports torch: the model is needed only by text and image searches, and is
loaded on the first one (`api.queries`). The configured model's identity, which reads need, is
worked out in a child process at startup (`api.active_model`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError

from photoembed.api.active_model import ActiveModel
from photoembed.api.auth import RETRY_AFTER_SECONDS, KeyResolver, RequiresScope, route_scope
from photoembed.api.latency import RequestLatency
from photoembed.api.limits import BodySizeLimit
from photoembed.api.queries import QueryEmbedder
from photoembed.api.retry import DATABASE_UNAVAILABLE, RetryReadOnce
from photoembed.api.routes import (
    events,
    faces,
    health,
    libraries,
    metrics,
    persons,
    photos,
    search,
    ui,
    webhooks,
)
from photoembed.api.routes.ui import STATIC_DIR
from photoembed.config import Settings, get_settings
from photoembed.db import set_pool_size
from photoembed.logging import configure_logging, get_logger
from photoembed.photos import storage_for
from photoembed.queue import build_broker

# Room for the multipart envelope around the file and the small form fields.
_MULTIPART_OVERHEAD = 64 * 1024

log = get_logger(__name__)


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A database that does not answer (stopped, restarting, switching over) is a 503 the client
    may retry after Retry-After, never a 500 (a read is first run once more: `api.retry`)."""
    setattr(request.state, DATABASE_UNAVAILABLE, True)
    return _unavailable(request, exc, "database")


async def broker_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The same for Redis (a Sentinel failover without a master yet), where a route needs it:
    an upload does not (its message is sent later by the sweeper)."""
    return _unavailable(request, exc, "broker")


def _unavailable(request: Request, exc: Exception, dependency: str) -> JSONResponse:
    log.warning(
        f"api.{dependency}_unavailable",
        path=request.url.path,
        error=f"{type(exc).__name__}: {exc}"[:300],
    )
    return JSONResponse(
        {"detail": f"the {dependency} does not answer now; try again shortly"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


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
    app.add_middleware(RetryReadOnce)
    app.add_middleware(RequestLatency)
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(RedisError, broker_unavailable)

    routers = [
        health.router,
        photos.router,
        persons.router,
        faces.router,
        search.router,
        libraries.router,
        webhooks.router,
        events.router,
        metrics.router,
        ui.router,
    ]
    for router in routers:
        app.include_router(router)
    app.mount("/ui", StaticFiles(directory=STATIC_DIR), name="ui")
    app.openapi = _openapi_with_scopes(app, routers)  # type: ignore[method-assign]
    return app


def _openapi_with_scopes(app: FastAPI, routers: list[APIRouter]) -> Callable[[], dict[str, Any]]:
    """FastAPI's schema, with the scope each operation needs (`x-scope`, and said first in its
    description)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            for router in routers:
                for route in router.routes:
                    if isinstance(route, APIRoute):
                        needed = route_scope(route.dependant, router.dependencies)
                        if needed is not None:
                            _say_scope(schema["paths"][route.path_format], route, needed)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def _say_scope(path: dict[str, Any], route: APIRoute, needed: RequiresScope) -> None:
    for method in route.methods or ():
        operation = path[method.lower()]
        operation["x-scope"] = needed.described
        operation["description"] = (
            f"Scope: `{needed.described}`.\n\n{operation.get('description', '')}"
        )


def create_app_from_env() -> FastAPI:
    """The factory each of uvicorn's worker processes calls (API_WORKERS > 1)."""
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)

"""FastAPI dependencies: settings, a DB session per request, the broker and storage (who is calling
is `api.auth`).

Those that only read the application's state are `async def`: FastAPI runs a plain `def`
dependency in a worker thread, a hop that cost more than the upload route's own work. The session
and the active model stay plain functions, since they may wait on the database or a child process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from dramatiq.brokers.redis import RedisBroker
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from photoembed.api.active_model import ActiveModel
from photoembed.api.queries import QueryEmbedder
from photoembed.config import Settings
from photoembed.db import get_sessionmaker
from photoembed.storage import PhotoStorage


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with get_sessionmaker(settings.database_url)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_read_session(settings: SettingsDep) -> Iterator[Session]:
    """A session on SEARCH_DATABASE_URL's replica (the primary when none is set), for lists that
    may lag it by the replica's lag."""
    with get_sessionmaker(settings.read_database_url)() as session:
        yield session


ReadSessionDep = Annotated[Session, Depends(get_read_session)]


async def get_broker(request: Request) -> RedisBroker:
    broker: RedisBroker = request.app.state.broker
    return broker


BrokerDep = Annotated[RedisBroker, Depends(get_broker)]


async def get_storage(request: Request) -> PhotoStorage:
    storage: PhotoStorage = request.app.state.storage
    return storage


StorageDep = Annotated[PhotoStorage, Depends(get_storage)]


def get_active_model(request: Request) -> str | None:
    """The configured model's identity; None when its weights are not on this machine, and then
    reads fall back to each photo's newest vector."""
    active: ActiveModel = request.app.state.active_model
    return active.get()


ActiveModelDep = Annotated[str | None, Depends(get_active_model)]


async def get_query_embedder(request: Request) -> QueryEmbedder:
    embedder: QueryEmbedder = request.app.state.query_embedder
    return embedder


QueryEmbedderDep = Annotated[QueryEmbedder, Depends(get_query_embedder)]

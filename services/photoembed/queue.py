"""The Redis broker and the messages the API and the sweeper send to the worker.

They enqueue by actor name and never import the worker (and so never torch).
"""

from __future__ import annotations

import uuid
from typing import Any, cast

import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from redis.connection import parse_url
from redis.sentinel import Sentinel

from photoembed.config import Settings

EMBED_PHOTO = "embed_photo"
BACKFILL_PHOTO = "backfill_photo"
DETECT_FACES = "detect_faces"
DELIVER_WEBHOOK = "deliver_webhook"


def redis_client(settings: Settings) -> redis.Redis:
    """The Redis every part of the service talks to (through the broker): REDIS_URL's server, or
    with REDIS_SENTINELS the master the sentinels name, asked again whenever a connection to it
    fails, so that a failover is followed without a restart."""
    timeouts: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout_seconds,
        "socket_connect_timeout": settings.redis_socket_timeout_seconds,
    }
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **timeouts)
    target: dict[str, Any] = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    sentinel_password = settings.redis_sentinel_password.get_secret_value() or None
    sentinel = Sentinel(
        settings.sentinel_addresses,
        sentinel_kwargs={"password": sentinel_password, **timeouts},
        **timeouts,
    )
    return cast(
        redis.Redis,
        sentinel.master_for(
            settings.redis_sentinel_master,
            db=target.get("db", 0),
            username=target.get("username"),
            password=target.get("password"),
        ),
    )


def build_broker(settings: Settings) -> RedisBroker:
    # A dead worker's unacknowledged messages go back to the queue once its heartbeat is older
    # than the timeout, during "maintenance", which runs on this share (per million) of commands.
    return RedisBroker(  # type: ignore[no-untyped-call]
        client=redis_client(settings),
        heartbeat_timeout=settings.redis_heartbeat_timeout_ms,
        maintenance_chance=settings.redis_maintenance_chance,
    )


def embed_photo_message(settings: Settings, photo_id: uuid.UUID) -> Message[None]:
    """A message with its id fixed now, so the row can record it before it is sent."""
    return Message(
        queue_name=settings.queue_name,
        actor_name=EMBED_PHOTO,
        args=(str(photo_id),),
        kwargs={},
        options={},
    )


def backfill_photo_message(settings: Settings, photo_id: uuid.UUID) -> Message[None]:
    return Message(
        queue_name=settings.queue_name,
        actor_name=BACKFILL_PHOTO,
        args=(str(photo_id),),
        kwargs={},
        options={},
    )


def detect_faces_message(settings: Settings, photo_id: uuid.UUID) -> Message[None]:
    return Message(
        queue_name=settings.face_queue_name,
        actor_name=DETECT_FACES,
        args=(str(photo_id),),
        kwargs={},
        options={},
    )


def message_is_queued(broker: RedisBroker, queue_name: str, message_id: str) -> bool:
    """Whether Redis still holds the message (waiting, or taken by a worker and not yet acked)."""
    return bool(broker.client.hexists(f"{broker.namespace}:{queue_name}.msgs", message_id))


def deliver_webhook_message(settings: Settings, delivery_ids: list[uuid.UUID]) -> Message[None]:
    return Message(
        queue_name=settings.webhook_queue_name,
        actor_name=DELIVER_WEBHOOK,
        args=tuple(str(delivery_id) for delivery_id in delivery_ids),
        kwargs={},
        options={},
    )

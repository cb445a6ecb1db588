"""The Redis broker and the messages the API and the sweeper send to the worker.

They enqueue by actor name and never import the worker (and so never torch).
"""

from __future__ import annotations

import uuid

from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from photoembed.config import Settings

EMBED_PHOTO = "embed_photo"
BACKFILL_PHOTO = "backfill_photo"
DETECT_FACES = "detect_faces"
DELIVER_WEBHOOK = "deliver_webhook"


def build_broker(settings: Settings) -> RedisBroker:
    # A dead worker's unacknowledged messages go back to the queue once its heartbeat is older
    # than the timeout, during "maintenance", which runs on this share (per million) of commands.
    return RedisBroker(  # type: ignore[no-untyped-call]
        url=settings.redis_url,
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

"""The Redis broker and the messages the API sends to the worker.

The API enqueues by actor name and never imports the worker (and so never torch).
"""

from __future__ import annotations

import uuid

from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from photoembed.config import Settings

EMBED_PHOTO = "embed_photo"


def build_broker(settings: Settings) -> RedisBroker:
    return RedisBroker(url=settings.redis_url)  # type: ignore[no-untyped-call]


def enqueue_embed_photo(broker: RedisBroker, settings: Settings, photo_id: uuid.UUID) -> str:
    message: Message[None] = Message(
        queue_name=settings.queue_name,
        actor_name=EMBED_PHOTO,
        args=(str(photo_id),),
        kwargs={},
        options={},
    )
    return broker.enqueue(message).message_id

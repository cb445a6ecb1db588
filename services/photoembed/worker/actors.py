"""The worker's entry module: `dramatiq photoembed.worker.actors` (what `photoembed worker` runs).

Importing it builds the broker with our middleware and declares the actors; nothing heavy happens
here, so the model is loaded in each worker process (by the self-check), never before the fork.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.prometheus import Prometheus

from photoembed.clip.runtime import image_embedder
from photoembed.config import get_settings
from photoembed.logging import configure_logging
from photoembed.metrics import QUEUE_LAG_SECONDS
from photoembed.queue import BACKFILL_PHOTO, EMBED_PHOTO, build_broker
from photoembed.storage import PhotoStorage
from photoembed.worker.middleware import MessageContext, ModelSelfCheck, Sweep
from photoembed.worker.pipeline import TRANSIENT_ERRORS, backfill_one, process_photo

settings = get_settings()
configure_logging(settings.log_format, settings.log_level)

broker = build_broker(settings)
broker.add_middleware(Prometheus())
broker.add_middleware(CurrentMessage())
broker.add_middleware(MessageContext())
broker.add_middleware(ModelSelfCheck(settings))
broker.add_middleware(Sweep(settings))
dramatiq.set_broker(broker)


def _retry_transient(retries: int, exception: BaseException) -> bool:
    return retries <= settings.max_retries and isinstance(exception, TRANSIENT_ERRORS)


# Transient errors retry with exponential backoff (1 s to 60 s); a photo gets 10 minutes.
ACTOR_OPTIONS: dict[str, Any] = {
    "queue_name": settings.queue_name,
    "retry_when": _retry_transient,
    "min_backoff": 1_000,
    "max_backoff": 60_000,
    "time_limit": 10 * 60_000,
}


@dramatiq.actor(actor_name=EMBED_PHOTO, **ACTOR_OPTIONS)
def embed_photo(photo_id: str) -> None:
    """Embed a newly uploaded photo and mark it READY (or FAILED)."""
    message = CurrentMessage.get_current_message()
    assert message is not None
    QUEUE_LAG_SECONDS.observe(max(0.0, time.time() - message.message_timestamp / 1000))
    process_photo(
        uuid.UUID(photo_id),
        message.message_id,
        settings,
        image_embedder(settings),
        PhotoStorage(settings.storage_dir),
    )


@dramatiq.actor(actor_name=BACKFILL_PHOTO, **ACTOR_OPTIONS)
def backfill_photo(photo_id: str) -> None:
    """Give an existing photo a vector of this worker's model; its status does not change."""
    backfill_one(uuid.UUID(photo_id), settings, image_embedder(settings))

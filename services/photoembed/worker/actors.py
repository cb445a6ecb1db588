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

from photoembed.clip.factory import image_embedder
from photoembed.config import get_settings
from photoembed.db import set_pool_size
from photoembed.faces.factory import face_model
from photoembed.logging import configure_logging
from photoembed.metrics import QUEUE_LAG_SECONDS
from photoembed.models import PhotoStatus
from photoembed.photos import enqueue_or_defer, storage_for
from photoembed.queue import (
    BACKFILL_PHOTO,
    DETECT_FACES,
    EMBED_PHOTO,
    build_broker,
    detect_faces_message,
)
from photoembed.sizing import resolve
from photoembed.worker.face_stage import process_faces, yield_to_photos
from photoembed.worker.middleware import MessageContext, ModelSelfCheck, Sweep
from photoembed.worker.pipeline import (
    backfill_one,
    process_photo,
    retried_when_transient,
    retry_rule,
)


class _MetricsOnly(Prometheus):
    """Dramatiq's message metrics without a second exposition server on the same port."""

    @property
    def forks(self) -> list[Any]:
        return []


settings = resolve(get_settings())
configure_logging(settings.log_format, settings.log_level)
set_pool_size(settings.db_pool_size)
storage = storage_for(settings)

broker = build_broker(settings)
# One exposition server for every process of `photoembed worker`: the photos' group (or a lone
# `all` worker) starts it; the face group's processes write to the same metrics folder.
broker.add_middleware(Prometheus() if settings.worker_role != "faces" else _MetricsOnly())
broker.add_middleware(CurrentMessage())
broker.add_middleware(MessageContext())
broker.add_middleware(ModelSelfCheck(settings))
broker.add_middleware(Sweep(settings))
dramatiq.set_broker(broker)


# Transient errors retry with exponential backoff (RETRY_MIN/MAX_BACKOFF_MS); each claim counts
# against MAX_ATTEMPTS, and the sweeper ends anything still going after GIVE_UP_AFTER_SECONDS.
ACTOR_OPTIONS: dict[str, Any] = {
    "queue_name": settings.queue_name,
    "retry_when": retry_rule(settings.max_retries),
    "min_backoff": settings.retry_min_backoff_ms,
    "max_backoff": settings.retry_max_backoff_ms,
    "time_limit": 10 * 60_000,
}


@dramatiq.actor(actor_name=EMBED_PHOTO, **ACTOR_OPTIONS)
def embed_photo(photo_id: str) -> None:
    """Embed a newly uploaded photo and mark it READY (or FAILED)."""
    message = CurrentMessage.get_current_message()
    assert message is not None
    QUEUE_LAG_SECONDS.observe(max(0.0, time.time() - message.message_timestamp / 1000))
    faces = detect_faces_message(settings, uuid.UUID(photo_id)) if settings.faces_enabled else None
    with retried_when_transient():
        outcome = process_photo(
            uuid.UUID(photo_id),
            message.message_id,
            settings,
            image_embedder(settings),
            storage,
            faces.message_id if faces else None,
        )
    if faces is not None and outcome == PhotoStatus.READY:
        enqueue_or_defer(broker, faces, uuid.UUID(photo_id))


@dramatiq.actor(actor_name=BACKFILL_PHOTO, **ACTOR_OPTIONS)
def backfill_photo(photo_id: str) -> None:
    """Give an existing photo a vector of this worker's model; its status does not change."""
    with retried_when_transient():
        backfill_one(uuid.UUID(photo_id), settings, image_embedder(settings), storage)


# Faces run in processes of their own at the lowest CPU priority (`photoembed worker`), each
# task once no photo waits, so they never hold up a photo's READY; in a lone `all` worker they
# also wait behind photos (priority 10).
@dramatiq.actor(
    actor_name=DETECT_FACES,
    **{**ACTOR_OPTIONS, "queue_name": settings.face_queue_name},
    priority=10,
)
def detect_faces(photo_id: str) -> None:
    """Find the faces of a READY photo, store them with their persons (faces_status DONE)."""
    message = CurrentMessage.get_current_message()
    assert message is not None
    yield_to_photos(settings)
    with retried_when_transient():
        process_faces(
            uuid.UUID(photo_id), message.message_id, settings, face_model(settings), storage
        )

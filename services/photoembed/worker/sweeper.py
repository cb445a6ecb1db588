"""The sweeper: re-sends photos whose message was lost, so nothing stays PENDING or PROCESSING.

Two cases, both safe to repeat because the claim is idempotent (and the same two for the face
stage of READY photos):
* PENDING past a grace period whose message Redis no longer holds (a crash between the commit and
  the send, an enqueue while Redis was down, a Redis that lost its data, a dead-lettered retry);
* PROCESSING past its lease (the worker holding it died, and no redelivery came).
And it ends what would otherwise go round for ever: a photo not finished GIVE_UP_AFTER_SECONDS
after it was submitted ends FAILED, with the last error it saw.
Every worker runs it; a Redis lock lets one sweep per interval across all machines.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from dramatiq.brokers.redis import RedisBroker

from photoembed import events, repository
from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.faces import store
from photoembed.logging import get_logger
from photoembed.metrics import PHOTO_FAILURES, STATUS_TRANSITIONS
from photoembed.models import EventType, PhotoStatus
from photoembed.photos import send, send_for_faces
from photoembed.queue import message_is_queued

log = get_logger(__name__)

LOCK_KEY = "photoembed:sweeper"
BATCH = 500


@dataclass(frozen=True)
class SweepResult:
    resent_pending: int = 0
    resent_expired: int = 0
    gave_up: int = 0
    resent_faces: int = 0


def sweep_once(settings: Settings, broker: RedisBroker) -> SweepResult:
    with session_scope(settings.database_url) as session:
        gave_up = repository.give_up_overdue(session, settings.give_up_after_seconds, BATCH)
        events.record_for_photos(session, EventType.PHOTO_FAILED, gave_up)
        pending = repository.lost_pending(session, settings.sweep_pending_grace_seconds, BATCH)
        expired = repository.expired_leases(session, settings.claim_lease_seconds, BATCH)
        faces = store.lost_faces(
            session, settings.sweep_pending_grace_seconds, settings.claim_lease_seconds, BATCH
        )
    for _ in gave_up:
        PHOTO_FAILURES.labels("gave_up").inc()
        STATUS_TRANSITIONS.labels(PhotoStatus.FAILED).inc()
    lost = [
        photo_id
        for photo_id, message_id in pending
        if not (message_id and message_is_queued(broker, settings.queue_name, message_id))
    ]
    send(settings, broker, lost + expired)
    lost_faces = [
        photo_id
        for photo_id, message_id in faces
        if not (message_id and message_is_queued(broker, settings.face_queue_name, message_id))
    ]
    send_for_faces(settings, broker, lost_faces)
    result = SweepResult(
        resent_pending=len(lost),
        resent_expired=len(expired),
        gave_up=len(gave_up),
        resent_faces=len(lost_faces),
    )
    if lost or expired or lost_faces:
        log.warning(
            "sweeper.resent", pending=len(lost), expired_lease=len(expired), faces=len(lost_faces)
        )
    if gave_up:
        log.error(
            "sweeper.gave_up",
            photos=len(gave_up),
            give_up_after_seconds=settings.give_up_after_seconds,
        )
    return result


def try_sweep(settings: Settings, broker: RedisBroker) -> SweepResult | None:
    """Sweep unless another process swept within this interval."""
    interval_ms = max(1, settings.sweep_interval_seconds) * 1000
    if not broker.client.set(LOCK_KEY, "1", nx=True, px=interval_ms):
        return None
    return sweep_once(settings, broker)


class SweeperThread(threading.Thread):
    def __init__(self, settings: Settings, broker: RedisBroker) -> None:
        super().__init__(name="photoembed-sweeper", daemon=True)
        self.settings = settings
        self.broker = broker
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.sweep_interval_seconds):
            try:
                try_sweep(self.settings, self.broker)
            except Exception as exc:  # a database or Redis outage: try again next interval
                log.warning("sweeper.failed", error=f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self.stopped.set()

"""The sweeper: re-sends photos whose message was lost, so nothing stays PENDING or PROCESSING.

Two cases, both safe to repeat because the claim is idempotent:
* PENDING past a grace period whose message Redis no longer holds (a crash between the commit and
  the send, an enqueue while Redis was down, a Redis that lost its data, a dead-lettered retry);
* PROCESSING past its lease (the worker holding it died, and no redelivery came).
Every worker runs it; a Redis lock lets one sweep per interval across all machines.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import text

from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.logging import get_logger
from photoembed.queue import embed_photo_message, message_is_queued

log = get_logger(__name__)

LOCK_KEY = "photoembed:sweeper"
BATCH = 500


@dataclass(frozen=True)
class SweepResult:
    resent_pending: int = 0
    resent_expired: int = 0


def sweep_once(settings: Settings, broker: RedisBroker) -> SweepResult:
    with session_scope(settings.database_url) as session:
        pending = session.execute(
            text(
                """
                SELECT id, message_id FROM photos
                 WHERE status = 'PENDING'
                   AND (enqueued_at IS NULL
                        OR enqueued_at < now() - make_interval(secs => :grace))
                 ORDER BY created_at LIMIT :batch
                """
            ),
            {"grace": settings.sweep_pending_grace_seconds, "batch": BATCH},
        ).all()
        expired = session.execute(
            text(
                """
                SELECT id FROM photos
                 WHERE status = 'PROCESSING'
                   AND claimed_at < now() - make_interval(secs => :lease)
                 ORDER BY claimed_at LIMIT :batch
                """
            ),
            {"lease": settings.claim_lease_seconds, "batch": BATCH},
        ).all()
    lost = [
        row.id
        for row in pending
        if not (row.message_id and message_is_queued(broker, settings.queue_name, row.message_id))
    ]
    for photo_id in lost + [row.id for row in expired]:
        message = embed_photo_message(settings, photo_id)
        with session_scope(settings.database_url) as session:
            session.execute(
                text("UPDATE photos SET message_id = :m, enqueued_at = now() WHERE id = :id"),
                {"m": message.message_id, "id": photo_id},
            )
        broker.enqueue(message)
    result = SweepResult(resent_pending=len(lost), resent_expired=len(expired))
    if lost or expired:
        log.warning("sweeper.resent", pending=len(lost), expired_lease=len(expired))
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

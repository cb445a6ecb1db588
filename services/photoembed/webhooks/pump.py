"""The webhooks' pump, a thread of the worker's events process: every WEBHOOK_POLL_MS it

1. numbers the committed events (`events.sequence`),
2. makes a delivery of each new event for every enabled endpoint of its library that wants its
   type (how far it has come is the `webhooks` row of event_cursors, moved under a lock),
3. hands the due deliveries to the `deliver_webhook` actor, in lots of at most LOT_SIZE of one
   endpoint (one message, two transactions a lot: a send costs the CPU of the HTTP request, not
   of its bookkeeping): PENDING ones whose time has come, and SENDING ones whose message was lost
   (a worker killed, Redis restarted) once their claim is older than CLAIM_LEASE_S, so that no
   delivery waits for a message that will never come,
4. and now and then deletes events older than EVENTS_RETENTION_DAYS (deliveries go with them).

Several events processes (one per worker machine) may run it at once: the fan-out takes a lock,
and a delivery is claimed by one of them (FOR UPDATE SKIP LOCKED).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from sqlalchemy import text

from photoembed import events
from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.logging import get_logger

log = get_logger(__name__)

CLAIM_LEASE_S = 30
CLAIM_BATCH = 500
LOT_SIZE = 20
PRUNE_EVERY_S = 600
FAN_OUT_LOCK = "hashtext('photoembed:webhooks-fan-out')"


def fan_out(settings: Settings) -> int:
    """Deliveries for the events numbered since the last fan-out (committed)."""
    with session_scope(settings.database_url) as session:
        if not session.execute(text(f"SELECT pg_try_advisory_xact_lock({FAN_OUT_LOCK})")).scalar():
            return 0
        made = session.execute(
            text(
                """
                WITH done AS (
                    SELECT coalesce((SELECT position FROM event_cursors WHERE name = 'webhooks'),
                                    0) AS position),
                     batch AS (
                    SELECT e.id, e.library_id, e.type, e.position FROM events e, done
                     WHERE e.position > done.position ORDER BY e.position LIMIT 5000),
                     made AS (
                    INSERT INTO webhook_deliveries (id, webhook_id, event_id, status, next_attempt_at)
                    SELECT gen_random_uuid(), w.id, b.id, 'PENDING', now()
                      FROM batch b JOIN webhooks w
                        ON w.library_id = b.library_id AND b.type = ANY(w.events)
                       AND w.disabled_at IS NULL
                    ON CONFLICT (webhook_id, event_id) DO NOTHING
                    RETURNING 1)
                INSERT INTO event_cursors (name, position)
                SELECT 'webhooks', coalesce((SELECT max(position) FROM batch),
                                            (SELECT position FROM done))
                ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position
                RETURNING (SELECT count(*) FROM made)
                """
            )
        ).scalar()
    return int(made or 0)


def claim_due(settings: Settings) -> list[list[uuid.UUID]]:
    """Due deliveries of enabled endpoints, SENDING under a new claim (committed), in lots of one
    endpoint each, oldest first."""
    with session_scope(settings.database_url) as session:
        claimed = session.execute(
            text(
                """
                UPDATE webhook_deliveries SET status = 'SENDING', claimed_at = now()
                 WHERE id IN (
                    SELECT d.id FROM webhook_deliveries d
                      JOIN webhooks w ON w.id = d.webhook_id AND w.disabled_at IS NULL
                     WHERE (d.status = 'PENDING' AND d.next_attempt_at <= now())
                        OR (d.status = 'SENDING'
                            AND d.claimed_at < now() - make_interval(secs => :lease))
                     ORDER BY d.next_attempt_at
                     LIMIT :batch
                     FOR UPDATE OF d SKIP LOCKED)
                RETURNING id, webhook_id, next_attempt_at
                """
            ),
            {"lease": CLAIM_LEASE_S, "batch": CLAIM_BATCH},
        ).all()
    by_endpoint: dict[uuid.UUID, list[uuid.UUID]] = {}
    for delivery_id, webhook_id, _ in sorted(claimed, key=lambda row: row.next_attempt_at):
        by_endpoint.setdefault(webhook_id, []).append(delivery_id)
    return [
        ids[start : start + LOT_SIZE]
        for ids in by_endpoint.values()
        for start in range(0, len(ids), LOT_SIZE)
    ]


def pump_once(settings: Settings, send: Callable[[list[uuid.UUID]], None]) -> tuple[int, int]:
    """One round: number, fan out, hand over. Returns (deliveries made, handed over)."""
    with session_scope(settings.database_url) as session:
        events.sequence(session, wait=False)
    made = fan_out(settings)
    lots = claim_due(settings)
    for lot in lots:
        send(lot)
    return made, sum(len(lot) for lot in lots)


class EventPump(threading.Thread):
    """`pump_once` every WEBHOOK_POLL_MS, and the outbox pruned every PRUNE_EVERY_S; an outage
    of the database or Redis is logged and tried again at the next round."""

    def __init__(self, settings: Settings, send: Callable[[list[uuid.UUID]], None]) -> None:
        super().__init__(name="photoembed-event-pump", daemon=True)
        self.settings = settings
        self.send = send
        self.stopped = threading.Event()
        self.pruned_at = 0.0

    def run(self) -> None:
        interval = self.settings.webhook_poll_ms / 1000
        while not self.stopped.wait(interval):
            try:
                pump_once(self.settings, self.send)
                if time.monotonic() - self.pruned_at > PRUNE_EVERY_S:
                    self.pruned_at = time.monotonic()
                    self.prune()
            except Exception as exc:
                log.warning("events.pump_failed", error=f"{type(exc).__name__}: {exc}"[:500])

    def prune(self) -> None:
        with session_scope(self.settings.database_url) as session:
            gone = events.prune(session, self.settings.events_retention_days)
        if gone:
            log.info("events.pruned", events=gone, days=self.settings.events_retention_days)

    def stop(self) -> None:
        self.stopped.set()

"""The worker's events process: `dramatiq photoembed.worker.event_actors` (what `photoembed worker`
runs as its `events` group). It loads no model: it numbers events, fans them out to webhooks and
sends them (`photoembed.webhooks`), on its own queue, so a slow or dead receiver never holds up a
photo or a face."""

from __future__ import annotations

import uuid
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.prometheus import Prometheus

from photoembed.config import get_settings
from photoembed.db import set_pool_size
from photoembed.logging import configure_logging
from photoembed.queue import DELIVER_WEBHOOK, build_broker, deliver_webhook_message
from photoembed.webhooks.delivery import deliver
from photoembed.webhooks.pump import EventPump
from photoembed.worker.middleware import MessageContext


class _MetricsOnly(Prometheus):
    """Dramatiq's message metrics, exposed by the photos' process on the shared port."""

    @property
    def forks(self) -> list[Any]:
        return []


class Pump(dramatiq.Middleware):
    """Runs the event pump in this process. Hooks: `after_worker_boot` starts it,
    `before_worker_shutdown` stops it."""

    def __init__(self) -> None:
        self.thread: EventPump | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        def send(lot: list[uuid.UUID]) -> None:
            broker.enqueue(deliver_webhook_message(settings, lot))

        self.thread = EventPump(settings, send)
        self.thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.thread is not None:
            self.thread.stop()


settings = get_settings()
configure_logging(settings.log_format, settings.log_level)
set_pool_size(settings.webhook_worker_threads + 1)
broker = build_broker(settings)
broker.add_middleware(_MetricsOnly())
broker.add_middleware(CurrentMessage())
broker.add_middleware(MessageContext())
broker.add_middleware(Pump())
dramatiq.set_broker(broker)


# Retries are the delivery's own (BACKOFF_SECONDS, kept in Postgres), never Dramatiq's: a send
# that failed is due again at its time, and the pump hands it over then.
@dramatiq.actor(
    actor_name=DELIVER_WEBHOOK,
    queue_name=settings.webhook_queue_name,
    max_retries=0,
    time_limit=120_000,
)
def deliver_webhook(*delivery_ids: str) -> None:
    """Send a lot of one endpoint's deliveries and record their answers (a message of an
    earlier version carries one)."""
    deliver(settings, [uuid.UUID(delivery_id) for delivery_id in delivery_ids])

"""Prometheus exposition of the API's metrics (the worker serves its own on METRICS_PORT), with
what the API reads from outside itself: the backlog in Postgres (photos by status, the oldest
PENDING photo's and face stage's age), whether each dependency answers (what `/readyz` decides), the dead-lettered
messages in Redis and the database's connections against its limit. monitoring/alerts.yml reads
them."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from dramatiq.brokers.redis import RedisBroker
from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from photoembed import repository
from photoembed.api.auth import operator
from photoembed.api.readiness import probes
from photoembed.config import Settings
from photoembed.db import connection_usage, replica_lag_seconds, session_scope
from photoembed.events import OutboxFigures, outbox_figures
from photoembed.faces import store
from photoembed.logging import get_logger
from photoembed.storage import PhotoStorage

log = get_logger(__name__)
# the deployment's figures, every library's together: for its operator (admin of the default
# library, or a key of API_KEYS)
router = APIRouter(tags=["operations"], dependencies=[Depends(operator)])

READ_TTL_S = 5.0


@dataclass
class _Reading:
    up: dict[str, bool] = field(default_factory=dict)
    counts: dict[str, int] | None = None
    oldest_pending_s: dict[str, float] = field(default_factory=dict)  # by queue
    connections: tuple[int, int] | None = None  # (in use, max_connections)
    dead_letters: dict[str, int] | None = None  # by queue
    outbox: OutboxFigures | None = None
    replica_lag_s: float | None = None


class OperationsCollector(Collector):
    """One reading of Postgres and Redis per READ_TTL_S at most, however often it is scraped; what
    cannot be read is left out of the scrape (and its dependency reads 0), never an error."""

    def __init__(self, settings: Settings, broker: RedisBroker, storage: PhotoStorage) -> None:
        self.settings = settings
        self.broker = broker
        self.storage = storage
        self._lock = threading.Lock()
        self._read_at = -READ_TTL_S
        self._reading = _Reading()

    def _read(self) -> _Reading:
        reading = _Reading()
        for name, probe in probes(self.settings, self.broker, self.storage).items():
            try:
                probe()
                reading.up[name] = True
            except Exception as exc:
                reading.up[name] = False
                log.warning("metrics.dependency_down", dependency=name, error=f"{exc!r}"[:300])
        if reading.up["database"]:
            with session_scope(self.settings.database_url) as session:
                reading.counts = repository.status_counts(session)
                reading.oldest_pending_s = {
                    self.settings.queue_name: repository.oldest_pending_age_seconds(session),
                    self.settings.face_queue_name: store.oldest_faces_pending_age_seconds(session),
                }
                reading.outbox = outbox_figures(session)
            usage = connection_usage(self.settings.database_url)
            reading.connections = (usage.in_use, usage.max_connections)
        if self.settings.search_database_url:
            try:
                reading.replica_lag_s = replica_lag_seconds(self.settings.search_database_url)
                reading.up["replica"] = True
            except Exception as exc:
                reading.up["replica"] = False
                log.warning("metrics.dependency_down", dependency="replica", error=f"{exc!r}"[:300])
        if reading.up["broker"]:
            reading.dead_letters = {
                queue: int(self.broker.client.zcard(f"{self.broker.namespace}:{queue}.XQ"))
                for queue in (self.settings.queue_name, self.settings.face_queue_name)
            }
        return reading

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if time.monotonic() - self._read_at >= READ_TTL_S:
                self._reading = self._read()
                self._read_at = time.monotonic()
            reading = self._reading
        up = GaugeMetricFamily(
            "photoembed_dependency_up",
            "1 when the dependency answers the API (what /readyz decides; the search replica, "
            "when SEARCH_DATABASE_URL is set, is reported here only), else 0.",
            labels=["dependency"],
        )
        for name, answers in reading.up.items():
            up.add_metric([name], 1.0 if answers else 0.0)
        yield up
        if reading.counts is not None:
            photos = GaugeMetricFamily(
                "photoembed_photos", "Photos by status (from Postgres).", labels=["status"]
            )
            for status, count in sorted(reading.counts.items()):
                photos.add_metric([status], count)
            yield photos
            yield _per_queue(
                "photoembed_oldest_pending_age_seconds",
                "Seconds the oldest PENDING work of the queue has waited (photos: since submitted; "
                "faces: since sent), 0 when none waits.",
                reading.oldest_pending_s,
            )
        if reading.connections is not None:
            yield GaugeMetricFamily(
                "photoembed_db_connections",
                "Connections open on the Postgres server (pg_stat_activity).",
                value=reading.connections[0],
            )
            yield GaugeMetricFamily(
                "photoembed_db_max_connections",
                "The Postgres server's max_connections.",
                value=reading.connections[1],
            )
        if reading.outbox is not None:
            yield GaugeMetricFamily(
                "photoembed_events_outbox",
                "Events kept in the outbox (EVENTS_RETENTION_DAYS) for the stream and replays.",
                value=reading.outbox.events,
            )
            yield GaugeMetricFamily(
                "photoembed_events_oldest_undelivered_age_seconds",
                "Age of the oldest event an enabled webhook wants and has not had yet, 0 if none.",
                value=reading.outbox.oldest_undelivered_s,
            )
            webhooks = GaugeMetricFamily(
                "photoembed_webhooks",
                "Webhook endpoints by state: active, failing (every send failed since "
                "failing_since), disabled (410 Gone, or a day of failures: nothing is sent).",
                labels=["state"],
            )
            for state, count in sorted(reading.outbox.webhooks.items()):
                webhooks.add_metric([state], count)
            yield webhooks
        if reading.replica_lag_s is not None:
            yield GaugeMetricFamily(
                "photoembed_replica_lag_seconds",
                "How far SEARCH_DATABASE_URL's replica is behind the primary: 0 when it has "
                "replayed all it received, else the age of the last transaction it replayed.",
                value=reading.replica_lag_s,
            )
        if reading.dead_letters is not None:
            yield _per_queue(
                "photoembed_dead_letters",
                "Messages Dramatiq dead-lettered on the queue (kept 7 days by Dramatiq).",
                reading.dead_letters,
            )


def _per_queue(name: str, documentation: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=["queue"])
    for queue, value in values.items():
        gauge.add_metric([queue], value)
    return gauge


def _process_metrics() -> bytes:
    """This process's metrics, or all API processes' when uvicorn runs several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format: uploads, status transitions, request latency, log events, and
    what the API reads outside itself (`photoembed_photos{status}`,
    `photoembed_oldest_pending_age_seconds{queue}`, `photoembed_dependency_up{dependency}`,
    `photoembed_dead_letters{queue}`, `photoembed_db_connections`,
    `photoembed_replica_lag_seconds`)."""
    state = request.app.state
    if not hasattr(state, "operations"):
        state.operations = CollectorRegistry()
        state.operations.register(OperationsCollector(state.settings, state.broker, state.storage))
    return Response(
        _process_metrics() + generate_latest(state.operations), media_type=CONTENT_TYPE_LATEST
    )

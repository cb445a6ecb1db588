"""Prometheus exposition of the API's metrics (the worker serves its own on METRICS_PORT), with
the backlog read from Postgres: photos by status and the age of the oldest PENDING one."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from photoembed import repository
from photoembed.api.deps import require_api_key
from photoembed.db import session_scope
from photoembed.logging import get_logger

log = get_logger(__name__)
router = APIRouter(tags=["operations"], dependencies=[Depends(require_api_key)])

BACKLOG_TTL_S = 5.0


class BacklogCollector(Collector):
    """Two cheap indexed queries, at most one per BACKLOG_TTL_S however often it is scraped."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._lock = threading.Lock()
        self._read_at = 0.0
        self._counts: dict[str, int] = {}
        self._oldest = 0.0

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._read_at < BACKLOG_TTL_S:
                return
            with session_scope(self.database_url) as session:
                self._counts = repository.status_counts(session)
                self._oldest = repository.oldest_pending_age_seconds(session)
            self._read_at = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        try:
            self._refresh()
        except Exception as exc:  # the database is down: /readyz says so; the rest still scrapes
            log.warning("metrics.backlog_unavailable", error=f"{type(exc).__name__}: {exc}")
            return
        photos = GaugeMetricFamily(
            "photoembed_photos", "Photos by status (from Postgres).", labels=["status"]
        )
        for status, count in sorted(self._counts.items()):
            photos.add_metric([status], count)
        yield photos
        yield GaugeMetricFamily(
            "photoembed_oldest_pending_age_seconds",
            "Seconds since the oldest PENDING photo was submitted (0 when none waits).",
            value=self._oldest,
        )


def _process_metrics() -> bytes:
    """This process's metrics, or all API processes' when uvicorn runs several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format: uploads, status transitions, request latency, and the backlog
    (`photoembed_photos{status}`, `photoembed_oldest_pending_age_seconds`)."""
    state = request.app.state
    if not hasattr(state, "backlog"):
        state.backlog = CollectorRegistry()
        state.backlog.register(BacklogCollector(state.settings.database_url))
    return Response(
        _process_metrics() + generate_latest(state.backlog), media_type=CONTENT_TYPE_LATEST
    )

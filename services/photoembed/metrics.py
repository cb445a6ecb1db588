"""Prometheus metrics of the API and the worker (names documented in docs/operations.md).

The API serves its own on `/metrics`. Worker processes write theirs in Prometheus multiprocess
mode (`photoembed worker` sets PROMETHEUS_MULTIPROC_DIR before any process imports this module),
and Dramatiq's Prometheus middleware serves them, with its own, on METRICS_PORT.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

# API
UPLOADS = Counter(
    "photoembed_uploads_total", "Upload requests by outcome (accepted or the refusal).", ["outcome"]
)
REQUEST_SECONDS = Histogram(
    "photoembed_http_request_duration_seconds",
    "HTTP request latency.",
    ["method", "route", "status"],
)

# Every process: log records at WARNING or above (logging.LogEventCounter counts them).
LOG_EVENTS = Counter(
    "photoembed_log_events_total",
    "Log records at WARNING or above, Python warnings included, by level and logger.",
    ["level", "logger"],
)

# Both: every status a photo moves to.
STATUS_TRANSITIONS = Counter(
    "photoembed_photo_status_transitions_total", "Photos moved to a status.", ["status"]
)

# Worker
EXACT_RECHECKS = Counter(
    "photoembed_search_exact_rechecks_total",
    "Searches redone because the HNSW result was visibly wrong: kind=wider (four times the "
    "candidates), kind=photos (an exact scan, when the wider scan was still wrong).",
    ["kind"],
)
PHOTOS_EMBEDDED = Counter("photoembed_photos_embedded_total", "Photos embedded and stored.")
PHOTO_FAILURES = Counter(
    "photoembed_photo_failures_total", "Photos that ended FAILED, by reason.", ["reason"]
)
BATCH_SIZE = Histogram(
    "photoembed_inference_batch_size",
    "Images per forward pass.",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
INFERENCE_SECONDS = Histogram(
    "photoembed_inference_seconds",
    "Seconds per forward pass (one batch).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8),
)
DECODE_SECONDS = Histogram(
    "photoembed_decode_seconds",
    "Seconds to read, decode and score one photo.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2),
)
QUEUE_LAG_SECONDS = Histogram(
    "photoembed_queue_lag_seconds",
    "Seconds from enqueue to the start of processing.",
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 1800),
)
MODEL_LOAD_SECONDS = Gauge(
    "photoembed_model_load_seconds",
    "Seconds the last model load took.",
    multiprocess_mode="max",
)
WORKER_READY = Gauge(
    "photoembed_worker_ready",
    "1 once a worker process has passed its self-check (what the health check reads).",
    multiprocess_mode="livemax",
)
FACES_FOUND = Counter("photoembed_faces_found_total", "Faces found and stored by the face stage.")
FACE_STAGE_OUTCOMES = Counter(
    "photoembed_face_stage_total",
    "Face stages finished, by outcome (done, or the reason it FAILED).",
    ["outcome"],
)
FACE_STAGE_SECONDS = Histogram(
    "photoembed_face_stage_seconds",
    "Seconds to decode a photo, find its faces and compute their vectors.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8),
)
FACE_STEP_SECONDS = Histogram(
    "photoembed_face_step_seconds",
    "CPU seconds (of the thread doing it) per step of the face stage: decode, scale (to "
    "FACE_DETECT_SIDE) and detect (a photo), align and describe (a face), group (a photo's "
    "faces, stored and placed). CPU, not wall time: the face processes run at idle priority "
    "and wait whenever photos need the cores.",
    ["step"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2),
)


FACE_YIELD_SECONDS = Histogram(
    "photoembed_face_yield_seconds",
    "Seconds a face task waited for the photos' backlog to empty before it ran (CLIP first).",
    buckets=(0.01, 0.5, 1, 5, 15, 60, 120, 300, 600),
)


WEBHOOK_DELIVERIES = Counter(
    "photoembed_webhook_sends_total",
    "Webhook sends by outcome: delivered, retrying (a failed send, tried again later), gone (410: "
    "the endpoint is disabled), gave_up (failed for WEBHOOK_RETRY_HOURS).",
    ["outcome"],
)


@contextmanager
def face_step(step: str) -> Iterator[None]:
    """Observe the calling thread's CPU time for one step of the face stage."""
    started = time.thread_time()
    try:
        yield
    finally:
        FACE_STEP_SECONDS.labels(step).observe(time.thread_time() - started)

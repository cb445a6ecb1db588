"""Prometheus exposition of the API's metrics (the worker serves its own on METRICS_PORT)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from photoembed.api.deps import require_api_key

router = APIRouter(tags=["operations"], dependencies=[Depends(require_api_key)])


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    """Prometheus text format: uploads, status transitions, request latency."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

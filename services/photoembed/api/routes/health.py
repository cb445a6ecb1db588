"""Liveness and readiness: no API key needed."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from photoembed.api.deps import BrokerDep, SettingsDep
from photoembed.db import ping

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(settings: SettingsDep, broker: BrokerDep) -> JSONResponse:
    """The database and the broker answer."""
    checks: dict[str, str] = {}
    try:
        await run_in_threadpool(ping, settings.database_url)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        await run_in_threadpool(broker.client.ping)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unavailable: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

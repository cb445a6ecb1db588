"""Liveness and readiness: no API key needed."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from photoembed.api.deps import BrokerDep, SettingsDep, StorageDep
from photoembed.api.readiness import probes

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


async def _check(probe: Callable[[], object]) -> str:
    try:
        await run_in_threadpool(probe)
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {str(exc)[:200]}"
    return "ok"


@router.get("/readyz")
async def readyz(settings: SettingsDep, broker: BrokerDep, storage: StorageDep) -> JSONResponse:
    """Whether the database, the broker and the photo storage answer; `down` names the ones
    that do not (503 then)."""
    checks = {
        name: await _check(probe) for name, probe in probes(settings, broker, storage).items()
    }
    down = [name for name, state in checks.items() if state != "ok"]
    return JSONResponse(
        {"ready": not down, "down": down, **checks}, status_code=503 if down else 200
    )

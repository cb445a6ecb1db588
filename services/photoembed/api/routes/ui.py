"""The upload and search page: plain HTML, JS and CSS, no build step. It asks for the API key."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from photoembed.api.auth import AnyCaller
from photoembed.api.deps import SessionDep, SettingsDep
from photoembed.images import ACCEPTED_NAMES
from photoembed.repository import backlog

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
router = APIRouter(tags=["ui"])


class LimitsOut(BaseModel):
    max_upload_bytes: int
    max_image_pixels: int
    min_image_side: int
    accepted_formats: str
    backlog: int = Field(description="photos PENDING or PROCESSING now: importers slow down on it")


@router.get("/limits", response_model=LimitsOut)
def limits(settings: SettingsDep, session: SessionDep, caller: AnyCaller) -> LimitsOut:
    """What an upload must fit (clients refuse larger files before sending them), and how many
    photos wait for the workers (of every library: they share the workers)."""
    return LimitsOut(
        max_upload_bytes=settings.max_upload_bytes,
        max_image_pixels=settings.max_image_pixels,
        min_image_side=settings.min_image_side,
        accepted_formats=ACCEPTED_NAMES,
        backlog=backlog(session),
    )


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

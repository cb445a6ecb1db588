"""Every model a worker process holds, checked before it consumes anything: the CLIP embedder
(clip.selfcheck) and, with FACES_ENABLED, the face model (faces.selfcheck)."""

from __future__ import annotations

from photoembed.clip.factory import image_embedder
from photoembed.clip.selfcheck import SelfCheckResult, run_selfcheck
from photoembed.config import Settings
from photoembed.faces.factory import face_model
from photoembed.faces.selfcheck import run_face_selfcheck


def run_boot_checks(settings: Settings, *, record: bool = False) -> list[SelfCheckResult]:
    """`settings` must be resolved (`sizing.resolve`)."""
    results = [run_selfcheck(settings, image_embedder(settings), record=record)]
    if settings.faces_enabled:
        results.append(run_face_selfcheck(settings, face_model(settings), record=record))
    return results

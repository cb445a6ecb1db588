"""Every model a worker process holds, checked before it consumes anything: the CLIP embedder
(clip.selfcheck) in a process that embeds photos, and, with FACES_ENABLED, the face model
(faces.selfcheck) in a process that finds faces (WORKER_ROLE says which; `all` is both)."""

from __future__ import annotations

from photoembed.clip.factory import image_embedder
from photoembed.clip.selfcheck import SelfCheckResult, run_selfcheck
from photoembed.config import Settings
from photoembed.faces.factory import face_model
from photoembed.faces.selfcheck import run_face_selfcheck


def run_boot_checks(settings: Settings, *, record: bool = False) -> list[SelfCheckResult]:
    """`settings` must be resolved (`sizing.resolve`)."""
    results = []
    if settings.worker_role != "faces":
        results.append(run_selfcheck(settings, image_embedder(settings), record=record))
    if settings.faces_enabled and settings.worker_role != "photos":
        results.append(run_face_selfcheck(settings, face_model(settings), record=record))
    return results

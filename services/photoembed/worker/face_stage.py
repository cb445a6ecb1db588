"""What happens to a READY photo's faces: claim them, decode the photo, find the faces, store
them with their persons, mark the stage DONE (or FAILED with a reason).

The stage runs after READY on its own queue, in worker processes of its own at idle CPU priority,
and each task first waits for the photos' backlog to empty (`yield_to_photos`), so faces never
delay a photo's vector; its
failure is the stage's alone: the photo stays READY and shows `faces_status` FAILED and
`faces_error`. Delivery is as safe as the CLIP stage's: a conditional claim under a lease, every
claim an attempt (at most MAX_ATTEMPTS), and the faces stored in one transaction with DONE.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import structlog

from photoembed import events
from photoembed.config import Settings
from photoembed.db import session_scope
from photoembed.faces import store
from photoembed.faces.contract import FaceModel, FoundFace
from photoembed.faces.factory import rules_for
from photoembed.faces.grouping import GroupingRules, group_photo_faces, lock_grouping
from photoembed.images import DecodeLimits, ImageError, load_rgb
from photoembed.logging import get_logger
from photoembed.metrics import (
    FACE_STAGE_OUTCOMES,
    FACE_STAGE_SECONDS,
    FACE_YIELD_SECONDS,
    FACES_FOUND,
    face_step,
)
from photoembed.models import EventType, Face, FacesStatus, Photo
from photoembed.repository import backlog
from photoembed.storage import PhotoStorage
from photoembed.worker.pipeline import (
    TRANSIENT_ERRORS,
    describe,
    last_attempt_error,
    unfinished_attempts_error,
)

log = get_logger(__name__)

YIELD_POLL_SECONDS = 0.5


def grouping_rules(settings: Settings, model: FaceModel) -> GroupingRules:
    return rules_for(settings, model.load().identity)


def _fail(settings: Settings, photo_id: uuid.UUID, error: str, reason: str) -> str:
    with session_scope(settings.database_url) as session:
        if store.fail_faces(session, photo_id, error):
            events.record_for_photos(session, EventType.FACES_FAILED, [photo_id])
            FACE_STAGE_OUTCOMES.labels(reason).inc()
    log.warning("faces.failed", reason=reason, error=error)
    return FacesStatus.FAILED


def _in_photo(faces: list[FoundFace], width: int, height: int) -> list[FoundFace]:
    """Boxes clipped to the photo (a detector may reach past its edge), left to right: the
    order a person reads a photo in, so face_index (and the API's list) follows it whichever
    order the detector found them in."""
    clipped = []
    for face in faces:
        x, y, w, h = face.box
        x0, y0 = max(0.0, x), max(0.0, y)
        x1, y1 = min(float(width), x + w), min(float(height), y + h)
        if x1 > x0 and y1 > y0:
            clipped.append(replace(face, box=(x0, y0, x1 - x0, y1 - y0)))
    return sorted(clipped, key=lambda face: (face.box[0], face.box[1]))


def faces_done(faces: list[Face]) -> dict[str, Any]:
    """What `faces.done` says besides the photo: its faces, left to right, and whose each is."""
    return {
        "faces": [{"face_id": str(f.id), "person_id": str(f.person_id) if f.person_id else None}
                  for f in faces],
        "persons": sorted({str(f.person_id) for f in faces if f.person_id}),
    }  # fmt: skip


def yield_to_photos(settings: Settings, sleep: Callable[[float], None] = time.sleep) -> float:
    """CLIP first: wait while photos are PENDING or PROCESSING anywhere (every worker machine
    shares the database), at most FACE_YIELD_SECONDS. Returns the seconds waited. A database that
    cannot be asked ends the wait: the stage's own claim then meets the error and retries."""
    started = time.monotonic()
    deadline = started + settings.face_yield_seconds
    while time.monotonic() < deadline:
        try:
            with session_scope(settings.database_url) as session:
                if backlog(session) == 0:
                    break
        except TRANSIENT_ERRORS:
            break
        sleep(YIELD_POLL_SECONDS)
    waited = time.monotonic() - started
    FACE_YIELD_SECONDS.observe(waited)
    return waited


def process_faces(
    photo_id: uuid.UUID,
    message_id: str,
    settings: Settings,
    model: FaceModel,
    storage: PhotoStorage,
) -> str:
    """Run one photo's face stage; returns its outcome (a FacesStatus or 'skipped')."""
    started = time.perf_counter()
    try:
        with session_scope(settings.database_url) as session:
            claimed = store.claim_faces(session, photo_id, message_id, settings.claim_lease_seconds)
    except TRANSIENT_ERRORS as exc:
        log.warning("faces.retrying", error=describe(exc), attempt=None)
        raise
    if claimed is None:
        log.info("faces.skipped", reason="not PENDING, or claimed by another worker")
        return "skipped"
    structlog.contextvars.bind_contextvars(library_id=str(claimed.library_id))
    if claimed.attempts > settings.max_attempts:
        error = unfinished_attempts_error(claimed.attempts, settings.max_attempts)
        return _fail(settings, photo_id, error, "attempts_exhausted")
    try:
        info = model.load()
        # a reduced JPEG decode is fine here: the faces are found at FACE_DETECT_SIDE anyway
        limits = DecodeLimits(settings.max_image_pixels, 1, settings.face_detect_side)
        with face_step("decode"):
            image, header = load_rgb(storage.read(claimed.storage_key), limits)
        factor = (header.width * header.height / (image.width * image.height)) ** 0.5
        shown = (round(image.width * factor), round(image.height * factor))
        found = _in_photo([face.scaled(factor) for face in model.find_faces(image)], *shown)
        FACE_STAGE_SECONDS.observe(time.perf_counter() - started)
        with (
            face_step("group"),
            session_scope(settings.database_url) as session,
        ):
            # the grouping lock before the photo's row lock, in the order the API's edits take them
            lock_grouping(session, claimed.library_id)
            rows = store.store_faces(session, photo_id, message_id, info, found)
            if rows is not None:
                photo = session.get(Photo, photo_id)
                assert photo is not None
                group_photo_faces(session, photo, rows, grouping_rules(settings, model))
                events.record_for_photos(
                    session, EventType.FACES_DONE, [photo_id], faces_done(rows)
                )
    except ImageError as exc:
        return _fail(settings, photo_id, f"could not decode the photo: {exc}", "bad_input")
    except TRANSIENT_ERRORS as exc:
        error = describe(exc)
        if claimed.attempts >= settings.max_attempts:
            error = last_attempt_error(claimed.attempts, error)
            with contextlib.suppress(*TRANSIENT_ERRORS):
                _fail(settings, photo_id, error, "attempts_exhausted")
            return FacesStatus.FAILED
        log.warning("faces.retrying", error=error, attempt=claimed.attempts)
        with contextlib.suppress(*TRANSIENT_ERRORS), session_scope(settings.database_url) as s:
            store.hand_back_faces(s, photo_id, f"attempt {claimed.attempts} failed: {error}")
        raise
    except Exception as exc:
        log.exception("faces.error")
        return _fail(
            settings, photo_id, f"face detection failed: {type(exc).__name__}: {exc}", "face_error"
        )
    if rows is None:
        log.info("faces.skipped", reason="finished by another worker meanwhile")
        return "skipped"
    FACES_FOUND.inc(len(rows))
    FACE_STAGE_OUTCOMES.labels("done").inc()
    log.info(
        "faces.detected",
        model=info.identity,
        faces=len(rows),
        persons=sorted({str(r.person_id) for r in rows if r.person_id}),
        attempts=claimed.attempts,
        duration_ms=round((time.perf_counter() - started) * 1000),
    )
    return FacesStatus.DONE
